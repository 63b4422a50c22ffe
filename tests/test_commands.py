"""Shell commands without a kernel: argument checks, decoding and collecting output, the
shell operation against a scripted kernel, and the client's reading of ``shell/stream``."""

from __future__ import annotations

import asyncio
import json

import pytest

from codebox import CodeBoxError, CommandResult, OutputChunk
from codebox._commands import (
    CommandOutput,
    CommandStream,
    check_command,
    check_cwd,
    check_env,
    check_timeout,
)
from codebox._streams import StreamSlot
from codebox.errors import CodeBoxNotFoundError, CodeBoxServerError, CodeBoxTimeoutError
from codebox.local import _kernel_ops as ops
from codebox.local._snippets import DATA_MSG_TYPE
from codebox.remote._ndjson import CommandLines
from tests.test_kernel_ops import CFG, ScriptedKernel, _part, finished, frame


def test_commands_env_cwd_and_timeouts_are_checked():
    assert check_command("ls -l") == "ls -l"
    assert check_command(("echo", "a b")) == ["echo", "a b"]
    for bad in ["", " ", [], [""], ["a", None], 5, b"ls", "a\x00", ["a", "b\x00"]]:
        with pytest.raises(ValueError):
            check_command(bad)
    assert check_env(None) == {} and check_env({"A": "1"}) == {"A": "1"}
    for bad in [{"": "x"}, {"A=B": "x"}, {"A": 1}, {1: "a"}, {"A": "\x00"}, "A=1"]:
        with pytest.raises(ValueError):
            check_env(bad)
    assert check_cwd(None) is None and check_cwd(".") is None and check_cwd("a//b/") == "a/b"
    for bad in ["/abs", "..", "a/../../b", "x\x00"]:
        with pytest.raises(CodeBoxError, match="invalid cwd"):
            check_cwd(bad)
    assert check_timeout(None) is None and check_timeout(2) == 2.0
    for bad in [0, -1, float("nan"), float("inf"), "1", True]:
        with pytest.raises(ValueError):
            check_timeout(bad)


def test_output_is_decoded_per_stream_and_merged_in_order():
    out = CommandOutput()
    snow = "☃".encode()
    handed = [out.feed("stdout", b"a" + snow[:1]), out.feed("stderr", b"err\n"),
              out.feed("stdout", snow[1:] + b"b"), out.feed("stdout", b"c\xff")]
    # A character split between two reads arrives whole with the second read.
    assert [c.content if c else None for c in handed] == ["a", "err\n", "☃b", "c\ufffd"]
    out.feed("stderr", snow[:2])
    assert [c.content for c in out.flush()] == ["\ufffd"]  # cut off at the very end
    result = out.result(exit_code=1)
    assert [(c.type, c.content) for c in result.chunks] == [
        ("stdout", "a"), ("stderr", "err\n"), ("stdout", "☃bc\ufffd"), ("stderr", "\ufffd")]
    assert (result.stdout, result.stderr, result.exit_code) == ("a☃bc\ufffd", "err\n\ufffd", 1)
    assert not result.truncated and not result.ok


def test_an_output_limit_cuts_and_says_so():
    out = CommandOutput(output_limit=5)
    assert out.feed("stdout", b"abc").content == "abc"
    assert out.feed("stderr", b"defgh").content.startswith("de\n[codebox: output truncated")
    assert out.feed("stdout", b"more") is None
    result = out.result(exit_code=0)
    assert result.truncated and result.stdout == "abc" and "truncated" in result.stderr


class ShellKernel(ScriptedKernel):
    """Answers the shell snippet with ``script(msg_id)`` instead of the setup's data."""

    def __init__(self, script, **kwargs):
        super().__init__(**kwargs)
        self.script = script

    def answer(self, req):
        if isinstance(req, ops.Send) and b"start_new_session" in req.frame:
            msg_id = json.loads(_part(req.frame, 1))["msg_id"]
            self.last_run = msg_id
            self.requests.append(req)
            self.inbox.extend(self.script(msg_id))
            return None
        return super().answer(req)


def data(msg_id, content, buffers=()):
    from codebox.local._jupyter import encode_frame

    header = {"msg_id": "d", "msg_type": DATA_MSG_TYPE}
    return encode_frame("iopub", header, content, parent_header={"msg_id": msg_id},
                        buffers=list(buffers))


def drive_emitting(kernel, op):
    """Drive ``op``, collecting what it emits."""
    emitted, value, error = [], None, None
    while True:
        try:
            req = op.throw(error) if error else op.send(value)
        except StopIteration as stop:
            return emitted, stop.value
        value, error = None, None
        if isinstance(req, ops.Emit):
            emitted.append(req.chunk)
            continue
        try:
            value = kernel.answer(req)
        except BaseException as exc:  # noqa: BLE001
            error = exc


def test_the_shell_op_emits_pieces_as_they_come_and_returns_the_result():
    kernel = ShellKernel(lambda m: [
        data(m, {"stream": "stdout"}, [b"one\n"]), data(m, {"stream": "stderr"}, [b"two\n"]),
        data(m, {"stream": "stdout"}, [b"thr", b"ee\n"]),
        data(m, {"exit_code": 2, "timed_out": False}), *finished(m)])
    emitted, result = drive_emitting(kernel, ops.shell(ops.KernelState(), CFG, ["x"],
                                                       timeout=None, cwd=None, env=None))
    assert [(c.type, c.content) for c in emitted] == [
        ("stdout", "one\n"), ("stderr", "two\n"), ("stdout", "thr"), ("stdout", "ee\n")]
    assert isinstance(result, CommandResult)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "one\nthree\n", "two\n")


def test_a_missing_cwd_is_not_found():
    def script(m):
        err = {"status": "error", "ename": "FileNotFoundError",
               "evalue": "no directory 'd' in the box"}
        return [frame("error", {**err, "traceback": []}, m), *finished(m, **err)]

    with pytest.raises(CodeBoxNotFoundError, match="no directory 'd'"):
        ShellKernel(script).drive(ops.shell(ops.KernelState(), CFG, "ls", timeout=None,
                                            cwd="d", env=None))


def test_a_kernel_that_does_not_end_the_command_is_interrupted_then_restarted():
    kernel = ShellKernel(lambda m: [data(m, {"stream": "stdout"}, [b"x"])])  # never ends
    with pytest.raises(CodeBoxTimeoutError, match="restarted"):
        kernel.drive(ops.shell(ops.KernelState(), CFG, "x", timeout=0.01, cwd=None, env=None))
    assert kernel.paths()[-2:] == ["/api/kernels/k1/interrupt", "/api/kernels/k1/restart"]


@pytest.mark.parametrize("exc", [asyncio.CancelledError(), KeyboardInterrupt()])
def test_a_cancelled_command_interrupts_the_kernel_and_reraises(exc):
    kernel = ShellKernel(lambda m: [])
    with pytest.raises(type(exc)):
        kernel.drive(ops.shell(ops.KernelState(), CFG, "x", timeout=None, cwd=None, env=None),
                     throw_at_recv=exc)
    assert kernel.paths()[-1] == "/api/kernels/k1/interrupt"


def test_the_client_reads_a_command_stream():
    state = CommandLines()
    assert state.feed('{"type": "stdout", "content": "a"}') == OutputChunk(type="stdout",
                                                                          content="a")
    assert state.feed("") is None and not state.done
    end = {"type": "end", "result": {"exit_code": 0, "stdout": "a", "stderr": "",
                                     "chunks": [{"type": "stdout", "content": "a"}],
                                     "timed_out": False}}
    assert state.feed(json.dumps(end)) is None
    assert state.ended and state.command_result().stdout == "a"


def test_a_command_stream_ending_in_an_error_raises_it_with_the_chunks():
    state = CommandLines()
    state.feed('{"type": "stderr", "content": "partial"}')
    with pytest.raises(CodeBoxServerError) as info:
        state.feed('{"type": "end", "error": {"status": 503, "detail": "gateway gone"}}')
    assert info.value.http_status == 503 and "gateway gone" in str(info.value)
    assert [c.content for c in info.value.chunks] == ["partial"]
    cut = CommandLines()
    cut.feed('{"type": "stdout", "content": "a"}')
    with pytest.raises(CodeBoxError, match="ended before"):
        cut.command_result()
    with pytest.raises(CodeBoxError):
        cut.feed("not json")


def test_a_command_stream_gives_its_result_after_the_chunks_and_closes_early():
    result = CommandResult(exit_code=0)
    closed = []

    def steps():
        try:
            yield OutputChunk(type="stdout", content="a")
        finally:
            closed.append(True)
        return result

    with CommandStream(StreamSlot(), steps) as stream:
        assert [c.content for c in stream] == ["a"]
    assert stream.result is result and closed
    early = CommandStream(StreamSlot(), steps)
    next(early)
    early.close()
    assert early.result is None and len(closed) == 2
