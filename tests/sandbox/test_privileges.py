"""A sandbox gives its code no privilege on the host, whatever uid runs the gateway (root
included): it cannot make user namespaces of its own (the way to capabilities, mounts and
its own cgroups), nor write the host's kernel settings. Each attack is harmless if it
succeeds: it writes back the value already there."""

from __future__ import annotations

import os
from pathlib import Path

from tests.helpers import alive
from tests.sandbox.conftest import probe

SYSCTLS = ("/proc/sys/fs/lease-break-time", "/proc/sys/kernel/core_pattern",
           "/proc/sys/vm/overcommit_memory")

WRITE_SYSCTLS = """
import os
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
