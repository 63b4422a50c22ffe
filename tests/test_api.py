"""The public surface: exports, twins, settings, schemas, path rules."""

from __future__ import annotations

import inspect
import pickle
import re
from pathlib import Path

import pytest

import codebox
from codebox import (
    BaseBox,
    CodeBox,
    CodeBoxError,
    CodeBoxFile,
    CodeBoxOutput,
    CodeBoxSettings,
    CodeBoxStatus,
    ExecError,
    LocalBox,
    OutputChunk,
)
from codebox._paths import check_file_name
from codebox.errors import CodeBoxNotFoundError, CodeBoxTimeoutError

SYNC_METHODS = ["start", "stop", "status", "run", "stream", "upload", "download",
                "list_files", "install", "restart", "interrupt"]


def test_exports_are_complete_sorted_and_read_as_codebox():
    assert codebox.__all__ == sorted(codebox.__all__)
    for name in codebox.__all__:
        obj = getattr(codebox, name)
        if isinstance(obj, type):
            assert obj.__module__ == "codebox", name
    assert isinstance(codebox.__version__, str)
    from importlib.metadata import version
    assert codebox.__version__ == version("codebox")
    assert (Path(codebox.__file__).parent / "py.typed").exists()


@pytest.mark.parametrize("cls", [BaseBox, LocalBox, CodeBox])
@pytest.mark.parametrize("name", SYNC_METHODS)
def test_every_sync_method_has_an_async_twin_with_the_same_parameters(cls, name):
    sync, twin = getattr(cls, name), getattr(cls, "a" + name)
    assert inspect.signature(sync).parameters == inspect.signature(twin).parameters
    if name == "stream":  # a stream object: an (async) iterator and context manager
        ret = inspect.signature(twin).return_annotation
        assert ret == "AsyncRunStream", ret
        assert inspect.signature(sync).return_annotation == "RunStream"
    else:
        assert inspect.iscoroutinefunction(twin)
    assert not inspect.iscoroutinefunction(sync)


@pytest.mark.parametrize("cls", [LocalBox, CodeBox])
@pytest.mark.parametrize("name", ["set_lifetime", "list"])
def test_the_lifecycle_methods_have_async_twins(cls, name):
    sync, twin = getattr(cls, name), getattr(cls, "a" + name)
    assert inspect.signature(sync).parameters == inspect.signature(twin).parameters
    assert inspect.iscoroutinefunction(twin) and not inspect.iscoroutinefunction(sync)


@pytest.mark.parametrize("cls", [BaseBox, LocalBox, CodeBox])
def test_every_box_closes(cls):
    assert not inspect.iscoroutinefunction(cls.close)
    assert inspect.iscoroutinefunction(cls.aclose)


def test_settings_read_env_and_dotenv(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("CODEBOX_KERNEL_NAME=from-dotenv\nCODEBOX_TIMEOUT=7\n")
    monkeypatch.setenv("CODEBOX_TIMEOUT", "12.5")
    monkeypatch.setenv("CODEBOX_GATEWAY_URL", "http://127.0.0.1:9")
    s = CodeBoxSettings()
    assert s.kernel_name == "from-dotenv"  # .env
    assert s.timeout == 12.5  # the environment wins over .env
    assert s.gateway_url == "http://127.0.0.1:9"
    assert CodeBoxSettings(timeout=3).timeout == 3  # arguments win over both
    with pytest.raises(ValueError):
        CodeBoxSettings(chunk_size=64 * 1024 * 1024)  # over what the gateway accepts


def test_box_options_override_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("CODEBOX_KERNEL_NAME", "env-kernel")
    box = LocalBox(kernel_name="python3", working_dir=tmp_path,
                   settings=CodeBoxSettings(run_timeout=4))
    assert box._kernel_name == "python3"
    assert box.settings.run_timeout == 4
    assert LocalBox()._kernel_name == "env-kernel"
    assert box.status() == "stopped"  # constructing starts nothing


def test_codebox_without_a_key_is_a_localbox(monkeypatch):
    monkeypatch.delenv("CODEBOX_API_KEY", raising=False)
    assert isinstance(CodeBox(), LocalBox)
    assert isinstance(CodeBox(api_key="local"), LocalBox)


def test_status_compares_as_text():
    s = CodeBoxStatus(status="running")
    assert s == "running" and str(s) == "running" and s != "stopped"
    assert s == CodeBoxStatus(status="running")


def test_output_summary_rules():
    text = CodeBoxOutput.from_chunks([OutputChunk(type="stdout", content="a\n"),
                                      OutputChunk(type="text", content="2")])
    assert (text.type, text.content, text.stdout) == ("text", "a\n2", "a\n")
    assert text == "a\n2" and str(text) == "a\n2"
    img = CodeBoxOutput.from_chunks([OutputChunk(type="stdout", content="x"),
                                     OutputChunk(type="image/png", content="iVBO")])
    assert (img.type, img.content, img.images) == ("image/png", "iVBO", ["iVBO"])
    err = ExecError(name="KeyError", value="'k'", traceback="tb")
    failed = CodeBoxOutput.from_chunks([OutputChunk(type="image/png", content="iVBO")],
                                       error=err)
    assert (failed.type, failed.content) == ("error", "KeyError: 'k'")
    long_image = CodeBoxOutput.from_chunks([OutputChunk(type="image/png", content="i" * 10**5)])
    assert len(repr(long_image)) < 200  # base64 is cut in reprs
    assert len(repr(img)) < 200
    bundle = img._repr_mimebundle_()
    assert bundle["image/png"] == "iVBO"


def test_file_from_path_and_save(tmp_path):
    src = tmp_path / "in.bin"
    src.write_bytes(b"\x00abc")
    f = CodeBoxFile.from_path(src)
    assert (f.name, f.size, f.content, str(f)) == ("in.bin", 4, b"\x00abc", "in.bin")
    f.save(tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == b"\x00abc"
    with pytest.raises(ValueError):
        CodeBoxFile(name="listed").save(tmp_path / "nothing")


def test_errors_carry_context_and_survive_pickling():
    err = CodeBoxNotFoundError("download 'x': missing", http_status=404,
                               json_body={"detail": "missing"}, headers={"a": "b"})
    assert isinstance(err, CodeBoxError) and isinstance(err, FileNotFoundError)
    assert "HTTP 404" in str(err)
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is CodeBoxNotFoundError
    assert (again.http_status, again.json_body, again.headers) == (404, {"detail": "missing"},
                                                                   {"a": "b"})
    assert isinstance(CodeBoxTimeoutError("slow"), TimeoutError)


@pytest.mark.parametrize(("name", "normal"), [
    ("a.txt", "a.txt"), ("data/x.csv", "data/x.csv"), ("./a//b.txt", "a/b.txt"),
    ("dir\\f.txt", "dir/f.txt"), ("a/./b", "a/b"),
])
def test_good_file_names(name, normal):
    assert check_file_name(name) == normal


@pytest.mark.parametrize("name", ["/abs", "../up", "a/../../b", "a/..", "x\x00y", "", "  ",
                                  ".", "C:\\win", "C:/win"])
def test_bad_file_names(name):
    with pytest.raises(CodeBoxError):
        check_file_name(name)


@pytest.mark.parametrize(("name", "char"), [
    ("line\nbreak", "U+000A"), ("bell\x07", "U+0007"), ("del\x7f", "U+007F"),
    ("c1\x85", "U+0085"), ("txt.\u202eexe", "U+202E"), ("iso\u2066late", "U+2066"),
    ("mark\u200f", "U+200F"), ("lone\ud800", "U+D800"),
])
def test_file_names_with_control_or_bidi_characters_are_refused_by_code_point(name, char):
    with pytest.raises(CodeBoxError, match=re.escape(char)):
        check_file_name(name)


def test_a_component_of_255_bytes_is_accepted_and_one_more_is_refused_clearly():
    assert check_file_name("d/" + "a" * 255) == "d/" + "a" * 255
    with pytest.raises(CodeBoxError, match="256 bytes"):
        check_file_name("a" * 255 + "b")
    with pytest.raises(CodeBoxError, match="256 bytes"):
        check_file_name("é" * 128)  # 128 characters, 256 bytes


def test_no_legal_file_name_is_a_partial_upload():
    from codebox.local._dialect import PARTIAL_PREFIX, partial_name

    with pytest.raises(CodeBoxError):
        check_file_name(PARTIAL_PREFIX + "x")
    assert partial_name("a" * 255).startswith(PARTIAL_PREFIX)
    assert len(partial_name("a" * 255).encode()) == len(partial_name("b").encode()) < 255
