"""File operations: remove, rename, make_dir, exists, file_info, and the path rules for
each of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from codebox import CodeBoxError, CodeBoxFile
from codebox.errors import CodeBoxNotFoundError

pytestmark = pytest.mark.integration

BAD_PATHS = ["/etc/passwd", "../escape", "a/../../b", "nul\x00.txt", "", "."]


def test_make_dir_info_and_exists(box):
    made = box.make_dir("ops/deep/er")
    assert isinstance(made, CodeBoxFile) and (made.name, made.is_dir) == ("ops/deep/er", True)
    assert box.make_dir("ops/deep/er").is_dir  # an existing directory is fine
    assert box.exists("ops") and box.exists("ops/deep/er") and not box.exists("ops/nope")
    box.upload("ops/file.txt", b"12345")
    info = box.file_info("ops/file.txt")
    assert (info.name, info.size, info.is_dir, info.content) == ("ops/file.txt", 5, False, None)
    now = datetime.now(UTC)
    assert info.modified is not None and info.modified.tzinfo is not None
    assert abs(info.modified - now) < timedelta(minutes=5)
    folder = box.file_info("ops/deep")
    assert folder.is_dir and folder.size is None
    with pytest.raises(CodeBoxError):
        box.make_dir("ops/file.txt")  # a file is in the way


def test_rename_moves_files_and_directories(box):
    box.upload("mv/a.txt", b"a")
    moved = box.rename("mv/a.txt", "mv/new/parents/b.txt")
    assert (moved.name, moved.size, moved.is_dir) == ("mv/new/parents/b.txt", 1, False)
    assert not box.exists("mv/a.txt")
    assert box.download("mv/new/parents/b.txt").content == b"a"
    box.upload("mv/c.txt", b"c")
    box.rename("mv/c.txt", "mv/new/parents/b.txt")  # a file in the way is replaced
    assert box.download("mv/new/parents/b.txt").content == b"c"
    folder = box.rename("mv/new", "moved")
    assert folder.is_dir and box.exists("moved/parents/b.txt") and not box.exists("mv/new")


def test_remove_takes_files_and_whole_directories(box):
    box.upload("rm/one.txt", b"1")
    box.upload("rm/sub/two.txt", b"2")
    assert box.remove("rm/one.txt") == "rm/one.txt removed"
    assert not box.exists("rm/one.txt") and box.exists("rm/sub/two.txt")
    box.remove("rm")
    assert not box.exists("rm")
    assert not [f for f in box.list_files() if f.name.startswith("rm/")]


def test_missing_paths_are_not_found(box):
    for name, *args in [("remove", "missing/x"), ("file_info", "missing/x"),
                        ("rename", "missing/x", "y")]:
        with pytest.raises(CodeBoxNotFoundError) as info:
            getattr(box, name)(*args)
        assert isinstance(info.value, FileNotFoundError)
        assert "missing/x" in str(info.value)
    assert box.exists("missing/x") is False
    assert not box.exists("y")


def test_every_operation_keeps_to_the_path_rules(box):
    box.upload("keep/me.txt", b"k")
    before = box.list_files()
    for bad in BAD_PATHS:
        calls = [("remove", bad), ("make_dir", bad), ("exists", bad), ("file_info", bad),
                 ("rename", bad, "keep/x"), ("rename", "keep/me.txt", bad)]
        for name, *args in calls:
            with pytest.raises(CodeBoxError):
                getattr(box, name)(*args)
    assert box.list_files() == before
    assert box.download("keep/me.txt").content == b"k"
