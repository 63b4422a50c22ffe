"""Snapshots of a `LocalBox` on real kernels, plain and sandboxed, sync and async: files,
packages and variables come back in a box started from one; what cannot be pickled is
named, and said once by the restored box; fork, delete, and a process killed while it
writes a snapshot."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from codebox import CodeBoxSettings, LocalBox, Snapshot
from codebox.errors import CodeBoxNotFoundError
from codebox.local._snapshots import SnapshotDir
from tests.flavour import Flavour
from tests.helpers import make_wheel, wait_until

pytestmark = pytest.mark.integration

STATE = """
import numpy as np, socket, threading
arr = np.arange(1_000_000, dtype=np.float64)
x = 41
def f():
    return x + 1
class Point:
    def __init__(self, a):
        self.a = a
    def norm(self):
        return self.a * x
p = Point(2)
a_list = [1, 2]
b_alias = a_list
sock = socket.socket()
lock = threading.Lock()
"""

CHECK = ("x = 100; print(f(), p.norm(), arr.sum() == 499999500000.0, b_alias is a_list, "
         "type(p) is Point)")


@pytest.fixture()
def settings(tmp_path):
    return CodeBoxSettings(snapshot_dir=tmp_path / "snapshots")


def _fill(box, payload: bytes) -> None:
    box.upload("data/nested/blob.bin", payload)
    box.make_dir("empty")
    out = box.run(STATE)
    assert out.error is None, out.error


def _check_restored(box, payload: bytes, snapshot: Snapshot) -> None:
    first = box.run(CHECK)
    assert first.error is None, first.error
    assert first.stdout == "101 200 True True True\n"
    # What was not restored is said once, by the first run.
    assert snapshot.id in first.stderr
    assert "lock" in first.stderr and "sock" in first.stderr
    assert box.run("print(2)").stderr == ""
    assert box.download("data/nested/blob.bin").content == payload
    assert box.exists("empty") and box.file_info("empty").is_dir


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("sandboxed", [False, True], ids=["plain", "sandboxed"])
def test_a_box_started_from_a_snapshot_has_its_files_variables_and_packages(
        kind, sandboxed, settings, tmp_path):
    payload = os.urandom(3 * 1024 * 1024)
    box = Flavour(LocalBox(settings=settings, sandbox=sandboxed), kind)
    try:
        _fill(box, payload)
        if sandboxed:  # its packages are its own: they travel with it
            wheel = make_wheel(tmp_path, "codebox_snap_pkg")
            box.upload(wheel.name, wheel.read_bytes())
            box.install(f"./{wheel.name}")
        snapshot = box.snapshot()
        assert isinstance(snapshot, Snapshot)
        assert snapshot.unpicklable == ["lock", "sock"]
        assert snapshot.size > 8_000_000 + len(payload)
        assert snapshot.created.tzinfo is not None
        # The box itself goes on unchanged.
        assert box.run("print(x)").stdout == "41\n"
    finally:
        box.close()
    for source in (snapshot, snapshot.id):
        restored = Flavour(LocalBox(settings=settings, sandbox=sandboxed, snapshot=source),
                           kind)
        try:
            _check_restored(restored, payload, snapshot)
            if sandboxed:
                out = restored.run("import codebox_snap_pkg; print(codebox_snap_pkg.ANSWER)")
                assert out.stdout == "42\n", out
        finally:
            restored.close()


def test_what_a_restored_box_has_not_yet_said_it_lost_travels_on_in_its_snapshots(settings):
    """Restored, then snapshotted again before any run: the next box restored says what the
    first restore lost (the variable is gone from both)."""
    with LocalBox(settings=settings) as box:
        box.run("import socket\nsock = socket.socket()\nkept = 1")
        first = box.snapshot()
    with LocalBox(settings=settings, snapshot=first) as restored:
        restored.upload("note.txt", b"no run yet")  # (a transfer says nothing)
        second = restored.snapshot()
    assert second.unpicklable == []  # sock was never restored: nothing left to pickle
    with LocalBox(settings=settings, snapshot=second) as again:
        out = again.run("print(kept, 'sock' in globals())")
        assert out.stdout == "1 False\n"
        assert "sock (it could not be pickled)" in out.stderr and second.id in out.stderr
        assert again.run("print(2)").stderr == ""


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_fork_starts_where_its_box_is_and_goes_its_own_way(kind, settings):
    box = Flavour(LocalBox(settings=settings, env={"ORIGIN": "yes"}), kind)
    try:
        box.upload("notes.txt", b"shared past")
        box.run("x = 41")
        child = Flavour(box.fork(), kind)
        try:
            assert child.box.session_id != box.box.session_id
            assert child.box.working_dir != box.box.working_dir
            out = child.run("import os; print(x, os.environ['ORIGIN'])")
            assert out.stdout == "41 yes\n"
            child.run("x = 7")
            child.upload("notes.txt", b"the child's")
            assert box.run("print(x)").stdout == "41\n"
            assert box.download("notes.txt").content == b"shared past"
        finally:
            child.close()
        # The snapshot taken for the fork is gone with it.
        assert not [e for e in os.listdir(settings.snapshot_dir) if not e.startswith(".")]
    finally:
        box.close()


def test_a_deleted_snapshot_is_gone_and_bad_ids_are_refused(settings):
    with LocalBox(settings=settings) as box:
        box.run("y = 1")
        snapshot = box.snapshot()
    LocalBox.delete_snapshot(snapshot.id, settings=settings)
    with pytest.raises(CodeBoxNotFoundError):
        LocalBox(settings=settings, snapshot=snapshot.id)
    with pytest.raises(CodeBoxNotFoundError):
        LocalBox.delete_snapshot(snapshot.id, settings=settings)
    for bad in ("../etc", "x" * 32, "", "/" + "a" * 31):
        with pytest.raises(CodeBoxNotFoundError):
            LocalBox.delete_snapshot(bad, settings=settings)
        with pytest.raises(CodeBoxNotFoundError):
            LocalBox(settings=settings, snapshot=bad)


CRASHING = textwrap.dedent("""
    import sys
    from codebox import CodeBoxSettings, LocalBox
    settings = CodeBoxSettings(snapshot_dir=sys.argv[1])
    box = LocalBox(settings=settings)
    box.run("x = 'before'")
    print(box.snapshot().id, flush=True)
    box.run("import os; x = 'after'; open('big.bin', 'wb').write(os.urandom(400 * 2**20))")
    box.snapshot()
    print("finished", flush=True)
""")


def test_a_process_killed_while_it_writes_a_snapshot_leaves_the_others_intact(tmp_path):
    root = tmp_path / "snapshots"
    proc = subprocess.Popen([sys.executable, "-c", CRASHING, str(root)],
                            stdout=subprocess.PIPE, text=True)
    try:
        before = proc.stdout.readline().strip()
        assert len(before) == 32, before

        def writing():
            temps = [e for e in os.scandir(root) if e.name.startswith(".tmp-")]
            return temps and os.path.getsize(os.path.join(temps[0].path, "files")) > 2**20

        wait_until(writing, timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
    # Under snapshot ids there is only the complete one; the half-written one is a
    # leftover that no id names.
    assert sorted(e.name for e in os.scandir(root) if not e.name.startswith(".")) == [before]
    settings = CodeBoxSettings(snapshot_dir=root)
    with LocalBox(settings=settings, snapshot=before) as box:
        assert box.run("print(x)").stdout == "before\n"
        assert not box.exists("big.bin")
        box.snapshot()  # the next snapshot clears the dead writer's leftover
    assert not [e for e in os.scandir(root) if e.name.startswith(".tmp-")]
    assert len(SnapshotDir(root).open(before).snapshot.id) == 32
