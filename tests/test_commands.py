"""Shell commands without a kernel: argument checks, decoding and collecting output, the
shell operation against a scripted kernel, the client's reading of ``shell/stream``, and
the stream a command's chunks are read from."""

from __future__ import annotations

import asyncio
import json

import pytest

from codebox import CodeBoxError, CommandResult, OutputChunk
from codebox import _engine as engine
from codebox._checks import check_command, check_cwd, check_env, check_timeout
from codebox._commands import CommandOutput
from codebox._lease import Lease
from codebox._limits import OUTPUT_LIMIT
from codebox._output_caps import CHUNK_COST
from codebox._streams import CommandStream
from codebox.errors import CodeBoxNotFoundError, CodeBoxServerError, CodeBoxTimeoutError
from codebox.local import _execution as execution
from codebox.local._dialect import DATA_MSG_TYPE
from codebox.local._kernel import KernelState
from codebox.local._requests import Send
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
    # Counted as a run's output is: each piece 128 bytes more, and a notice fits in too.
    notice = "\n[codebox: 298 bytes of stderr dropped: the output limit was reached]\n"
    out = CommandOutput(output_limit=(3 + CHUNK_COST) + (2 + len(notice) + CHUNK_COST))
    assert out.feed("stdout", b"abc").content == "abc"
    cut = out.feed("stderr", b"de" + b"f" * 298).content
    assert cut == "de" + notice
    assert out.feed("stdout", b"more") is None
    assert out.feed("stdout", "☃".encode()) is None
    (last,) = out.flush()  # what was dropped after the limit, said at the end
    assert last.content == "\n[codebox: 7 bytes of stdout dropped: the output limit was reached]\n"
    result = out.result(exit_code=0)
    assert result.truncated and result.stdout == "abc" and result.stderr == cut + last.content


def test_output_is_bounded_by_default():
    out = CommandOutput()
    assert out.feed("stdout", b"x" * 10_000_000).content == "x" * 10_000_000
    big = out.feed("stdout", b"y" * OUTPUT_LIMIT)
    assert big.content.startswith("y") and "bytes of stdout dropped" in big.content
    assert out.result(exit_code=0).truncated


class ShellKernel(ScriptedKernel):
    """Answers the shell snippet with ``script(msg_id)`` instead of the setup's data."""

    def __init__(self, script, **kwargs):
        super().__init__(**kwargs)
        self.script = script

    def answer(self, req):
        if isinstance(req, Send) and b"start_new_session" in req.frame:
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


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_the_shell_op_emits_pieces_as_they_come_and_returns_the_result(flavour):
    kernel = ShellKernel(lambda m: [
        data(m, {"stream": "stdout"}, [b"one\n"]), data(m, {"stream": "stderr"}, [b"two\n"]),
        data(m, {"stream": "stdout"}, [b"thr", b"ee\n"]),
        data(m, {"exit_code": 2, "timed_out": False}), *finished(m)])
    emitted: list[OutputChunk] = []
    result = kernel.drive(execution.shell(KernelState(), CFG, ["x"], timeout=None, cwd=None,
                                          env={}),
                          flavour=flavour, on_output=emitted.append)
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
        ShellKernel(script).drive(execution.shell(KernelState(), CFG, "ls", timeout=None,
                                                  cwd="d", env={}))


def test_a_kernel_that_does_not_end_the_command_is_interrupted_then_restarted():
    kernel = ShellKernel(lambda m: [data(m, {"stream": "stdout"}, [b"x"])])  # never ends
    with pytest.raises(CodeBoxTimeoutError, match="restarted"):
        kernel.drive(execution.shell(KernelState(), CFG, "x", timeout=0.01, cwd=None, env={}))
    assert kernel.paths()[-2:] == ["/api/kernels/k1/interrupt", "/api/kernels/k1/restart"]


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("exc", [asyncio.CancelledError(), KeyboardInterrupt()])
def test_a_cancelled_command_interrupts_the_kernel_and_reraises(exc, flavour):
    kernel = ShellKernel(lambda m: [])
    with pytest.raises(type(exc)):
        kernel.drive(execution.shell(KernelState(), CFG, "x", timeout=None, cwd=None, env={}),
                     throw_at_recv=exc, flavour=flavour)
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


class StreamBox:
    """What a stream needs of its box: the lease, and a transport (answering nothing)."""

    def __init__(self) -> None:
        self._lease = Lease()
        self.transport = engine.ScriptedTransport(lambda req: None)

    def _transport(self):
        return self.transport

    def _used(self):
        pass


def test_a_command_stream_gives_its_result_after_the_chunks_and_closes_early():
    result = CommandResult(exit_code=0)
    closed = []

    def op():
        try:
            yield engine.Emit(OutputChunk(type="stdout", content="a"))
            yield "more?"  # a request: the command is still going
        finally:
            closed.append(True)
        return result

    box = StreamBox()
    with CommandStream(box, op) as stream:
        assert [c.content for c in stream] == ["a"]
    assert stream.result is result and closed and box._lease.holder is None
    early = CommandStream(box, op)
    next(early)
    assert box._lease.holder is not None  # the stream holds the box while it is open
    early.close()
    assert early.result is None and len(closed) == 2
    assert box._lease.holder is None and box.transport.requests == ["more?"]
