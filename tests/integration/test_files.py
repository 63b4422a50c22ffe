"""Files go through the kernel: uploads, downloads, listings and the path rules."""

from __future__ import annotations

import hashlib
import os
import tracemalloc

import pytest

from codebox import CodeBoxError, CodeBoxSettings, LocalBox
from codebox.errors import CodeBoxNotFoundError


def test_round_trip_binary_nested_and_listed(box):
    payload = bytes(range(256)) * 1000
    info = box.upload("data/raw/blob.bin", payload)
    assert (info.name, info.size, info.content) == ("data/raw/blob.bin", len(payload), None)
    box.upload("notes.txt", "héllo ✓")
    box.upload("empty", b"")
    got = box.download("data/raw/blob.bin")
    assert got.content == payload and got.size == len(payload) and got.name == "data/raw/blob.bin"
    assert box.download("notes.txt").content == "héllo ✓".encode()
    assert box.download("empty").content == b""
    listed = {f.name: f.size for f in box.list_files()}
    assert listed["data/raw/blob.bin"] == len(payload)
    assert listed["notes.txt"] == len("héllo ✓".encode()) and listed["empty"] == 0
    names = [f.name for f in box.list_files()]
    assert names == sorted(names)
    # The kernel sees the same files, relative to its working directory.
    assert box.run("open('data/raw/blob.bin', 'rb').read() == bytes(range(256)) * 1000").content \
        == "True"


def test_files_written_by_code_can_be_downloaded(box):
    box.run("import os\nos.makedirs('out', exist_ok=True)\nopen('out/r.csv', 'w').write('a,b\\n1,2\\n')")
    assert box.download("out/r.csv").content == b"a,b\n1,2\n"
    assert box.download("./out//r.csv").name == "out/r.csv"  # normalised


def test_file_operations_survive_a_chdir_in_user_code(box):
    box.upload("anchor.txt", b"here")
    box.run("import os\n_old = os.getcwd()\nos.chdir('/')")
    try:
        assert box.download("anchor.txt").content == b"here"
    finally:
        box.run("os.chdir(_old)")


@pytest.mark.parametrize("bad", ["/etc/passwd", "../escape.txt", "a/../../b", "nul\x00.txt", "", "."])
def test_bad_names_raise_before_anything_is_written(box, bad):
    before = box.list_files()
    with pytest.raises(CodeBoxError):
        box.upload(bad, b"x")
    with pytest.raises(CodeBoxError):
        box.download(bad)
    assert box.list_files() == before


def test_missing_file_is_not_found(box):
    with pytest.raises(CodeBoxNotFoundError) as info:
        box.download("no/such/file.txt")
    assert isinstance(info.value, FileNotFoundError)
    assert "no/such/file.txt" in str(info.value)


def test_uploading_over_a_directory_fails_cleanly(box):
    box.upload("adir/inner.txt", b"1")
    with pytest.raises(CodeBoxError):
        box.upload("adir", b"2")
    assert box.download("adir/inner.txt").content == b"1"


def test_upload_rejects_content_of_the_wrong_type(box):
    with pytest.raises(ValueError):
        box.upload("x.bin", 12345)


def test_hundred_megabytes_round_trip_without_extra_copies():
    size = 100 * 1024 * 1024
    payload = os.urandom(size)
    digest = hashlib.sha256(payload).hexdigest()
    with LocalBox() as box:
        tracemalloc.start()
        try:
            box.upload("big.bin", payload)
            _, up_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            got = box.download("big.bin")
            _, down_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert got.size == size and hashlib.sha256(got.content).hexdigest() == digest
        assert box.run("import hashlib\nhashlib.sha256(open('big.bin','rb').read()).hexdigest()"
                       ).content == repr(digest)
    # Upload works chunk by chunk over the caller's bytes; a download builds its result in
    # place: neither holds another copy of the file.
    assert up_peak < 64 * 1024 * 1024, up_peak
    assert down_peak < size + 64 * 1024 * 1024, down_peak


def test_many_small_chunks_in_flight_arrive_in_order():
    payload = os.urandom(300_001)
    with LocalBox(settings=CodeBoxSettings(chunk_size=4096)) as box:
        assert box.upload("chunks.bin", payload).size == len(payload)
        assert box.download("chunks.bin").content == payload
        assert [f.name for f in box.list_files()] == ["chunks.bin"]  # no partial file left


def test_a_failed_upload_leaves_nothing_behind():
    with LocalBox(settings=CodeBoxSettings(chunk_size=4096)) as box:
        box.upload("plain", b"a file, not a directory")
        with pytest.raises(CodeBoxError):
            box.upload("plain/inside.bin", os.urandom(50_000))
        assert [(f.name, f.size) for f in box.list_files()] == [("plain", 23)]
