"""Outputs as Jupyter means them, in the pure core: whole MIME bundles, clear_output,
display updates, and every kind of output bounded. Fed with message sequences recorded
from a real kernel (tests/data/*.json, see tests/data/record.py) and variations of them."""

from __future__ import annotations

import base64

import pytest

from codebox import _output_caps as caps
from codebox._limits import OUTPUT_LIMIT, TRUNCATED_KEY, notice
from codebox.schema import CLEAR_OUTPUT, ChunkFold, OutputChunk, fold_chunks
from tests.test_jupyter import play, recorded


def with_output(name: str, *messages: dict) -> list[dict]:
    """A recording with ``messages`` (``(msg_type, content[, metadata])`` dicts) in place
    of its own output, between its ``execute_input`` and its closing ``status: idle``."""
    base = recorded(name)
    parent = base[0]["parent_header"]
    made = [{"channel": "iopub", "header": {"msg_id": f"m{i}", "msg_type": m["type"]},
             "parent_header": parent, "content": m["content"], "metadata": m.get("metadata")}
            for i, m in enumerate(messages)]
    head = [m for m in base if m["header"]["msg_type"] in ("status", "execute_input")][:2]
    tail = [m for m in base if m["header"]["msg_type"] == "execute_reply"] + [base[-1]]
    return head + made + tail


def stream(text: str, name: str = "stdout", metadata: dict | None = None) -> dict:
    return {"type": "stream", "content": {"name": name, "text": text}, "metadata": metadata}


def display(data: dict, display_id: str | None = None, kind: str = "display_data") -> dict:
    content = {"data": data, "metadata": {}}
    if display_id is not None:
        content["transient"] = {"display_id": display_id}
    return {"type": kind, "content": content}


def error(ename: str, evalue: str, traceback: list[str]) -> dict:
    return {"type": "error", "content": {"ename": ename, "evalue": evalue,
                                         "traceback": traceback}}


# -- whole bundles ---------------------------------------------------------------------------


def test_a_bundle_keeps_every_part_beside_the_richest():
    ex, emitted = play(recorded("bundles"))
    out = ex.output()
    figure, frame, js, svg, result = out.chunks
    assert figure.type == "image/png" and figure.content == out.images[0]
    assert figure.data["text/plain"] == "<Figure size 100x100 with 1 Axes>"
    assert figure.data["image/png"] == figure.content  # one line, the same base64
    assert base64.b64decode(figure.content).startswith(b"\x89PNG")
    # A table: its text is the alt text, its HTML is kept beside it.
    assert (frame.type, frame.content) == ("text", "   a\n0  1\n1  2")
    assert "<table" in frame.data["text/html"]
    assert js.type == "application/json" and js.data["application/json"] == {"k": [1, 2]}
    assert (svg.type, svg.content, svg.data["text/plain"]) == ("image/svg+xml", "<svg/>",
                                                               "alt text")
    assert result.type == "text" and "<table" in result.data["text/html"]
    assert all(c.display_id is None for c in out.chunks)
    assert out.chunks == emitted  # nothing cleared or updated: what streamed is the result


def test_the_figure_of_a_recorded_run_keeps_its_alt_text():
    ex, _ = play(recorded("display"))
    figure = ex.output().chunks[1]
    assert set(figure.data) == {"image/png", "text/plain"}
    assert figure.data["text/plain"].startswith("<Figure size")


def test_streams_and_errors_carry_no_bundle():
    ex, _ = play(recorded("print_error"))
    assert all(c.data is None and c.display_id is None for c in ex.output().chunks)


# -- clear_output and display updates ---------------------------------------------------------


def test_clear_output_leaves_what_a_notebook_shows():
    ex, emitted = play(recorded("clear"))
    out = ex.output()
    assert out.stdout == "9\n" and out.content == "9\n"
    assert out.chunks == [OutputChunk(type="stdout", content="9\n")]
    clears = [c for c in emitted if c.type == CLEAR_OUTPUT]
    assert len(clears) == 10 and all(c.data == {"wait": False} for c in clears)
    assert fold_chunks(emitted) == out.chunks


def test_clear_output_wait_clears_at_the_next_output_only():
    ex, emitted = play(recorded("clear_wait"))
    out = ex.output()
    # a, clear(wait), b, clear(wait), c, clear(wait): the last clear has no output after it.
    assert out.stdout == "c\n"
    assert [c.data for c in emitted if c.type == CLEAR_OUTPUT] == [{"wait": True}] * 3
    assert fold_chunks(emitted) == out.chunks


def test_an_update_replaces_its_display_in_place():
    ex, emitted = play(recorded("update"))
    out = ex.output()
    assert [(c.type, c.content) for c in out.chunks] == [
        ("text/html", "<b>3</b>"), ("stdout", "between\n"), ("text", "'other'")]
    shown = out.chunks[0]
    assert shown.display_id and shown.data["text/plain"] == "<IPython.core.display.HTML object>"
    # Live: the display, then each update as a chunk with the same display_id.
    assert [c.content for c in emitted if c.display_id == shown.display_id] == [
        "<b>1</b>", "<b>2</b>", "<b>3</b>"]
    assert fold_chunks(emitted) == out.chunks


def test_an_update_of_a_display_not_shown_is_ignored():
    msgs = with_output("simple", display({"text/plain": "a"}, "d1"),
                       {"type": "clear_output", "content": {"wait": False}},
                       display({"text/plain": "b"}, "d1", kind="update_display_data"),
                       display({"text/plain": "c"}, "nowhere", kind="update_display_data"))
    ex, emitted = play(msgs)
    assert ex.output().chunks == []
    assert [c.type for c in emitted] == ["text", CLEAR_OUTPUT]


def test_a_waiting_clear_lets_an_update_through_then_clears():
    msgs = with_output("simple", display({"text/plain": "a"}, "d1"),
                       {"type": "clear_output", "content": {"wait": True}},
                       display({"text/plain": "b"}, "d1", kind="update_display_data"),
                       stream("after\n"))
    ex, emitted = play(msgs)
    assert [c.content for c in ex.output().chunks] == ["after\n"]
    assert fold_chunks(emitted) == ex.output().chunks


def test_a_timeout_error_closes_the_folded_output():
    from codebox.schema import ExecError

    ex, _ = play(recorded("clear"))
    out = ex.output(ExecError(name="TimeoutError", value="too slow"))
    assert [c.type for c in out.chunks] == ["stdout", "error"] and out.stdout == "9\n"


# -- bounded, every kind ----------------------------------------------------------------------


def test_ten_megabytes_of_print_arrive_whole_by_default():
    ex, _ = play(with_output("simple", stream("x" * 10_000_000)))
    out = ex.output()
    assert len(out.stdout) == 10_000_000 and not out.truncated


def test_text_past_the_limit_is_cut_with_a_notice():
    msgs = with_output("simple", stream("a" * 1000), stream("b" * 5000, "stderr"),
                       stream("c" * 100))
    ex, emitted = play(msgs, output_limit=2000)
    out = ex.output()
    assert out.truncated and out.stdout.startswith("a" * 1000)
    cut = out.stderr
    assert cut.startswith("b" * 100) and len(cut) < 2000
    dropped = 5000 - (len(cut) - len(cut.lstrip("b")))
    assert f"[codebox: {dropped} bytes of stderr dropped: the output limit was reached]" in cut
    # What came after the limit was dropped, and the end of the run says so.
    assert "c" not in out.stdout
    assert out.chunks[-1].content.strip() == (
        "[codebox: 100 bytes of stdout dropped: the output limit was reached]")
    assert out.chunks == emitted


def test_a_twenty_megabyte_image_keeps_its_alt_text_and_says_what_was_dropped():
    png = base64.b64encode(b"\x89PNG" + bytes(15_000_000)).decode()
    ex, _ = play(with_output("simple", display({"image/png": png, "text/plain": "<Figure>"})))
    out = ex.output()
    (chunk,) = out.chunks
    assert out.truncated and not out.images
    assert chunk.type == "text" and chunk.content.startswith("<Figure>")
    assert f"[codebox: {len('image/png') + len(png)} bytes of image/png dropped" in chunk.content
    assert set(chunk.data) == {"text/plain"} and len(chunk.content) < 1000


def test_a_bundle_keeps_the_parts_that_fit():
    html = "<p>" + "x" * 50_000 + "</p>"
    msgs = with_output("simple", display({"text/plain": "alt", "text/html": html,
                                          "image/png": "iVBORw0K"}))
    ex, _ = play(msgs, output_limit=10_000)
    (chunk,) = ex.output().chunks
    assert chunk.type == "image/png" and chunk.content == "iVBORw0K"
    assert chunk.data["text/plain"].startswith("alt\n[codebox: ")
    assert "bytes of text/html dropped" in chunk.data["text/plain"]


@pytest.mark.parametrize("data", [
    {"text/html": "<b>" + "h" * 100_000 + "</b>"},
    {"application/json": {"k": "j" * 100_000}},
    {"text/plain": "p" * 100_000},
], ids=["html", "json", "plain"])
def test_every_mime_type_counts(data):
    ex, _ = play(with_output("simple", display(data, kind="execute_result")), output_limit=5000)
    out = ex.output()
    assert out.truncated and "[codebox: " in out.content and len(out.content) < 5000


def test_a_huge_traceback_keeps_its_ends():
    frames = [f"File <cell>, line {i}, in f{i}\n    f{i + 1}()" for i in range(200_000)]
    value = "v" * 3_000_000
    msgs = with_output("simple", error("RecursionError", value,
                                       ["Traceback", *frames, f"RecursionError: {value}"]))
    ex, _ = play(msgs, output_limit=100_000)
    out = ex.output()
    assert out.truncated and out.error.name == "RecursionError"
    assert out.error.value.startswith("vvvv") and "bytes of error value dropped" in out.error.value
    tb = out.error.traceback
    assert len(tb) < 110_000 and tb.startswith("Traceback\nFile <cell>, line 0")
    assert "in f199999" in tb and tb.rstrip("\n").endswith("the output limit was reached]")
    assert "bytes of traceback dropped" in tb
    assert out.content == str(out.error) and out.chunks[-1].content == str(out.error)


def test_an_error_past_the_limit_still_says_how_the_run_failed():
    msgs = with_output("simple", stream("x" * 5000), error("ValueError", "bad", ["tb"]))
    ex, _ = play(msgs, output_limit=1000)
    out = ex.output()
    assert out.truncated and (out.error.name, out.error.value) == ("ValueError", "bad")
    assert out.chunks[-1].type == "error"


def test_one_message_is_capped_on_its_own():
    msgs = with_output("simple", stream("a" * 3000), stream("b" * 10))
    ex, _ = play(msgs, output_limit=1_000_000, message_limit=1000)
    out = ex.output()
    assert out.truncated and out.stdout.startswith("a" * 800) and out.stdout.endswith("b" * 10)
    assert "bytes of stdout dropped" in out.stdout


def test_a_flood_of_tiny_pieces_is_bounded_too():
    msgs = with_output("simple", *(stream(".") for _ in range(5000)))
    ex, _ = play(msgs, output_limit=100_000)
    out = ex.output()
    assert out.truncated and 500 < len(out.chunks) < 1000
    assert "bytes of stdout dropped" in out.chunks[-1].content


def test_clearing_frees_room_for_what_follows():
    msgs = [stream(f"{i}" * 900) for i in range(10)]
    cleared = [m for s in msgs for m in ({"type": "clear_output", "content": {}}, s)]
    ex, _ = play(with_output("simple", *cleared), output_limit=2000)
    out = ex.output()
    assert out.stdout == "9" * 900 and not out.truncated


def test_no_limit_keeps_everything():
    ex, _ = play(with_output("simple", stream("x" * (OUTPUT_LIMIT + 10))), output_limit=None)
    assert len(ex.output().stdout) == OUTPUT_LIMIT + 10 and not ex.output().truncated


def test_a_message_cut_by_an_earlier_hop_marks_the_output_truncated():
    msgs = with_output("simple", stream("[codebox: 99 bytes of stdout dropped]\n",
                                        metadata={TRUNCATED_KEY: 99}))
    ex, _ = play(msgs)
    assert ex.output().truncated
    assert not play(with_output("simple", stream("whole\n")))[0].output().truncated


def cut_before(messages: list[dict], limit: int) -> list[dict]:
    """``messages`` as a hop before the client passes them on (the kernel, the gateway):
    each output message through the same accounting, its closing notice before idle."""
    budget = caps.RunBudget(limit)
    passed = []
    for msg in messages:
        kind, content = msg["header"]["msg_type"], msg["content"]
        kept, dropped = content, 0
        if msg["channel"] == "iopub" and kind in caps.OUTPUT_TYPES:
            kept, dropped = budget.take(kind, content, msg.get("metadata"))
        elif kind == "execute_reply":
            kept, dropped = budget.take_reply(content)
        elif kind == "status" and content.get("execution_state") == "idle":
            said, total = budget.closing()
            if said:
                passed.append({**msg, "header": {"msg_id": "note", "msg_type": "stream"},
                               "content": caps.closing_content(said),
                               "metadata": {TRUNCATED_KEY: total}})
        if kept is not None:
            metadata = {**(msg.get("metadata") or {}), TRUNCATED_KEY: dropped} if dropped \
                else msg.get("metadata")
            passed.append({**msg, "content": kept, "metadata": metadata})
    return passed


FLOOD = [stream("a" * 1000), stream("b" * 5000, "stderr"),
         display({"image/png": "A" * 20_000, "text/plain": "<Figure>"}), stream("c" * 100),
         display({"text/html": "h" * 300}), error("ValueError", "v" * 50_000,
                                                 ["Traceback", "ValueError: " + "v" * 50_000])]


@pytest.mark.parametrize("limit", [1_000, 2_000, 6_000, 30_000])
def test_what_a_hop_before_cut_arrives_as_it_cut_it(limit):
    # The kernel cuts as the client would: the client passes its cuts whole (one notice
    # each, its closing notice said once) and the result is what the client alone keeps.
    alone, _ = play(with_output("simple", *FLOOD), output_limit=limit)
    after, _ = play(cut_before(with_output("simple", *FLOOD), limit), output_limit=limit)
    assert after.output() == alone.output() and after.output().truncated
    said = [c.content.count("[codebox: ") for c in after.output().chunks]
    assert said == [c.content.count("[codebox: ") for c in alone.output().chunks]
    assert all(n <= 1 for n in said[:-1])  # one notice a chunk; the closing one, per kind


def test_a_client_with_a_smaller_limit_cuts_again_and_says_all_that_was_dropped():
    ex, _ = play(cut_before(with_output("simple", stream("y" * 5000)), 3_000),
                 output_limit=1_000)
    (chunk,) = ex.output().chunks
    kept = len(chunk.content) - len(chunk.content.lstrip("y"))
    assert chunk.content == "y" * kept + notice("stdout", 5000 - kept) and 500 < kept < 1000


def test_a_hop_before_that_lies_is_cut_all_the_same():
    msgs = with_output("simple", stream("x" * 100_000, metadata={TRUNCATED_KEY: 1}))
    ex, _ = play(msgs, output_limit=1_000)
    (chunk,) = ex.output().chunks
    kept = len(chunk.content) - len(chunk.content.lstrip("x"))
    assert chunk.content == "x" * kept + notice("stdout", 100_000 - kept)
    assert kept + len(notice("stdout", 0)) < 1_000 - 128


# -- the fold on its own ----------------------------------------------------------------------


def test_fold_of_plain_chunks_changes_nothing():
    chunks = [OutputChunk(type="stdout", content="a"), OutputChunk(type="stdout", content="b")]
    assert fold_chunks(chunks) == chunks


def test_fold_replaces_every_chunk_of_a_display_and_clears():
    def shown(text: str, display_id: str | None = None) -> OutputChunk:
        return OutputChunk(type="text", content=text, data={"text/plain": text},
                           display_id=display_id)

    clear = OutputChunk(type=CLEAR_OUTPUT, content="")
    wait = OutputChunk(type=CLEAR_OUTPUT, content="", data={"wait": True})
    assert fold_chunks([shown("1", "d"), shown("x"), shown("2", "d")]) == [shown("2", "d"),
                                                                           shown("x")]
    assert fold_chunks([shown("x"), clear, shown("y")]) == [shown("y")]
    assert fold_chunks([shown("x"), wait]) == [shown("x")]
    assert fold_chunks([shown("x"), wait, shown("y")]) == [shown("y")]
    fold = ChunkFold()
    fold.add(shown("1", "d"), 10)
    fold.add(shown("x"), 5)
    assert fold.freed_by("d") == 10 and fold.freed_by(None) == 0
    fold.add(shown("2", "d"), 3)
    assert fold.cost == 8


def test_a_chunk_repr_stays_short_and_names_its_parts():
    png = "i" * 1_000_000
    chunk = OutputChunk(type="image/png", content=png, data={"image/png": png, "text/plain": "alt"},
                        display_id="d1")
    text = repr(chunk)
    assert len(text) < 200 and "['image/png', 'text/plain']" in text and "'d1'" in text


def test_a_chunk_displays_its_whole_bundle_in_notebooks():
    chunk = OutputChunk(type="image/png", content="iVBO",
                        data={"image/png": "iVBO", "text/plain": "<Figure>"})
    assert chunk._repr_mimebundle_() == {"image/png": "iVBO", "text/plain": "<Figure>"}
