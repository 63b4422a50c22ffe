"""The pure Jupyter core, fed with message sequences recorded from a real kernel
(tests/data/*.json) and variations of them."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from codebox.local._jupyter import (
    Execution,
    Session,
    decode_frame,
    display_chunk,
    encode_frame,
    strip_ansi,
)

DATA = Path(__file__).parent / "data"


def recorded(name: str) -> list[dict]:
    return json.loads((DATA / f"{name}.json").read_text())


def frames(messages: list[dict]) -> list[bytes]:
    """The recorded messages as the v1 frames the gateway sends."""
    return [
        encode_frame(m["channel"], m["header"], m["content"], m.get("metadata"),
                     parent_header=m["parent_header"])
        for m in messages
    ]


def own_id(messages: list[dict]) -> str:
    return next(m["parent_header"]["msg_id"] for m in messages if m["parent_header"])


def play(messages: list[dict], msg_id: str | None = None, **kw) -> tuple[Execution, list]:
    ex = Execution(msg_id or own_id(messages), **kw)
    emitted = []
    for frame in frames(messages):
        assert not ex.done, "finished before the last message"
        chunk = ex.feed(decode_frame(frame))
        if chunk is not None:
            emitted.append(chunk)
    return ex, emitted


def test_simple_result_finishes_on_reply_and_idle():
    ex, emitted = play(recorded("simple"))
    assert ex.done
    out = ex.output()
    assert (out.type, out.content, out.execution_count) == ("text", "2", 1)
    assert [c.type for c in emitted] == ["text"]


def test_reply_after_idle_still_waits_for_the_reply():
    msgs = recorded("simple")
    reply = next(m for m in msgs if m["header"]["msg_type"] == "execute_reply")
    reordered = [m for m in msgs if m is not reply] + [reply]
    ex = Execution(own_id(msgs))
    fs = frames(reordered)
    for frame in fs[:-1]:
        ex.feed(decode_frame(frame))
    assert ex.idle and not ex.done  # idle alone is not the end
    ex.feed(decode_frame(fs[-1]))
    assert ex.done and ex.output().execution_count == 1


def test_messages_of_other_executions_are_ignored():
    msgs = recorded("simple")
    foreign = [
        {**m, "parent_header": {"msg_id": "someone-else"}}
        for m in recorded("print_error")
    ]
    # Interleave: every foreign message before each of ours.
    mixed = [x for pair in zip(foreign, msgs, strict=False) for x in pair] + foreign[len(msgs):]
    ex, emitted = play(mixed[: 2 * len(msgs)], own_id(msgs))
    assert ex.done
    assert ex.output().content == "2"
    assert ex.output().error is None
    assert [c.content for c in emitted] == ["2"]


def test_error_keeps_output_before_it_and_plain_traceback():
    ex, _ = play(recorded("print_error"))
    out = ex.output()
    assert out.type == "error"
    assert out.content == "ZeroDivisionError: division by zero"
    assert out.stdout == "before\n"
    assert out.stderr == "warn\n"
    # ipykernel flushed stderr first in this recording: the order is the kernel's.
    assert [c.type for c in out.chunks] == ["stderr", "stdout", "error"]
    assert out.error is not None and "ZeroDivisionError" in out.error.traceback
    assert "\x1b[" not in out.error.traceback


def test_display_data_in_order_with_images_and_html():
    ex, _ = play(recorded("display"))
    out = ex.output()
    types = [c.type for c in out.chunks]
    assert types == ["stdout", "image/png", "stdout", "text/html", "text"]
    assert out.type == "image/png" and out.content == out.images[0]
    assert base64.b64decode(out.images[0]).startswith(b"\x89PNG")
    assert out.chunks[3].content == "<b>x</b>"
    assert out.chunks[4].content == "{'k': 1}"
    assert out.stdout == "a\nb\n"


def test_kernel_restarting_mid_run_ends_the_execution():
    msgs = recorded("simple")[:2] + recorded("kernel_died")
    ex, _ = play(msgs, own_id(recorded("simple")))
    assert ex.done and ex.died == "restarting" and ex.started


def test_a_restart_before_any_message_of_ours_says_the_code_had_not_started():
    ex, _ = play(recorded("kernel_died"), "an-execution-that-never-began")
    assert ex.done and ex.died == "restarting" and not ex.started


def test_starting_status_of_a_fresh_kernel_is_not_a_death():
    msgs = recorded("after_restart")
    last_id = msgs[-1]["parent_header"]["msg_id"]
    ex, _ = play(msgs, last_id)
    assert ex.done and ex.died is None
    assert ex.output().content == "'fresh'"


def test_rate_limit_notice_marks_output_truncated():
    msgs = recorded("simple")
    notice = {
        "channel": "iopub",
        "header": {"msg_id": "n1", "msg_type": "stream"},
        "parent_header": msgs[0]["parent_header"],
        "content": {"name": "stderr", "text": "IOPub data rate exceeded.\nThe Jupyter server..."},
    }
    ex, _ = play([*msgs[:2], notice, *msgs[2:]])
    assert ex.output().truncated
    assert "IOPub data rate exceeded" in ex.output().stderr


def test_stream_pieces_stay_as_the_kernel_sent_them():
    base = recorded("simple")
    pid = base[0]["parent_header"]
    pieces = [
        {"channel": "iopub", "header": {"msg_id": f"s{i}", "msg_type": "stream"},
         "parent_header": pid, "content": {"name": "stdout", "text": f"{i}\n"}}
        for i in range(3)
    ]
    ex, emitted = play(base[:2] + pieces + base[2:])
    # One chunk per message, as nbclient records them: what streamed is the result.
    assert ex.output().chunks == emitted
    assert [c.type for c in emitted] == ["stdout", "stdout", "stdout", "text"]
    assert ex.output().stdout == "0\n1\n2\n"


def test_timeout_error_replaces_the_interrupt_error():
    msgs = recorded("print_error")
    ex, _ = play(msgs)
    from codebox.schema import ExecError

    out = ex.output(ExecError(name="TimeoutError", value="too slow"))
    assert out.error.name == "TimeoutError" and out.content == "TimeoutError: too slow"
    assert [c.type for c in out.chunks] == ["stderr", "stdout", "error"]
    assert out.stdout == "before\n"


def test_frame_round_trip_keeps_buffers_and_channel():
    session = Session()
    _, frame = session.execute_request("x = 1", silent=True, buffers=[b"\x00\xffdata"])
    msg = decode_frame(frame)
    assert msg.channel == "shell" and msg.msg_type == "execute_request"
    assert msg.content["code"] == "x = 1" and msg.content["silent"] is True
    assert msg.content["store_history"] is False
    assert [bytes(b) for b in msg.buffers] == [b"\x00\xffdata"]


def test_legacy_json_frames_decode():
    text = json.dumps({"channel": "iopub", "header": {"msg_id": "1", "msg_type": "status"},
                       "parent_header": {"msg_id": "p"}, "content": {"execution_state": "idle"}})
    msg = decode_frame(text)
    assert (msg.channel, msg.msg_type, msg.parent_id) == ("iopub", "status", "p")


def test_malformed_frame_is_rejected():
    with pytest.raises(ValueError):
        decode_frame(b"\x02\x00\x00\x00\x00\x00\x00\x00garbage")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"text/plain": "df", "text/html": "<table>"}, ("text", "df")),
        ({"text/plain": "<IPython.core.display.HTML object>", "text/html": "<b>"},
         ("text/html", "<b>")),
        ({"text/plain": "<Figure>", "image/png": "iVBO\nRw0K"}, ("image/png", "iVBORw0K")),
        ({"application/vnd.custom+json": {"a": 1}}, ("application/vnd.custom+json", '{"a": 1}')),
        ({"text/markdown": ["# a", "b"]}, ("text/markdown", "# ab")),
    ],
)
def test_display_chunk_prefers_images_then_meaningful_text(data, expected):
    chunk = display_chunk(data)
    assert (chunk.type, chunk.content) == expected


def test_strip_ansi():
    assert strip_ansi("\x1b[0;31mZeroDivisionError\x1b[0m: x") == "ZeroDivisionError: x"
