"""The seccomp filter of a sandbox: a classic-BPF program, as ``bwrap --seccomp FD`` reads it.

Standard library only: the kernel provisioner imports this inside the Kernel Gateway.

It refuses, for every process in the box:
- setuid and setgid file modes (``EPERM``), in every call that sets a mode (chmod and
  friends, open and creat with ``O_CREAT``, mknod): a file the box leaves in its directory
  must never run with another uid than its caller's;
- the calls a mode check cannot see into (``ENOSYS``, so that programs take their fallback):
  ``openat2`` (its mode is behind a pointer; libc falls back to ``openat``) and io_uring
  (``io_uring_setup``/``_enter``/``_register``: an ``openat`` submitted through a ring is
  never a system call of its own);
- the kernel keyrings (``add_key``, ``request_key``, ``keyctl``: ``ENOSYS``): a box inherits
  the session keyring of the process that launched it, and must neither read nor change it;
- every system call of another ABI (``EPERM``): i386 calls on x86-64 (``int 0x80``), x32,
  arm32 on aarch64, whose numbers mean other calls.

Written for x86-64 and aarch64 (little-endian); elsewhere there is no filter (the docs say
so), and `seccomp_filter` returns None.
"""

from __future__ import annotations

import platform
import struct
import sys
from dataclasses import dataclass

_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000
EPERM, ENOSYS = 1, 38
_SETID_BITS = 0o6000

# Classic BPF opcodes: BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_JMP|BPF_JGE|BPF_K,
# BPF_JMP|BPF_JSET|BPF_K, BPF_RET|BPF_K.
LD, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
# Offsets in struct seccomp_data: nr (u32), arch (u32), instruction pointer, args[6] (u64).
NR_AT, ARCH_AT, ARGS_AT = 0, 4, 16


@dataclass(frozen=True)
class Abi:
    """The numbers of one architecture's system calls that the filter looks at."""

    audit_arch: int
    mode_args: dict[int, int]  # call -> which argument is a file mode
    refused: tuple[int, ...]  # calls refused outright (ENOSYS)
    x32_bit: bool = False  # x86-64: numbers with this bit set are the x32 ABI


ABIS = {
    "x86_64": Abi(
        audit_arch=0xC000003E,
        mode_args={90: 1, 91: 1, 268: 2, 452: 2,  # chmod, fchmod, fchmodat, fchmodat2
                   85: 1, 2: 2, 257: 3,  # creat, open, openat
                   133: 1, 259: 2},  # mknod, mknodat
        refused=(437,  # openat2
                 425, 426, 427,  # io_uring_setup, io_uring_enter, io_uring_register
                 248, 249, 250),  # add_key, request_key, keyctl
        x32_bit=True),
    "aarch64": Abi(
        audit_arch=0xC00000B7,
        mode_args={52: 1, 53: 2, 452: 2,  # fchmod, fchmodat, fchmodat2
                   56: 3,  # openat (no open, creat, chmod or mknod on this ABI)
                   33: 2},  # mknodat
        refused=(437, 425, 426, 427, 217, 218, 219)),
}
"""The filter's tables, by ``platform.machine()``."""


def build(abi: Abi) -> list[tuple[int, int, int, int]]:
    """The program for ``abi``: a list of (code, jt, jf, k) instructions.

    Layout: check the ABI, load the call's number, one compare per call of interest (to its
    argument's mode check, or to ENOSYS), ALLOW; then one mode check per argument index
    (load the argument's low 32 bits, EPERM if it has a setid bit, else ALLOW), ENOSYS,
    EPERM. Every jump is forward and short (a classic-BPF offset is 8 bits).
    """
    checks = sorted(set(abi.mode_args.values()))
    dispatch = [*abi.mode_args.items(), *((nr, -1) for nr in abi.refused)]
    head = 3 + (1 if abi.x32_bit else 0)  # ld arch, jeq arch, ld nr, [jge x32]
    allow_at = head + len(dispatch)
    block_at = {arg: allow_at + 1 + 3 * i for i, arg in enumerate(checks)}
    enosys_at = allow_at + 1 + 3 * len(checks)
    eperm_at = enosys_at + 1
    prog = [(LD, 0, 0, ARCH_AT), (JEQ, 0, eperm_at - 2, abi.audit_arch), (LD, 0, 0, NR_AT)]
    if abi.x32_bit:
        prog.append((JGE, eperm_at - 4, 0, 0x40000000))
    for nr, arg in dispatch:
        at = len(prog)
        target = enosys_at if arg == -1 else block_at[arg]
        prog.append((JEQ, target - at - 1, 0, nr))
    prog.append((RET, 0, 0, _ALLOW))
    for arg in checks:  # the low 32 bits of args[arg] (little-endian)
        at = len(prog)
        prog.append((LD, 0, 0, ARGS_AT + 8 * arg))
        prog.append((JSET, eperm_at - at - 2, 0, _SETID_BITS))
        prog.append((RET, 0, 0, _ALLOW))
    prog.append((RET, 0, 0, _ERRNO | ENOSYS))
    prog.append((RET, 0, 0, _ERRNO | EPERM))
    for at, (code, jt, jf, _) in enumerate(prog):
        assert code != JEQ or (max(jt, jf) < 256 and at + 1 + max(jt, jf) < len(prog))
    return prog


def encode(prog: list[tuple[int, int, int, int]]) -> bytes:
    """The program as ``struct sock_filter`` entries (native byte order)."""
    return b"".join(struct.pack("=HBBI", code, jt, jf, k) for code, jt, jf, k in prog)


def seccomp_filter(machine: str | None = None) -> bytes | None:
    """The filter for this machine (or for ``machine``, a ``platform.machine()`` name);
    None where it is not written: another architecture, or a big-endian one."""
    abi = ABIS.get(machine or platform.machine())
    if abi is None or sys.byteorder != "little":
        return None
    return encode(build(abi))
