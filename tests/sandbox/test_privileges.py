"""A sandbox gives its code no privilege on the host, whatever uid runs the gateway (root
included): it cannot make user namespaces of its own (the way to capabilities, mounts and
its own cgroups), nor write the host's kernel settings. Each attack is harmless if it
succeeds: it writes back the value already there."""

from __future__ import annotations

from tests.helpers import alive
from tests.sandbox.conftest import probe

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
