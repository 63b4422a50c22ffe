"""Limits fail inside the code, and the box works afterwards; install needs no network and
lands in the box; no sandbox where the machine cannot make one; no orphans."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from codebox import CodeBoxError, LocalBox, Sandbox, SandboxUnavailableError
from codebox.local import _sandbox
from codebox.local._gateway import shared_gateway
from tests.helpers import alive, kernel_host_pid, make_wheel, wait_until
from tests.sandbox.conftest import probe

MIB = 1024 * 1024


def _usable(box):
    assert probe(box, "print('still here')") == "still here\n"


def test_memory_past_the_limit_is_a_memory_error(small_box):
    out = small_box.run("hog = bytearray(700 * 1024 * 1024)", timeout=60)
    assert out.error is not None and out.error.name == "MemoryError", out.error
    _usable(small_box)


def test_processes_past_the_limit_cannot_start(small_box):
    out = probe(small_box, """
import os, threading
gate = threading.Event()
threads, error = [], None
try:
    for _ in range(100):  # bounded: the limit is 40
        t = threading.Thread(target=gate.wait)
        t.start()
        threads.append(t)
except RuntimeError as e:
    error = e
gate.set()
for t in threads:
    t.join()
children, fork_error = [], None
try:
    for _ in range(100):
        pid = os.fork()
        if pid == 0:
            os.read(os.open('/dev/zero', os.O_RDONLY), 1) and os._exit(0)
        children.append(pid)
except OSError as e:
    fork_error = e
for pid in children:
    os.waitpid(pid, 0)
print(len(threads) < 40, error, len(children) < 40, type(fork_error).__name__)
""")
    assert out.startswith("True can't start new thread True BlockingIOError"), out
    _usable(small_box)


LIFT = """
import ctypes, os
CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWCGROUP = 0x10000000, 0x00020000, 0x02000000
r, w = os.pipe()
pid = os.fork()
if pid == 0:  # in a nested user namespace: mount the box's own cgroup, raise its limit
    os.close(r)
    report = []
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWCGROUP) != 0:
        report.append('NO-NAMESPACE')
    else:
        for controller, files in {files!r}.items():
            target = '/tmp/cg-' + controller
            os.makedirs(target, exist_ok=True)
            if libc.mount(b'none', target.encode(), b'cgroup', 0, controller.encode()) != 0:
                report.append('NO-MOUNT ' + controller)
                continue
            for name, value in files:
                try:
                    with open(os.path.join(target, name), 'w') as f:
                        f.write(value)
                    if open(os.path.join(target, name)).read().strip() == value:
                        report.append('LIFTED ' + name)
                except OSError as e:
                    report.append('DENIED ' + name + ' ' + type(e).__name__)
    os.write(w, repr(report).encode())
    os._exit(0)
os.close(w)
report = os.read(r, 65536).decode()
os.waitpid(pid, 0)
print(report)
"""


def test_the_limits_cannot_be_lifted_from_inside(small_box):
    big = str(4 * 1024**3)
    out = probe(small_box, LIFT.format(files={
        "pids": [("pids.max", "max")],
        "memory": [("memory.memsw.limit_in_bytes", big), ("memory.limit_in_bytes", big)]}))
    assert "LIFTED" not in out, out
    test_processes_past_the_limit_cannot_start(small_box)


FILL = """
import os, errno
MIB = 1024 * 1024
for directory in {dirs!r}:
    written, outcome = 0, 'FULL-WRITTEN'
    try:
        for i in range(3):  # 3 files of 6 MiB: each under the limit of 16 MiB, not together
            with open(os.path.join(directory, f'fill-{{i}}'), 'wb') as f:
                for _ in range(6):
                    f.write(b'x' * MIB)
                    written += 1
    except OSError as e:
        outcome = errno.errorcode.get(e.errno, str(e.errno))
    finally:
        for i in range(3):
            try:
                os.remove(os.path.join(directory, f'fill-{{i}}'))
            except OSError:
                pass
    print(directory, written, outcome)
"""


def test_no_filesystem_but_the_working_dir_holds_more_than_disk_mb(small_box):
    # tmpfs is RAM: one unsized (bwrap's root and /dev are half the RAM) would let a box
    # without a memory cgroup fill the host's memory.
    out = probe(small_box, FILL.format(dirs=["/", "/var/tmp", "/dev", "/dev/shm", "/tmp",
                                             "/root", "/etc"]))
    for line in out.splitlines():
        _directory, written, outcome = line.split()
        assert outcome != "FULL-WRITTEN" and int(written) <= 16, out
    _usable(small_box)

def test_disk_past_the_limit_fails_writes_and_uploads(small_box):
    out = small_box.run("open('big.bin', 'wb').write(b'x' * 17 * 1024 * 1024)", timeout=60)
    assert out.error is not None and out.error.name == "OSError", out.error
    out = small_box.run("open('/tmp/big.bin', 'wb').write(b'x' * 17 * 1024 * 1024)")
    assert out.error is not None and out.error.name == "OSError", out.error
    with pytest.raises(CodeBoxError):
        small_box.upload("upload.bin", b"u" * 17 * MIB)
    small_box.run("import os; os.remove('big.bin'); os.remove('/tmp/big.bin')")
    assert "upload.bin" not in [f.name for f in small_box.list_files()]
    small_box.upload("fits.bin", b"f" * MIB)
    _usable(small_box)


def test_install_needs_no_network_and_fails_inside_the_limits(small_box, tmp_path):
    wheel = make_wheel(tmp_path, "codebox_small_pkg")
    small_box.upload(wheel.name, wheel.read_bytes())
    assert str(small_box.install(f"./{wheel.name}")).endswith("installed")
    assert probe(small_box, "import codebox_small_pkg as m; print(m.ANSWER)") == "42\n"
    with pytest.raises(CodeBoxError, match=r"pip could not install \./missing\.whl"):
        small_box.install("./missing.whl")
    _usable(small_box)


def test_install_with_the_network_lands_in_the_box(tmp_path):
    wheel = make_wheel(tmp_path, "codebox_sandboxed_pkg")
    with LocalBox(sandbox=Sandbox(network=True)) as box:
        box.upload(wheel.name, wheel.read_bytes())
        assert str(box.install(f"./{wheel.name}")).endswith("installed")
        where = probe(box, "import codebox_sandboxed_pkg as m\nprint(m.ANSWER, m.__file__)")
        home = probe(box, "import os; print(os.environ['HOME'])").strip()
    assert where.startswith("42 " + home)
    assert not any(Path(p, "codebox_sandboxed_pkg.py").exists() for p in sys.path if p)


def test_a_sandbox_with_a_working_dir_of_the_callers_shares_its_files(tmp_path):
    (tmp_path / "given.txt").write_text("from the caller")
    with LocalBox(working_dir=tmp_path, sandbox=True) as box:
        assert probe(box, "print(open('given.txt').read())") == "from the caller\n"
        box.upload("made.txt", b"by the box")
        box.restart()
        assert probe(box, "print(open('made.txt').read())") == "by the box\n"
    assert (tmp_path / "made.txt").read_bytes() == b"by the box"


def test_no_bubblewrap_is_an_error_naming_the_cause(monkeypatch):
    monkeypatch.setenv("CODEBOX_BWRAP", "/bin/false")  # a bwrap that always fails
    with pytest.raises(SandboxUnavailableError, match="bubblewrap failed"):
        LocalBox(sandbox=True).start()
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(_sandbox.Unavailable, match="need Linux"):
        _sandbox.find_bwrap()


def test_the_sandbox_dies_with_its_gateway():
    box = LocalBox(sandbox=True)
    try:
        box.start()
        kernel = kernel_host_pid(lambda code: box.run(code).content)
        gateway = shared_gateway.pid
        assert gateway is not None and alive(kernel)
        os.kill(gateway, signal.SIGKILL)
        wait_until(lambda: not alive(kernel), timeout=15)
    finally:
        box.stop()

