"""Files go through the kernel: uploads, downloads, listings and the path rules."""

from __future__ import annotations

import hashlib
import os
import tracemalloc

import pytest

from codebox import CodeBoxError, CodeBoxSettings, LocalBox


def test_file_operations_survive_a_chdir_in_user_code(box):
    box.upload("anchor.txt", b"here")
    box.run("import os\n_old = os.getcwd()\nos.chdir('/')")
    try:
        assert box.download("anchor.txt").content == b"here"
    finally:
        box.run("os.chdir(_old)")


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


def test_file_operations_do_not_follow_the_boxs_symbolic_links_out(box, tmp_path):
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "secret").write_text("host secret")
    box.upload("kept", b"mine")
    box.run(f"import os\nos.symlink({str(outside)!r}, 'lnk')\n"
            f"os.symlink({str(outside / 'secret')!r}, 'ln_file')")
    try:
        for name in ("lnk/x", "lnk/new/x", "ln_file"):
            with pytest.raises(CodeBoxError, match="symbolic link"):
                box.upload(name, b"written outside")
        for name in ("lnk/secret", "ln_file"):
            with pytest.raises(CodeBoxError, match="symbolic link"):
                box.download(name)
        for call in (lambda: box.remove("lnk/secret"),
                     lambda: box.rename("lnk/secret", "got"),
                     lambda: box.rename("kept", "lnk/planted"),
                     lambda: box.make_dir("lnk/made"),
                     lambda: box.file_info("lnk/secret")):
            with pytest.raises(CodeBoxError, match="symbolic link"):
                call()
        assert box.file_info("ln_file").size != len("host secret")  # the link, not its target
        assert sorted(p.name for p in outside.iterdir()) == ["secret"]
        assert (outside / "secret").read_text() == "host secret"
        assert not {"lnk", "ln_file"} & {f.name for f in box.list_files()}
    finally:
        box.run("os.remove('lnk'); os.remove('ln_file'); os.remove('kept')")


def test_partial_uploads_neither_hide_nor_limit_user_names(box):
    names = ["x.codebox-part", "d/" + "n" * 255]
    for name in names:
        box.upload(name, b"mine")
    listed = {f.name for f in box.list_files()}
    assert set(names) <= listed
    assert all(box.download(n).content == b"mine" for n in names)
