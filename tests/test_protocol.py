"""Unit tests of the REST protocol as the client speaks it (`codebox._protocol`,
`codebox.remote`'s requests, replies, retries, header parsing) and of the argument checks
every box shares (`codebox._checks`).

Pure: no network, no httpx, no event loop.
"""

from __future__ import annotations

import email.utils
import json
import uuid

import pytest

from codebox import _checks as checks
from codebox import _protocol as protocol
from codebox.errors import (
    CodeBoxAuthError,
    CodeBoxConnectionError,
    CodeBoxError,
    CodeBoxNotFoundError,
    CodeBoxRateLimitError,
    CodeBoxServerError,
)
from codebox.remote import _disposition as disposition
from codebox.remote import _ndjson as ndjson
from codebox.remote import _replies as replies
from codebox.remote import _requests as requests
from codebox.remote import _retry as retry
from codebox.schema import CodeBoxFile, CodeBoxOutput, CodeBoxStatus, ExecError, OutputChunk

CORE = replies.Capabilities()
RICH = replies.Capabilities(
    version="1.0",
    extensions=frozenset({protocol.RICH_RUN, protocol.STREAM, protocol.INTERRUPT}),
    core_only=False,
)
EXTENDED_NO_RICH = replies.Capabilities(version="1.0", extensions=frozenset(), core_only=False)


def reply(status: int = 200, body: object = None, headers: dict | None = None, raw=None):
    content = raw if raw is not None else json.dumps(body).encode() if body is not None else b""
    return replies.Reply(status, headers or {}, content)


# -- session ids ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [42, "42", " 42 ", uuid.UUID(int=42), str(uuid.UUID(int=42)), uuid.UUID(int=42).hex],
)
def test_session_id_of_accepts_int_decimal_and_uuid(value):
    assert replies.session_id_of(value) == "42"


@pytest.mark.parametrize("value", ["abc", "", "-1", -1, True, 1.5, None, "4 2", "٤٢"])
def test_session_id_of_rejects_others(value):
    with pytest.raises(ValueError):
        replies.session_id_of(value)


# -- requests -------------------------------------------------------------------------


def test_start_and_status_requests():
    start = requests.start_request()
    assert (start.op, start.method, start.path) == ("start", "GET", "/codebox/start")
    status = requests.status_request("7")
    assert (status.op, status.method, status.path) == ("status", "GET", "/codebox/7/")
    assert status.json is None and status.params is None


def test_capabilities_request_treats_404_as_core_only():
    req = requests.capabilities_request()
    assert (req.method, req.path) == ("GET", "/codebox/capabilities")
    caps = req.interpret(reply(404, {"detail": "Not Found"}))
    assert caps == replies.Capabilities() and caps.core_only
    with pytest.raises(CodeBoxServerError):
        req.interpret(reply(500, {"detail": "boom"}))


def test_run_request_core_sends_only_code_and_waits_past_the_timeout():
    req = requests.run_request("7", "print(1)", 10.0, CORE)
    assert (req.op, req.method, req.path) == ("run", "POST", "/codebox/7/run")
    assert req.json == {"code": "print(1)"}
    assert req.timeout == {"read": 10.0 + requests.RUN_TIMEOUT_MARGIN}


def test_run_request_without_timeout_has_no_read_limit():
    assert requests.run_request("7", "x", None, RICH).timeout == {"read": None}
    assert requests.run_request("7", "x", None, RICH).json == {"code": "x"}


def test_run_request_sends_timeout_where_the_server_has_rich_run():
    req = requests.run_request("7", "x", 2.5, RICH)
    assert req.json == {"code": "x", "timeout": 2.5}


def test_stream_request():
    req = requests.stream_request("7", "x", 3.0, RICH)
    assert (req.op, req.method, req.path) == ("run", "POST", "/codebox/7/run/stream")
    assert req.json == {"code": "x", "timeout": 3.0}
    assert req.timeout == {"read": 3.0 + requests.RUN_TIMEOUT_MARGIN}


def test_upload_request_is_one_multipart_part_named_file():
    req = requests.upload_request("7", "data/x.csv", b"a,b\n", timeout=4.0)
    assert (req.op, req.method, req.path) == ("upload", "POST", "/codebox/7/upload")
    assert req.files == {"file": ("data/x.csv", b"a,b\n", "application/octet-stream")}
    assert req.timeout == {"connect": 4.0, "read": 4.0, "write": 4.0, "pool": 4.0}
    result = req.interpret(reply(200, {"status": "data/x.csv uploaded"}))
    assert result == CodeBoxFile(name="data/x.csv", size=4)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\x00\xff", b"\x00\xff"),
        (bytearray(b"ab"), b"ab"),
        (memoryview(b"cd"), b"cd"),
        ("héllo", "héllo".encode()),
    ],
)
def test_upload_checks_convert_name_and_content(content, expected):
    assert checks.check_file_name("a//b.txt") == "a/b.txt"
    assert bytes(checks.check_content(content)) == expected


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/../../x", "a\x00b", ""])
def test_upload_checks_reject_bad_names(name):
    with pytest.raises(CodeBoxError):
        checks.check_file_name(name)


def test_upload_checks_reject_other_content():
    with pytest.raises(ValueError):
        checks.check_content(12)


def test_download_request_sends_body_and_query():
    req = requests.download_request("7", "data/x.csv")
    assert (req.op, req.method, req.path) == ("download", "GET", "/codebox/7/download")
    assert req.json == {"file_name": "data/x.csv"}
    assert req.params == {"file_name": "data/x.csv"}
    assert req.timeout == {}


@pytest.mark.parametrize(
    ("disposition", "name"),
    [
        ('attachment; filename="report.csv"', "report.csv"),
        (None, "data/x.csv"),
        ("attachment", "data/x.csv"),
        ('attachment; filename="../../etc/passwd"', "data/x.csv"),
        ("attachment; filename*=UTF-8''na%C3%AFve.txt", "naïve.txt"),
    ],
)
def test_download_names_the_file_from_content_disposition(disposition, name):
    req = requests.download_request("7", "data/x.csv")
    headers = {"content-disposition": disposition} if disposition else {}
    result = req.interpret(reply(200, headers=headers, raw=b"\x00\x01"))
    assert result.name == name
    assert (result.size, result.content) == (2, b"\x00\x01")


def test_install_requests_core_one_per_package():
    reqs = requests.install_requests("7", ("numpy", "pandas"), CORE)
    assert [(r.op, r.method, r.path) for r in reqs] == [
        ("install", "POST", "/codebox/7/install")
    ] * 2
    assert [r.json for r in reqs] == [{"package_name": "numpy"}, {"package_name": "pandas"}]


def test_install_request_with_extensions_carries_package_names():
    (req,) = requests.install_requests("7", ("numpy", "pandas"), EXTENDED_NO_RICH, timeout=100.0)
    assert req.json == {"package_name": "numpy pandas", "package_names": ["numpy", "pandas"]}
    assert req.timeout["read"] == 100.0 + requests.RUN_TIMEOUT_MARGIN  # the server's answer too


def test_install_status_is_the_servers_or_names_the_package():
    (req,) = requests.install_requests("7", ("numpy",), CORE)
    assert req.interpret(reply(200, {"status": "numpy installed"})) == "numpy installed"
    assert req.interpret(reply(200, raw=b"ok")) == "numpy installed"
    assert requests.join_statuses([CodeBoxStatus(status="a ok"), CodeBoxStatus(status="b ok")]) == (
        "a ok; b ok"
    )


@pytest.mark.parametrize("names", [(), ("",), ("  ",), (3,), ("--index-url=http://x",)])
def test_check_package_names_rejects(names):
    with pytest.raises(ValueError):
        checks.check_package_names(names)


def test_session_requests_paths():
    cases = [
        (requests.files_request("7"), "files", "GET", "/codebox/7/files"),
        (requests.restart_request("7"), "restart", "POST", "/codebox/7/restart"),
        (requests.stop_request("7"), "stop", "POST", "/codebox/7/stop"),
        (requests.interrupt_request("7"), "interrupt", "POST", "/codebox/7/interrupt"),
    ]
    for req, op, method, path in cases:
        assert (req.op, req.method, req.path) == (op, method, path)
        assert req.json is None and req.files is None


def test_restart_stop_interrupt_results():
    assert requests.restart_request("7").interpret(reply(200, {"status": "ok"})) == "restarted"
    assert requests.stop_request("7").interpret(reply(200, {"status": "stopped"})) == "stopped"
    assert requests.stop_request("7").interpret(reply(404, {"detail": "gone"})) == "stopped"
    assert requests.interrupt_request("7").interpret(reply(200, {"status": "interrupted"})) == (
        "interrupted"
    )


def test_require_names_the_operation():
    replies.require(RICH, protocol.INTERRUPT, "interrupt")
    with pytest.raises(CodeBoxError, match="does not support interrupt"):
        replies.require(CORE, protocol.INTERRUPT, "interrupt")


# -- replies --------------------------------------------------------------------------


def test_start_reply_gives_the_decimal_id():
    assert requests.start_request().interpret(reply(200, {"id": 123})) == "123"


@pytest.mark.parametrize("body", [{}, {"id": None}, {"id": True}, {"id": 1.5}, {"id": "x"}, [1]])
def test_start_reply_without_an_id_is_an_error(body):
    with pytest.raises(CodeBoxError, match="start"):
        requests.start_request().interpret(reply(200, body))


def test_success_that_is_not_json_is_an_error_carrying_the_text():
    with pytest.raises(CodeBoxError) as info:
        requests.status_request("7").interpret(reply(200, raw=b"<html>proxy</html>"))
    assert info.value.json_body == "<html>proxy</html>"
    assert "not JSON" in str(info.value)


def test_status_reply():
    assert requests.status_request("7").interpret(reply(200, {"status": "running"})) == "running"
    with pytest.raises(CodeBoxError):
        requests.status_request("7").interpret(reply(200, {"state": "running"}))


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, CodeBoxError),
        (401, CodeBoxAuthError),
        (403, CodeBoxAuthError),
        (404, CodeBoxNotFoundError),
        (409, CodeBoxError),
        (413, CodeBoxError),
        (422, CodeBoxError),
        (429, CodeBoxRateLimitError),
        (500, CodeBoxServerError),
        (502, CodeBoxServerError),
        (503, CodeBoxServerError),
        (504, CodeBoxServerError),
        (302, CodeBoxError),
    ],
)
def test_error_for_each_status(status, cls):
    err = replies.error_for("run in session 7",
                            reply(status, {"detail": "it broke"}, {"x-id": "1"}))
    assert type(err) is cls
    assert err.http_status == status
    assert err.json_body == {"detail": "it broke"}
    assert err.headers == {"x-id": "1"}
    assert "run in session 7" in str(err) and "it broke" in str(err)
    assert str(status) in str(err)


def test_error_for_a_text_body_keeps_the_text():
    err = replies.error_for("start", reply(502, raw=b"Bad Gateway from nginx"))
    assert err.json_body == "Bad Gateway from nginx"
    assert "Bad Gateway from nginx" in str(err)


def test_error_for_an_empty_body_still_says_something():
    err = replies.error_for("start", reply(500, raw=b""))
    assert err.json_body == ""
    assert "HTTP 500 with no detail" in str(err)


def test_error_for_fastapi_validation_errors():
    body = {"detail": [{"loc": ["body", "code"], "msg": "field required", "type": "missing"}]}
    err = replies.error_for("run", reply(422, body))
    assert "body.code: field required" in str(err)


def test_error_for_a_body_without_detail_and_a_long_detail():
    err = replies.error_for("start", reply(500, {"error": "x"}))
    assert '{"error": "x"}' in str(err)
    long = replies.error_for("start", reply(500, {"detail": "y" * 5000}))
    assert len(str(long)) < 700


def test_error_not_found_is_a_file_not_found_error():
    err = requests.download_request("7", "x").interpret
    with pytest.raises(FileNotFoundError):
        err(reply(404, {"detail": "no such file"}))


def test_decode_body():
    assert replies.decode_body(b'{"a": 1}') == {"a": 1}
    assert replies.decode_body(b"plain") == "plain"
    assert replies.decode_body(b"\xff") == "\ufffd"


def test_parse_capabilities():
    caps = replies.parse_capabilities(reply(200, {"version": "2.1", "extensions": ["stream", 3]}))
    assert caps == replies.Capabilities(version="2.1", extensions=frozenset({"stream"}),
                                        core_only=False)
    assert caps.has("stream") and not caps.has("interrupt")
    assert replies.parse_capabilities(reply(200, raw=b"<html>")).core_only
    assert replies.parse_capabilities(reply(200, {"extensions": "stream"})).core_only


def test_parse_run_core_text():
    out = replies.parse_run({"type": "text", "content": "2\n"}, rich=False)
    assert out.chunks == [OutputChunk(type="text", content="2\n")]
    assert (out.type, out.content, out.error, out.images) == ("text", "2\n", None, [])


def test_parse_run_core_empty_text_has_no_chunk():
    out = replies.parse_run({"type": "text", "content": ""}, rich=False)
    assert (out.type, out.content, out.chunks) == ("text", "", [])


def test_parse_run_core_image():
    out = replies.parse_run({"type": "image/png", "content": "iVBOR"}, rich=False)
    assert out.chunks == [OutputChunk(type="image/png", content="iVBOR")]
    assert (out.type, out.content, out.images) == ("image/png", "iVBOR", ["iVBOR"])


@pytest.mark.parametrize(
    ("content", "name", "value"),
    [
        ("ZeroDivisionError: division by zero", "ZeroDivisionError", "division by zero"),
        ("ValueError: a: b", "ValueError", "a: b"),
        ("KeyboardInterrupt", "KeyboardInterrupt", ""),
        ("KeyError:", "KeyError", ""),
        ("", "Error", ""),
    ],
)
def test_parse_run_core_error(content, name, value):
    out = replies.parse_run({"type": "error", "content": content}, rich=False)
    assert out.error == ExecError(name=name, value=value)
    assert out.type == "error"
    assert out.chunks == [OutputChunk(type="error", content=content)]


def test_parse_run_core_other_type_is_kept():
    out = replies.parse_run({"type": "text/html", "content": "<b>x</b>"}, rich=False)
    assert (out.type, out.content) == ("text/html", "<b>x</b>")
    assert out.chunks == [OutputChunk(type="text/html", content="<b>x</b>")]


def test_parse_run_rich():
    body = {
        "type": "error",
        "content": "NameError: x",
        "chunks": [
            {"type": "stdout", "content": "a\n"},
            {"type": "error", "content": "NameError: x"},
        ],
        "stdout": "a\n",
        "stderr": "",
        "images": [],
        "error": {"name": "NameError", "value": "x", "traceback": "tb"},
        "execution_count": 3,
        "truncated": False,
    }
    out = replies.parse_run(body, rich=True)
    assert out.chunks[0] == OutputChunk(type="stdout", content="a\n")
    assert out.error == ExecError(name="NameError", value="x", traceback="tb")
    assert (out.stdout, out.execution_count, out.type) == ("a\n", 3, "error")


def test_parse_run_rich_announced_but_core_answer_falls_back():
    out = replies.parse_run({"type": "text", "content": "hi"}, rich=True)
    assert out.chunks == [OutputChunk(type="text", content="hi")]


def test_parse_run_rich_is_ignored_when_not_announced():
    body = {"type": "text", "content": "hi", "chunks": [{"type": "stdout", "content": "hi"}]}
    assert replies.parse_run(body, rich=False).chunks == [OutputChunk(type="text", content="hi")]


@pytest.mark.parametrize(
    "body",
    [[], "x", {"type": "text"}, {"content": "x"}, {"type": "text", "chunks": 3, "content": ""}],
)
def test_parse_run_rejects_bad_answers(body):
    with pytest.raises(CodeBoxError):
        replies.parse_run(body, rich=True)


def test_run_request_rejects_a_non_json_answer():
    with pytest.raises(CodeBoxError, match="not JSON"):
        requests.run_request("7", "x", None, CORE).interpret(reply(200, raw=b"oops"))


def test_parse_files_names_and_objects_sorted():
    body = {"files": ["b.txt", {"name": "a.csv", "size": 12}, {"name": "c", "size": True}]}
    assert replies.parse_files(body) == [
        CodeBoxFile(name="a.csv", size=12),
        CodeBoxFile(name="b.txt"),
        CodeBoxFile(name="c"),
    ]


@pytest.mark.parametrize("body", [{}, {"files": "x"}, {"files": [3]}, {"files": [{"size": 1}]}])
def test_parse_files_rejects_bad_answers(body):
    with pytest.raises(CodeBoxError):
        replies.parse_files(body)


# -- streams --------------------------------------------------------------------------


def test_stream_state_reads_chunks_then_the_final_output():
    state = ndjson.StreamState()
    final = {"type": "text", "content": "a\nb\n", "chunks": [{"type": "stdout", "content": "a\n"}]}
    lines = [
        '{"type": "stdout", "content": "a\\n"}',
        "",
        '{"type": "stderr", "content": "b\\n"}',
        json.dumps({"type": "end", "output": final}),
        '{"type": "stdout", "content": "late"}',
    ]
    chunks = [c for c in map(state.feed, lines) if c is not None]
    assert chunks == [
        OutputChunk(type="stdout", content="a\n"),
        OutputChunk(type="stderr", content="b\n"),
    ]
    assert state.done
    assert state.result().content == "a\nb\n"


def test_stream_state_end_without_output_builds_one():
    state = ndjson.StreamState()
    state.feed('{"type": "stdout", "content": "x"}')
    state.feed('{"type": "end"}')
    assert state.result() == CodeBoxOutput.from_chunks([OutputChunk(type="stdout", content="x")])


def test_stream_state_without_end_is_a_connection_error():
    state = ndjson.StreamState("stream in session 7")
    state.feed('{"type": "stdout", "content": "x"}')
    with pytest.raises(CodeBoxConnectionError, match="stream in session 7"):
        state.result()


def test_stream_state_keeps_bundles_and_display_ids():
    state = ndjson.StreamState()
    bundle = {"image/png": "iVBO", "text/plain": "<Figure>"}
    lines = [json.dumps({"type": "image/png", "content": "iVBO", "data": bundle,
                         "display_id": "d1"}),
             json.dumps({"type": "text", "content": "x", "data": "junk", "display_id": 3}),
             json.dumps({"type": "stdout", "content": "y"})]  # a server without `bundles`
    first, junk, plain = map(state.feed, lines)
    assert (first.data, first.display_id) == (bundle, "d1")
    assert (junk.data, junk.display_id) == (None, None)
    assert (plain.data, plain.display_id) == (None, None)


def test_stream_state_end_without_output_folds_the_chunks():
    state = ndjson.StreamState()
    for item in [{"type": "stdout", "content": "0\n"}, {"type": "clear_output", "content": ""},
                 {"type": "stdout", "content": "1\n"}, {"type": "end"}]:
        state.feed(json.dumps(item))
    assert state.result().stdout == "1\n" and len(state.result().chunks) == 1


def test_parse_run_rich_keeps_bundles():
    chunk = {"type": "text", "content": "   a\n0  1", "display_id": "d",
             "data": {"text/plain": "   a\n0  1", "text/html": "<table/>"}}
    body = {"type": "text", "content": chunk["content"], "chunks": [chunk]}
    out = replies.parse_run(body, rich=True)
    assert out.chunks[0].data == chunk["data"] and out.chunks[0].display_id == "d"


@pytest.mark.parametrize("line", ["not json", "[1]", '{"content": "x"}'])
def test_stream_state_rejects_bad_lines(line):
    with pytest.raises(CodeBoxError):
        ndjson.StreamState().feed(line)


# -- Content-Disposition --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ('attachment; filename="a.txt"', "a.txt"),
        ("attachment; filename=a.txt", "a.txt"),
        ('attachment; FILENAME="a.txt"', "a.txt"),
        ('attachment; filename="with space; and semicolon.txt"', "with space; and semicolon.txt"),
        (r'attachment; filename="say \"hi\".txt"', 'say "hi".txt'),
        ("attachment; filename*=UTF-8''%E2%82%AC%20rates.txt", "€ rates.txt"),
        ("attachment; filename*=utf-8'en'caf%C3%A9.txt", "café.txt"),
        ("attachment; filename*=ISO-8859-1''caf%E9.txt", "café.txt"),
        ("attachment; filename=\"fallback.txt\"; filename*=UTF-8''r%C3%A9al.txt", "réal.txt"),
        ("attachment; filename*=UTF-8''r%C3%A9al.txt; filename=\"fallback.txt\"", "réal.txt"),
        ("attachment; filename*=KOI8-R''x; filename=\"fallback.txt\"", "fallback.txt"),
        ("attachment; filename*=UTF-8''%FF%FE; filename=\"fallback.txt\"", "fallback.txt"),
        ('attachment; filename*=nonsense; filename="fallback.txt"', "fallback.txt"),
        ('attachment; size=3; filename="a.txt"', "a.txt"),
        ('attachment; novalue; filename="a.txt"', "a.txt"),
        ('attachment;filename="a.txt";', "a.txt"),
        ("attachment", None),
        ("inline; filename=", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_content_disposition(value, name):
    assert disposition.parse_content_disposition(value) == name


# -- retries --------------------------------------------------------------------------

NOW = 1_700_000_000.0


def test_parse_retry_after():
    assert retry.parse_retry_after("3") == 3.0
    assert retry.parse_retry_after(" 1.5 ") == 1.5
    assert retry.parse_retry_after("-4") == 0.0
    date = email.utils.formatdate(NOW + 7, usegmt=True)
    assert retry.parse_retry_after(date, now=NOW) == pytest.approx(7.0)
    past = email.utils.formatdate(NOW - 100, usegmt=True)
    assert retry.parse_retry_after(past, now=NOW) == 0.0
    assert retry.parse_retry_after("soon") is None
    assert retry.parse_retry_after("nan") is None
    assert retry.parse_retry_after(None) is None


def policy(**kw) -> retry.RetryPolicy:
    return retry.RetryPolicy(**{"max_retries": 3, "rand": lambda: 0.5, "clock": lambda: NOW, **kw})


ALL_OPS = [
    "capabilities",
    "start",
    "status",
    "files",
    "download",
    "run",
    "install",
    "upload",
    "restart",
    "stop",
    "interrupt",
]
STATUS_RETRY_OPS = {"capabilities", "start", "status", "files", "download"}


@pytest.mark.parametrize("op", ALL_OPS)
@pytest.mark.parametrize("status", [200, 400, 404, 429, 500, 502, 503, 504])
def test_retry_table_for_replies(op, status):
    delay = policy().after_reply(op, 0, reply(status, {}))
    retried = op in STATUS_RETRY_OPS and status in (429, 502, 503, 504)
    assert (delay is not None) == retried


@pytest.mark.parametrize("op", ALL_OPS)
def test_unsent_requests_are_retried_for_every_op(op):
    assert policy().after_failure(op, 0, unsent=True) is not None
    assert policy().after_failure(op, 0, unsent=False) is None


def test_retries_are_bounded():
    p = policy(max_retries=2)
    assert [p.after_failure("run", n, True) is not None for n in range(4)] == [
        True,
        True,
        False,
        False,
    ]
    assert [p.after_reply("start", n, reply(503)) is not None for n in range(4)] == [
        True,
        True,
        False,
        False,
    ]
    assert policy(max_retries=0).after_reply("start", 0, reply(503)) is None


def test_backoff_is_exponential_with_jitter_and_capped():
    low = policy(rand=lambda: 0.0, base_delay=0.5, max_delay=8.0)
    high = policy(rand=lambda: 0.999999, base_delay=0.5, max_delay=8.0)
    assert [low.backoff(n) for n in range(6)] == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0]
    assert [round(high.backoff(n), 3) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


def test_retry_after_is_honoured_and_capped():
    p = policy(max_retry_after=60.0)
    assert p.after_reply("start", 0, reply(429, headers={"Retry-After": "12"})) == 12.0
    assert p.after_reply("start", 0, reply(503, headers={"retry-after": "3600"})) == 60.0
    date = email.utils.formatdate(NOW + 5, usegmt=True)
    assert p.after_reply("files", 0, reply(503, headers={"retry-after": date})) == pytest.approx(
        5.0
    )
    assert p.after_reply("files", 1, reply(503, headers={"retry-after": "junk"})) == p.backoff(1)


def test_install_without_a_timeout_waits_for_the_servers_own_limit():
    caps = replies.Capabilities(version="1", extensions=frozenset())
    (req,) = requests.install_requests("7", ("pandas",), caps)
    assert req.timeout["read"] is None  # not the default request timeout
    (given,) = requests.install_requests("7", ("pandas",), caps, timeout=5.0)
    assert given.timeout["read"] == 5.0 + requests.RUN_TIMEOUT_MARGIN
