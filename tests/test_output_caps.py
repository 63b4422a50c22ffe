"""How every hop counts and cuts a run's output (`codebox._output_caps`): pure, in memory;
and the module as a kernel loads it, by path, outside the package."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from codebox import _limits
from codebox import _output_caps as caps
from codebox._limits import TRUNCATED_KEY, notice

NOTICE = re.compile(_limits.NOTICE_PATTERN)


def hop(budget: caps.RunBudget, messages: list[tuple]) -> list[tuple]:
    """What one hop passes on of a run's ``(msg_type, content, metadata)`` messages, as the
    kernel and the gateway do: cut messages marked, its closing notice last."""
    passed = []
    for msg_type, content, metadata in messages:
        kept, dropped = budget.take(msg_type, content, metadata)
        if kept is not None:
            passed.append((msg_type, kept, {**metadata, TRUNCATED_KEY: dropped} if dropped
                           else metadata))
    said, dropped = budget.closing()
    if said:
        passed.append(("stream", caps.closing_content(said), {TRUNCATED_KEY: dropped}))
    return passed


def stream(text: str, name: str = "stdout") -> tuple:
    return ("stream", {"name": name, "text": text}, {})


def display(data: dict, display_id: str | None = None, kind: str = "display_data") -> tuple:
    content = {"data": data, "metadata": {}, "transient": {}}
    if display_id:
        content["transient"] = {"display_id": display_id}
    return (kind, content, {})


def error(value: str, frames: int) -> tuple:
    traceback = ["\x1b[0;31mTraceback\x1b[0m", *(f"File <cell>, line {i}, in f{i}"
                                               for i in range(frames)), f"ValueError: {value}"]
    return ("error", {"ename": "ValueError", "evalue": value, "traceback": traceback}, {})


# A run with every kind of output, far more of it than the limits below.
RUN = [
    stream("a" * 300),
    display({"text/plain": "<big>", "image/png": "A" * 50_000,
             "application/json": {"k": ["j"] * 200}}, "d1"),
    stream("s☃" * 20_000, "stderr"),
    display({"text/plain": "<big>", "text/html": "<b>" + "h" * 9_000 + "</b>"}, "d1",
            kind="update_display_data"),
    ("clear_output", {"wait": True}, {}),
    display({"text/plain": "r" * 30_000}, kind="execute_result"),
    stream("late" * 500),
    error("v" * 300_000, 20_000),
]


def texts(value) -> str:
    """Every string of a message's content, one after the other."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "".join(texts(v) for v in value.values())
    return "".join(texts(v) for v in value) if isinstance(value, list) else ""


def notices(messages: list[tuple]) -> list[tuple[int, str]]:
    return [(int(n), what) for _, content, _ in messages
            for n, what in NOTICE.findall(texts(content))]


@pytest.mark.parametrize("limit", [1_000, 6_000, 40_000, 200_000, 2_000_000])
def test_what_one_hop_cut_passes_a_hop_with_the_same_limit_whole(limit):
    budget = caps.RunBudget(limit)
    first = hop(budget, RUN)
    assert hop(caps.RunBudget(limit), first) == first  # nothing cut twice, no second notice
    assert hop(caps.RunBudget(limit, limit // 2), first) != first  # (a smaller one cuts)
    assert any(m.get(TRUNCATED_KEY) for _, _, m in first) and notices(first)
    # Within the limits: each message, and the run but for its error (which keeps a floor).
    assert all(caps.cost(t, c) <= max(limit, caps.ERROR_FLOOR) for t, c, _ in first)
    before_error = caps.RunBudget(limit)
    hop(before_error, RUN[:-1])
    assert before_error.used <= limit


def test_a_notice_says_what_was_dropped_of_the_message_it_ends():
    ((_, content, metadata),) = hop(caps.RunBudget(1_000), [stream("y" * 5_001)])
    text = content["text"]
    kept = len(text) - len(text.lstrip("y"))
    # The notice counts too: 1,000 bytes, less 128 for the chunk, less the notice.
    assert kept == 1_000 - caps.CHUNK_COST - len(notice("stdout", 5_001))
    assert text == "y" * kept + notice("stdout", 5_001 - kept)
    assert metadata[TRUNCATED_KEY] == 5_001 - kept
    assert caps.cost("stream", content) == 1_000


def test_a_later_hop_with_a_smaller_limit_cuts_again_and_says_all_that_was_dropped():
    bundle = display({"text/plain": "alt", "text/html": "h" * 5_000, "image/png": "iVBORw0K",
                      "application/json": {"k": "j" * 3_000}})
    for message in (stream("y" * 10_000), bundle, error("v" * 300_000, 20_000)):
        once = hop(caps.RunBudget(1_000), [message])
        twice = hop(caps.RunBudget(1_000), hop(caps.RunBudget(6_000), [message]))
        assert notices(twice) == notices(once), (notices(twice), notices(once))
        assert texts(twice[0][1]).count("[codebox:") == texts(once[0][1]).count("[codebox:")
    ((_, content, _),) = twice[:1]
    assert content["evalue"].startswith("v" * 100)


def test_a_cut_message_fits_its_room_whatever_the_room():
    samples = [stream("x☃y" * 3_000, "stderr"), RUN[1], RUN[3], RUN[5],
               display({"image/png": "A" * 9_000}), error("v☃" * 20_000, 3_000)]
    for msg_type, content, _ in samples:
        for room in range(0, min(12_000, caps.cost(msg_type, content)), 97):
            kept, dropped = caps.cut(msg_type, content, room)
            if kept is None:
                assert room < caps.CHUNK_COST + 200, (msg_type, room)
                continue
            assert caps.cost(msg_type, kept) <= max(room, caps.ERROR_FLOOR), (msg_type, room)
            assert dropped > 0 and NOTICE.search(texts(kept))


def test_a_bundle_keeps_its_smallest_parts_and_its_alt_text_names_the_rest():
    _, content, _ = display({"text/plain": "alt", "text/html": "h" * 5_000,
                             "image/png": "iVBORw0K", "application/json": {"k": "j" * 3_000}})
    kept, dropped = caps.cut("display_data", content, 1_000)
    assert set(kept["data"]) == {"text/plain", "image/png"}
    sizes = len("text/html") + 5_000 + len("application/json") + len('{"k":""}') + 3_000
    assert kept["data"]["text/plain"] == "alt" + notice("text/html, application/json", sizes)
    assert dropped == sizes and kept["transient"] == {}


def test_an_error_keeps_its_name_value_start_and_both_ends_of_its_traceback():
    _, content, _ = error("v" * 300_000, 20_000)
    kept, _ = caps.cut("error", content, 40_000)
    assert kept["ename"] == "ValueError" and kept["evalue"].startswith("v" * 9_000)
    assert kept["evalue"].endswith("bytes of error value dropped: the output limit was reached]\n")
    (traceback,) = kept["traceback"]
    assert traceback.startswith("\x1b[0;31mTraceback") and "in f19999\nValueError: v" in traceback
    assert "bytes of traceback dropped" in traceback and caps.cost("error", kept) <= 40_000


def test_an_error_keeps_its_floor_past_the_limit_and_its_reply_is_cut_alike_everywhere():
    budget = caps.RunBudget(1_000)
    assert budget.take(*stream("x" * 800))[1] == 0
    kept, dropped = budget.take(*error("v" * 100_000, 10))
    assert dropped and caps.cost("error", kept) <= caps.ERROR_FLOOR  # past the run's limit
    assert kept["ename"] == "ValueError" and kept["evalue"].startswith("v" * 900)
    reply = {"status": "error", "execution_count": 3, **error("v" * 100_000, 10)[1]}
    first, dropped = budget.take_reply(reply)
    assert dropped and first["execution_count"] == 3 and first["evalue"] == kept["evalue"]
    # Another hop, whatever its run used by then, passes that reply whole.
    assert caps.RunBudget(1_000).take_reply(first, {TRUNCATED_KEY: dropped}) == (first, 0)


def test_past_the_limit_output_is_dropped_and_said_once_at_the_end_per_kind():
    budget = caps.RunBudget(1_000)
    assert budget.take(*stream("a" * 500))[1] == 0
    assert budget.take(*stream("b" * 2_000))[0]["text"].startswith("b")  # cut, with a notice
    assert budget.take(*stream("c" * 100)) == (None, 0)
    assert budget.take(*display({"image/png": "A" * 50})) == (None, 0)
    assert budget.take(*stream("d" * 7, "stderr")) == (None, 0)
    said, dropped = budget.closing()
    assert said == (notice("stdout", 100) + notice("image/png", 59) + notice("stderr", 7))
    assert dropped == 166 and budget.closing() == ("", 0) and budget.truncated
    # A later hop adds a previous hop's closing notice to its own: said once, at the end.
    later = caps.RunBudget(1_000)
    assert later.take("stream", caps.closing_content(said), {TRUNCATED_KEY: 166}) == (None, 0)
    later.take(*stream("e" * 5_000))
    assert later.take(*stream("f" * 10)) == (None, 0)
    assert later.closing() == (notice("stdout", 110) + notice("image/png", 59)
                               + notice("stderr", 7), 176)


def test_clears_and_updates_free_what_they_remove():
    budget = caps.RunBudget(2_000)
    for digit in "0123456789":
        assert budget.take("clear_output", {"wait": False}) == ({"wait": False}, 0)
        assert budget.take(*stream(digit * 900))[1] == 0
    assert budget.used == 900 + caps.CHUNK_COST
    budget.take("clear_output", {"wait": True})  # clears at the next output
    for i in range(10):  # a display updated in place costs what it shows last
        assert budget.take(*display({"text/plain": str(i) * 900}, "d",
                                    "update_display_data" if i else "display_data"))[1] == 0
    assert budget.take(*display({"text/plain": "x"}, "gone", "update_display_data")) == (None, 0)
    assert not budget.truncated


def test_what_a_message_holds_beside_its_payload_counts_too():
    _, content, _ = display({"text/plain": "p"})
    content["metadata"] = {"text/plain": {"junk": "m" * 10_000}}
    assert caps.cost("display_data", content) > 10_000
    kept, _ = caps.RunBudget(5_000).take("display_data", content)
    assert kept["metadata"] == {} and kept["data"]["text/plain"] == "p"
    assert caps.RunBudget().take("clear_output", {"wait": "w" * 1_000}) == (None, 0)
    # A closing notice names a few kinds; what more kinds dropped is said as "output".
    budget = caps.RunBudget(200)
    budget.take(*stream("x" * 500))
    for i in range(40):
        budget.take(*display({f"image/x{i}": "A"}))
    said, _ = budget.closing()
    kinds = [what for _, what in NOTICE.findall(said)]
    assert len(kinds) == caps.KINDS_SAID + 1 and kinds[-1] == "output"


def test_no_limit_keeps_everything():
    budget = caps.RunBudget(None)
    assert budget.take(*stream("x" * 20_000_000))[1] == 0
    assert budget.take(*error("v" * 5_000_000, 10))[1] == 0 and not budget.truncated


def test_budgets_keep_each_run_apart():
    budgets = caps.Budgets(1_000, 500)
    assert budgets.run("a").take(*stream("x" * 600))[1] > 0  # one message's limit
    assert budgets.run("b").take(*stream("x" * 300))[1] == 0
    assert budgets.closing("unknown") == ("", 0)


def test_limits_come_from_the_kernels_environment():
    assert caps.limits_from_env({}) == (_limits.OUTPUT_LIMIT, _limits.MESSAGE_LIMIT)
    assert caps.limits_from_env({"CODEBOX_KERNEL_OUTPUT_LIMIT": "1000"}) == (1000, 1000)
    assert caps.limits_from_env({"CODEBOX_KERNEL_OUTPUT_LIMIT": "x"})[0] == _limits.OUTPUT_LIMIT


def test_a_kernel_can_load_it_by_path_without_the_package():
    path = Path(caps.__file__)
    code = (f"import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('c', {str(path)!r})\n"
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
            "b = m.RunBudget(1000)\n"
            "print(m.OUTPUT_LIMIT, b.take('stream', {'name': 'stdout', 'text': 'x' * 2000})[1],"
            " 'codebox' in sys.modules)")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                         check=True).stdout
    dropped = 2000 - (1000 - caps.CHUNK_COST - len(notice("stdout", 2000)))
    assert out == f"{_limits.OUTPUT_LIMIT} {dropped} False\n"
    assert importlib.util.find_spec("codebox._budget") is None  # one module decides
