"""The sandbox's seccomp program, run here by a classic-BPF interpreter of the tests' own on
the system calls it must refuse and those it must let through, for every architecture it is
written for: pure, in memory (the real filter is tried from inside a sandbox in
tests/sandbox/test_tenants.py)."""

from __future__ import annotations

import struct

import pytest

from codebox.local import _seccomp

ALLOW = 0x7FFF0000
EPERM = 0x00050000 | 1
ENOSYS = 0x00050000 | 38
O_CREAT, O_WRONLY = 0o100, 0o1


def run(prog: bytes, nr: int, args=(), arch: int | None = None, abi: str = "x86_64") -> int:
    """What the program returns for the call ``nr(*args)`` (struct seccomp_data)."""
    data = struct.pack("=iIQ6Q", nr, _seccomp.ABIS[abi].audit_arch if arch is None else arch,
                       0, *((a & (2**64 - 1)) for a in [*args, *[0] * (6 - len(args))]))
    insns = [struct.unpack("=HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    acc, pc = 0, 0
    for _ in range(len(insns)):  # every jump is forward: at most one pass
        code, jt, jf, k = insns[pc]
        if code == _seccomp.LD:
            acc = struct.unpack_from("=I", data, k)[0]
            pc += 1
        elif code == _seccomp.RET:
            return k
        else:
            taken = {_seccomp.JEQ: acc == k, _seccomp.JGE: acc >= k,
                     _seccomp.JSET: bool(acc & k)}[code]
            pc += 1 + (jt if taken else jf)
    raise AssertionError("the program ran off its end")


X86 = {"read": 0, "write": 1, "openat": 257, "chmod": 90, "fchmodat": 268, "fchmodat2": 452,
       "open": 2, "creat": 85, "mknodat": 259, "openat2": 437, "io_uring_setup": 425,
       "io_uring_enter": 426, "io_uring_register": 427, "add_key": 248, "request_key": 249,
       "keyctl": 250, "clone": 56}
ARM = {"read": 63, "write": 64, "openat": 56, "fchmodat": 53, "fchmodat2": 452, "fchmod": 52,
       "mknodat": 33, "openat2": 437, "io_uring_setup": 425, "io_uring_enter": 426,
       "io_uring_register": 427, "add_key": 217, "request_key": 218, "keyctl": 219,
       "clone": 220}


@pytest.mark.parametrize("abi,nr", [("x86_64", X86), ("aarch64", ARM)])
def test_the_filter_refuses_setid_modes_keyrings_and_io_uring(abi, nr):
    prog = _seccomp.seccomp_filter(abi)
    assert prog is not None

    def call(name, *args):
        return run(prog, nr[name], args, abi=abi)

    # What every program does passes.
    assert call("read", 0, 0, 10) == ALLOW and call("write", 1, 0, 10) == ALLOW
    assert call("clone", 0) == ALLOW
    assert call("openat", -100, 0, O_CREAT | O_WRONLY, 0o644) == ALLOW
    assert call("fchmodat", -100, 0, 0o755) == ALLOW
    # A setuid or setgid mode, through every call that sets one: EPERM.
    for mode in (0o4755, 0o2755, 0o6755):
        assert call("openat", -100, 0, O_CREAT | O_WRONLY, mode) == EPERM
        assert call("fchmodat", -100, 0, mode) == EPERM
        assert call("fchmodat2", -100, 0, mode, 0) == EPERM
        assert call("mknodat", -100, 0, mode, 0) == EPERM
    if abi == "x86_64":
        assert call("chmod", 0, 0o4755) == EPERM and call("open", 0, O_CREAT, 0o4755) == EPERM
        assert call("creat", 0, 0o2755) == EPERM and call("chmod", 0, 0o755) == ALLOW
    else:
        assert call("fchmod", 3, 0o4755) == EPERM and call("fchmod", 3, 0o644) == ALLOW
    # Calls whose mode it cannot see, and the keyrings: ENOSYS, whatever the arguments.
    for name in ("openat2", "io_uring_setup", "io_uring_enter", "io_uring_register",
                 "add_key", "request_key", "keyctl"):
        assert call(name) == ENOSYS, name
        assert call(name, 1, 2, 3) == ENOSYS, name


def test_other_abis_are_refused():
    prog = _seccomp.seccomp_filter("x86_64")
    assert prog is not None
    assert run(prog, 0, arch=0x40000003) == EPERM  # i386 (int 0x80)
    assert run(prog, 0x40000000 | 257, (-100, 0, O_CREAT, 0o6755)) == EPERM  # x32
    arm = _seccomp.seccomp_filter("aarch64")
    assert arm is not None and run(arm, 63, arch=0x40000028, abi="aarch64") == EPERM  # arm32


def test_no_filter_where_it_is_not_written():
    assert _seccomp.seccomp_filter("riscv64") is None
    assert _seccomp.seccomp_filter("ppc64le") is None
