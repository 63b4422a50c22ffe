"""A sandbox gives its code no privilege on the host, whatever uid runs the gateway (root
included): it cannot make user namespaces of its own (the way to capabilities, mounts and
its own cgroups), nor write the host's kernel settings. Each attack is harmless if it
succeeds: it writes back the value already there."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from codebox import LocalBox, Sandbox
from tests.helpers import alive
from tests.sandbox.conftest import probe

SYSCTLS = ("/proc/sys/fs/lease-break-time", "/proc/sys/kernel/core_pattern",
           "/proc/sys/vm/overcommit_memory")

WRITE_SYSCTLS = """
import os
import socket
import stat
for path in {paths!r}:
    try:
        value = open(path).read()
        with open(path, 'w') as f:  # the same value: harmless if it goes through
            f.write(value)
        print('WROTE', path)
    except OSError as e:
        print('DENIED', path, type(e).__name__)
writable = [os.path.join(root, name) for top in {tops!r}
            for root, _, files in os.walk(top) for name in files
            if os.access(os.path.join(root, name), os.W_OK)]
print('WRITABLE', len(writable), writable[:5])
"""

NESTED_USERNS = """
import ctypes, os
CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000
pid = os.fork()
if pid == 0:  # unshare(CLONE_NEWUSER) needs a single-threaded process
    libc = ctypes.CDLL(None, use_errno=True)
    os._exit(0 if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) == 0 else 1)
_, status = os.waitpid(pid, 0)
print('NESTED' if os.waitstatus_to_exitcode(status) == 0 else 'REFUSED')
"""


def _healthy(site):
    assert probe(site.attacker, "print(6 * 7)") == "42\n"
    assert probe(site.victim, "print(6 * 7)") == "42\n"
    assert alive(site.gateway_pid)
    if site.server_pid is not None:
        assert alive(site.server_pid)


def test_a_nested_user_namespace_is_refused(site):
    assert probe(site.attacker, NESTED_USERNS) == "REFUSED\n"
    _healthy(site)


def test_the_host_kernel_settings_are_read_only(site):
    before = {p: Path(p).read_text() for p in SYSCTLS if os.path.exists(p)}
    out = probe(site.attacker, WRITE_SYSCTLS.format(
        paths=list(before), tops=["/proc/sys", "/proc/pressure", "/proc/sysrq-trigger"]))
    assert "WROTE" not in out and "WRITABLE 0 " in out, out
    assert {p: Path(p).read_text() for p in before} == before
    _healthy(site)


PLANT = """
import glob, json, os, sys
connection = json.load(open(next(a for a in sys.argv if a.endswith('.json'))))
for path in glob.glob(connection['ip'] + '-*'):
    os.rename(path, path + '.old')
    os.symlink({target!r}, path)
print('planted', len(glob.glob(connection['ip'] + '-*')) // 2)
"""


def test_symlinks_in_the_ipc_dir_lead_the_gateway_nowhere(tmp_path):
    # The gateway, on the host, connects to the kernel's sockets; a box that replaces them
    # with links to a host socket and dies must not make it connect there when it retries.
    target = str(tmp_path / "host-service.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(target)
    listener.listen(64)
    listener.setblocking(False)
    with LocalBox(sandbox=True) as box:
        assert probe(box, PLANT.format(target=target)) == "planted 5\n"
        died = box.run("import os; os._exit(1)", timeout=60)
        assert died.error is not None and died.error.name == "KernelDiedError"
        # The restarted kernel works: the gateway reconnected to it, and to nothing else
        # (ZMQ retried every 100 ms through the whole restart).
        assert probe(box, "print(6 * 7)") == "42\n"
    with pytest.raises(BlockingIOError):
        listener.accept()
    listener.close()


def test_the_box_cannot_plant_a_setuid_file_on_the_host(tmp_path):
    # The box's uid may be the host's root: a setuid file it made would be a root shell
    # for whoever reaches the directory on the host.
    with LocalBox(sandbox=Sandbox(), working_dir=tmp_path) as box:
        out = probe(box, """
import os, shutil
shutil.copy('/bin/sh', 'suid-sh')
for mode in (0o4755, 0o2755, 0o6755):
    try:
        os.chmod('suid-sh', mode)
    except OSError as e:
        print('DENIED', type(e).__name__)
try:
    os.close(os.open('made-suid', os.O_CREAT | os.O_WRONLY, 0o4755))
except OSError as e:
    print('DENIED', type(e).__name__)
""")
        assert out == "DENIED PermissionError\n" * 4, out
        for name in ("suid-sh", "made-suid"):
            if (tmp_path / name).exists():
                assert not os.stat(tmp_path / name).st_mode & (stat.S_ISUID | stat.S_ISGID)
        assert probe(box, "print(6 * 7)") == "42\n"


def test_the_boxes_directories_are_their_owners_alone(site):
    # No other local user reaches what a box left in its directory (its uid may be root).
    boxes = Path(site.runtime_dir) / "codebox-boxes"
    dirs = []
    if site.server_pid is not None:
        environ = Path(f"/proc/{site.server_pid}/environ").read_bytes().split(b"\0")
        data = Path(next(item.split(b"=", 1)[1].decode() for item in environ
                         if item.startswith(b"CODEBOX_SERVER_DATA_DIR=")))
        dirs += [data, data / "sessions", *(data / "sessions").iterdir()]
        boxes = data / "boxes"  # the server keeps its kernels' own directories there
    dirs += [boxes, *boxes.iterdir()]
    assert len(dirs) >= 3
    for path in dirs:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
