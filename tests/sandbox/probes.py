"""Code the tenant tests run inside boxes: attacks through system calls that Python does not
wrap (the kernel keyrings, io_uring), with ctypes. x86-64 system call numbers: the machine
the tests run on (the filter's other tables are checked in tests/test_seccomp.py)."""

from __future__ import annotations

import ctypes
import platform

SYS_ADD_KEY, SYS_KEYCTL = 248, 250
KEY_SPEC_SESSION, KEY_SPEC_USER, KEY_SPEC_USER_SESSION = -3, -4, -5
KEYCTL_SEARCH, KEYCTL_READ, KEYCTL_UNLINK = 10, 11, 9
assert platform.machine() == "x86_64", "the probes use x86-64 system call numbers"


def add_key(description: str, payload: bytes, ring: int = KEY_SPEC_SESSION) -> int:
    """Add a ``user`` key to ``ring`` of the calling process: its id (or -errno)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    result = libc.syscall(SYS_ADD_KEY, b"user", description.encode(), payload,
                          ctypes.c_size_t(len(payload)), ctypes.c_long(ring))
    return result if result >= 0 else -ctypes.get_errno()


def read_key(description: str) -> bytes | None:
    """The payload of the ``user`` key ``description`` this process can find, if any."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    for ring in (KEY_SPEC_SESSION, KEY_SPEC_USER, KEY_SPEC_USER_SESSION):
        key = libc.syscall(SYS_KEYCTL, ctypes.c_long(KEYCTL_SEARCH), ctypes.c_long(ring),
                           b"user", description.encode(), ctypes.c_long(0))
        if key > 0:
            buf = ctypes.create_string_buffer(4096)
            size = libc.syscall(SYS_KEYCTL, ctypes.c_long(KEYCTL_READ), ctypes.c_long(key),
                                buf, ctypes.c_long(4096))
            return buf.raw[:size] if size >= 0 else None
    return None


def unlink_key(key: int, ring: int = KEY_SPEC_SESSION) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall(SYS_KEYCTL, ctypes.c_long(KEYCTL_UNLINK), ctypes.c_long(key),
                 ctypes.c_long(ring))


# Run in a box: what it can do to the keyrings it inherited.
KEYRING = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
found = []
for ring in (-3, -4, -5):
    key = libc.syscall(250, ctypes.c_long(10), ctypes.c_long(ring), b'user', {name!r},
                       ctypes.c_long(0))
    if key > 0:
        buf = ctypes.create_string_buffer(4096)
        size = libc.syscall(250, ctypes.c_long(11), ctypes.c_long(key), buf,
                            ctypes.c_long(4096))
        found.append(buf.raw[:max(size, 0)])
        removed = libc.syscall(250, ctypes.c_long(9), ctypes.c_long(key), ctypes.c_long(ring))
        found.append('REMOVED' if removed == 0 else 'KEPT')
planted = libc.syscall(248, b'user', {planted!r}, b'x', ctypes.c_size_t(1), ctypes.c_long(-3))
errno = ctypes.get_errno()
print('FOUND', found, 'PLANTED', planted > 0, errno)
"""

# Run in a box: an openat with mode 06755 submitted through an io_uring ring (no openat
# system call of its own for a filter to see), then what the file looks like.
IO_URING_OPENAT = """
import ctypes, mmap, os, stat
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
params = (ctypes.c_uint32 * 30)()
fd = libc.syscall(425, ctypes.c_uint(4), params)
if fd < 0:
    print('SETUP', os.strerror(ctypes.get_errno()))
else:
    sq_entries = params[0]
    sq_head, sq_tail, sq_mask, _, _, _, sq_array = params[10:17]
    cq_head, cq_tail, cq_mask, _, _, cqes = params[20:26]
    sq = mmap.mmap(fd, sq_array + sq_entries * 4, offset=0)
    sqes = mmap.mmap(fd, sq_entries * 64, offset=0x10000000)
    cq = mmap.mmap(fd, cqes + params[1] * 16, offset=0x8000000)
    path = ctypes.create_string_buffer({path!r}.encode())
    sqe = bytearray(64)
    sqe[0] = 18  # IORING_OP_OPENAT
    sqe[4:8] = (-100).to_bytes(4, 'little', signed=True)  # AT_FDCWD
    sqe[16:24] = ctypes.addressof(path).to_bytes(8, 'little')
    sqe[24:28] = (0o6755).to_bytes(4, 'little')  # the mode
    sqe[28:32] = (os.O_CREAT | os.O_WRONLY).to_bytes(4, 'little')
    sqes[0:64] = bytes(sqe)
    tail = int.from_bytes(sq[sq_tail:sq_tail + 4], 'little')
    index = tail & int.from_bytes(sq[sq_mask:sq_mask + 4], 'little')
    sq[sq_array + 4 * index:sq_array + 4 * index + 4] = (0).to_bytes(4, 'little')
    sq[sq_tail:sq_tail + 4] = (tail + 1).to_bytes(4, 'little')
    done = libc.syscall(426, ctypes.c_int(fd), ctypes.c_uint(1), ctypes.c_uint(1),
                        ctypes.c_uint(1), None, ctypes.c_size_t(0))
    head = int.from_bytes(cq[cq_head:cq_head + 4], 'little') & int.from_bytes(
        cq[cq_mask:cq_mask + 4], 'little')
    res = int.from_bytes(cq[cqes + 16 * head + 8:cqes + 16 * head + 12], 'little', signed=True)
    print('ENTER', done, 'RESULT', os.strerror(-res) if res < 0 else 'opened')
try:
    print('MODE', oct(stat.S_IMODE(os.stat({path!r}).st_mode)))
except OSError as e:
    print('MODE none', type(e).__name__)
"""
