"""Files: round trips of any content, listings, the path rules, missing files."""

from __future__ import annotations

import pytest

from codebox import CodeBoxError
from codebox.errors import CodeBoxNotFoundError

pytestmark = pytest.mark.integration


def test_round_trip_binary_nested_unicode_and_empty(box):
    payload = bytes(range(256)) * 4000
    info = box.upload("data/raw/blob.bin", payload)
    assert (info.name, info.size, info.content) == ("data/raw/blob.bin", len(payload), None)
    box.upload("notes.txt", "héllo ✓")
    box.upload("empty", b"")
    box.upload("ünï cødé.txt", b"u")
    got = box.download("data/raw/blob.bin")
    assert (got.name, got.size, got.content) == ("data/raw/blob.bin", len(payload), payload)
    assert box.download("notes.txt").content == "héllo ✓".encode()
    assert box.download("empty").content == b""
    assert box.download("ünï cødé.txt").content == b"u"
    listed = box.list_files()
    assert [f.name for f in listed] == sorted(f.name for f in listed)
    sizes = {f.name: f.size for f in listed}
    assert sizes["data/raw/blob.bin"] == len(payload) and sizes["empty"] == 0
    assert sizes["notes.txt"] == len("héllo ✓".encode())
    assert all(f.content is None for f in listed)
    # The kernel sees the same files, relative to its working directory.
    assert box.run("open('data/raw/blob.bin', 'rb').read() == bytes(range(256)) * 4000"
                   ).content == "True"


def test_files_written_by_code_download_under_their_normal_name(box):
    box.run("import os\nos.makedirs('out', exist_ok=True)\n"
            "open('out/r.csv', 'w').write('a,b\\n1,2\\n')")
    got = box.download("./out//r.csv")
    assert (got.name, got.content) == ("out/r.csv", b"a,b\n1,2\n")


def test_bad_names_raise_before_anything_is_written(box):
    before = box.list_files()
    for bad in ["/etc/passwd", "../escape.txt", "a/../../b", "nul\x00.txt", "", "."]:
        with pytest.raises(CodeBoxError):
            box.upload(bad, b"x")
        with pytest.raises(CodeBoxError):
            box.download(bad)
    assert box.list_files() == before


def test_a_missing_file_is_not_found(box):
    with pytest.raises(CodeBoxNotFoundError) as info:
        box.download("no/such/file.txt")
    assert isinstance(info.value, FileNotFoundError)
    assert "no/such/file.txt" in str(info.value)


def test_uploading_over_a_directory_fails_cleanly(box):
    box.upload("adir/inner.txt", b"1")
    with pytest.raises(CodeBoxError):
        box.upload("adir", b"2")
    assert box.download("adir/inner.txt").content == b"1"


def test_content_of_the_wrong_type_is_a_value_error(box):
    with pytest.raises(ValueError):
        box.upload("x.bin", 12345)
