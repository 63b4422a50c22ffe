"""How much of a run's output a hop keeps, and how each kind is cut to fit: the one
accounting and the one cutting of every hop that bounds output (the kernel,
``local/_kernel_limits.py``; the gateway codebox spawns, ``local/_gateway_output.py``; the
client's ``Execution``, ``local/_jupyter.py``; and ``CommandOutput``, ``_commands.py``).
Pure, standard library only: the gateway imports it, and a kernel loads it by path (a
kernel must not import the codebox package).

The accounting (`RunBudget`) reads Jupyter output messages, one by one:

- a message costs its payload in UTF-8 bytes (a stream's text; a display's or a result's
  whole MIME bundle, each part its type and its value, JSON for data that is not text; an
  error's name, its value twice, as the error and as its chunk, and its traceback), plus
  `CHUNK_COST` for the rest of it (its stream name, display id, metadata...: counted in
  full where larger), so that a flood of tiny pieces is bounded too;
- a run keeps at most ``limit`` bytes, every kind together, and at most ``message_limit``
  of one message; what a ``clear_output`` or an update of a display removes no longer
  counts;
- a message that does not fit is cut to what fits, the notice that says what was dropped
  (`_limits.notice`) included: text keeps its start; a MIME bundle its smallest parts that
  fit, ``text/plain`` first (its start, if it alone is too large), and its ``text/plain``
  names the parts dropped; an error keeps its name, the start of its value and both ends
  of its traceback, in at least `ERROR_FLOOR` bytes even past the limit, and at most
  `ERROR_LIMIT`;
- a message of which not even its notice fits is dropped, and what a run dropped so is
  said, per kind, in one closing notice (`RunBudget.closing`, a ``stderr`` stream).

Every hop counting alike, a message an earlier hop cut to fit its room fits that room at the
next hop, which passes it whole. A later hop with a smaller limit cuts it further: it reads
the earlier notice (of a message marked ``metadata[TRUNCATED_KEY]``) so that its own says
all that was dropped, and adds the earlier hop's closing notice to its own.
"""

from __future__ import annotations

import json
import os
import re
from collections import OrderedDict
from typing import Any

try:
    from ._limits import MESSAGE_LIMIT, NOTICE_PATTERN, OUTPUT_LIMIT, TRUNCATED_KEY, notice
except ImportError:  # loaded by path, outside the package (in a kernel)
    import importlib.util

    _spec = importlib.util.spec_from_file_location(
        "_codebox_limits", os.path.join(os.path.dirname(__file__), "_limits.py"))
    assert _spec is not None and _spec.loader is not None
    _limits = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_limits)
    MESSAGE_LIMIT, OUTPUT_LIMIT = _limits.MESSAGE_LIMIT, _limits.OUTPUT_LIMIT
    NOTICE_PATTERN, TRUNCATED_KEY, notice = (_limits.NOTICE_PATTERN, _limits.TRUNCATED_KEY,
                                             _limits.notice)

DISPLAY_TYPES = frozenset({"display_data", "execute_result", "update_display_data"})
OUTPUT_TYPES = DISPLAY_TYPES | {"stream", "error", "clear_output"}
"""The messages that carry a run's output (all on IOPub)."""
CHUNK_COST = 128
"""Bytes each message counts beside its payload."""
ERROR_FLOOR = 4096
"""Bytes of an error kept even past the limit: a run that failed always says how."""
ERROR_LIMIT = 1024 * 1024
"""Most bytes of one error: a longer one tells no more."""
KINDS_SAID = 16
"""Kinds of output a closing notice names; what other kinds dropped is said as ``output``."""
NAME_LIMIT = 256
"""Most bytes of an error's name."""
_RUNS_KEPT = 64  # runs whose accounting `Budgets` keeps (a run's output arrives while recent)
_NOTICE_AT_END = re.compile(NOTICE_PATTERN + r"\Z")
_NOTICES = re.compile(f"(?:{NOTICE_PATTERN})+")
_ONE_NOTICE = re.compile(NOTICE_PATTERN)
_TRACEBACK_NOTICE = re.compile(NOTICE_PATTERN.replace(r"([^\n\]]+)", "traceback"))
_KIND = re.compile(r"[\w/+.-]+(?: [\w/+.-]+)?", re.ASCII)
_PLAIN = "text/plain"


# -- sizes -------------------------------------------------------------------------------


def text_size(text: str) -> int:
    """The size of ``text`` in UTF-8 bytes."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def value_size(value: Any) -> int:
    """The size of a value: text in UTF-8 bytes, other data as compact JSON."""
    if isinstance(value, str):
        return text_size(value)
    return text_size(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str))


def head(text: str, size: int) -> str:
    """The start of ``text`` within ``size`` bytes, never splitting a character."""
    if size <= 0:
        return ""
    if text.isascii():
        return text[:size]
    return text.encode("utf-8", "surrogatepass")[:size].decode("utf-8", "ignore")


def tail(text: str, size: int) -> str:
    """The end of ``text`` within ``size`` bytes, never splitting a character."""
    if size <= 0:
        return ""
    if text.isascii():
        return text[-size:]
    return text.encode("utf-8", "surrogatepass")[-size:].decode("utf-8", "ignore")


def as_text(value: Any) -> str:
    """A field that should be text, as text."""
    return value if isinstance(value, str) else "" if value is None else str(value)


def traceback_text(content: dict[str, Any]) -> str:
    """An error's traceback as one text, its lines joined."""
    lines = content.get("traceback")
    return "\n".join(map(as_text, lines)) if isinstance(lines, list) else as_text(lines)


def stream_kind(content: dict[str, Any]) -> str:
    """The stream a ``stream`` message writes to, as a chunk and a notice name it."""
    return "stderr" if content.get("name") == "stderr" else "stdout"


def display_id(content: dict[str, Any]) -> str | None:
    """The id a display message carries in ``transient`` (None: none)."""
    transient = content.get("transient")
    value = transient.get("display_id") if isinstance(transient, dict) else None
    return value if isinstance(value, str) and value else None


def _payload_keys(msg_type: str) -> tuple[str, ...]:
    if msg_type == "stream":
        return ("text",)
    if msg_type == "error":
        return ("ename", "evalue", "traceback")
    return ("data",)


def _framing(msg_type: str, content: dict[str, Any]) -> int:
    """What a message costs beside its payload."""
    keys = _payload_keys(msg_type)
    rest = {k: v for k, v in content.items() if k not in keys}
    return max(CHUNK_COST, value_size(rest)) if rest else CHUNK_COST


def _parts(data: dict[str, Any]) -> dict[str, int]:
    return {mime: text_size(mime) + value_size(value) for mime, value in data.items()}


def _error_size(name: str, value: str, traceback: str) -> int:
    return text_size(name) + 2 * text_size(value) + text_size(traceback)


def cost(msg_type: str, content: dict[str, Any]) -> int:
    """What one output message counts against its run's budget."""
    if msg_type == "stream":
        payload = text_size(as_text(content.get("text")))
    elif msg_type == "error":
        payload = _error_size(as_text(content.get("ename")), as_text(content.get("evalue")),
                              traceback_text(content))
    elif msg_type in DISPLAY_TYPES:
        data = content.get("data")
        payload = sum(_parts(data).values()) if isinstance(data, dict) else 0
    else:
        return 0
    return payload + _framing(msg_type, content)


# -- notices -----------------------------------------------------------------------------


def _kind(name: str) -> str:
    """A kind of output as a notice may name it (else ``output``)."""
    return name if len(name) <= 64 and _KIND.fullmatch(name) else "output"


def _said(text: str, marked: bool) -> tuple[str, int, list[str]]:
    """``text`` without the notice a previous hop ended it with (only in a message it
    marked), the bytes that notice said were dropped, and the kinds it named."""
    found = _NOTICE_AT_END.search(text, max(0, len(text) - 4096)) if marked else None
    if found is None:
        return text, 0, []
    return text[:found.start()], int(found.group(1)), found.group(2).split(", ")


# -- cutting one message to its room ------------------------------------------------------


def _cut_stream(content: dict[str, Any], room: int,
                marked: bool) -> tuple[dict[str, Any] | None, int]:
    kind = stream_kind(content)
    text, prior, _ = _said(as_text(content.get("text")), marked)
    size = text_size(text)
    room -= _framing("stream", content) + text_size(notice(kind, size + prior))
    if room < 0:
        return None, size + prior
    kept = head(text, room)
    dropped = prior + size - text_size(kept)
    return {**content, "text": kept + notice(kind, dropped)}, dropped


def _cut_bundle(msg_type: str, content: dict[str, Any], room: int,
                marked: bool) -> tuple[dict[str, Any] | None, int]:
    data: dict[str, Any] = content["data"]
    plain = data.get(_PLAIN)
    text, prior, said = _said(plain if isinstance(plain, str) else "", marked)
    sizes = _parts(data)
    if isinstance(plain, str):
        sizes[_PLAIN] = text_size(_PLAIN) + text_size(text)
    out = {k: v for k, v in content.items() if k not in ("data", "metadata")}
    if "metadata" in content:
        out["metadata"] = {}
    whole = room
    room -= _framing(msg_type, out) + text_size(notice(
        ", ".join(said + [_kind(m) for m in data]), prior + sum(sizes.values())))
    plain_fits = isinstance(plain, str) and sizes[_PLAIN] <= room
    if not plain_fits:
        room -= text_size(_PLAIN)  # the alt text's name, for the start of it or the notice
    if room < 0:
        return None, prior + sum(sizes.values())
    kept = [_PLAIN] if plain_fits else []
    used = sizes[_PLAIN] if plain_fits else 0
    for mime in sorted((m for m in data if m != _PLAIN), key=sizes.__getitem__):
        if used + sizes[mime] <= room:
            kept.append(mime)
            used += sizes[mime]
    start = text if plain_fits else head(text, room - used)
    cut_plain = text_size(text) - text_size(start)
    gone = [m for m in data if m not in kept and (m != _PLAIN or cut_plain
                                                   or not isinstance(plain, str))]
    dropped = prior + cut_plain + sum(sizes[m] for m in gone if m != _PLAIN or
                                      not isinstance(plain, str))
    what = said + [_kind(m) for m in gone]
    out["data"] = {_PLAIN: start + (notice(", ".join(what), dropped) if what else ""),
                   **{m: data[m] for m in kept if m != _PLAIN}}
    metadata = content.get("metadata")
    if isinstance(metadata, dict) and metadata:  # the kept parts' own, if they fit too
        wider = {**out, "metadata": {m: metadata[m] for m in out["data"] if m in metadata}}
        if cost(msg_type, wider) <= whole:
            out = wider
    return out, dropped


def _cut_error_text(name: str, value: str, traceback: str, room: int,
                    marked: bool) -> tuple[str, str, str]:
    """An error's name, value and traceback within ``room`` bytes (of `_error_size`): the
    start of the value, the first third and the last two thirds of the traceback (the
    innermost frames and the line that names the error), the value in it shortened too."""
    name = head(name, NAME_LIMIT)
    if text_size(value) > room // 4:
        start, prior, _ = _said(value, marked)
        size = text_size(start)
        start = head(start, room // 4 - text_size(notice("error value", prior + size)))
        short = start + notice("error value", prior + size - text_size(start))
        if value:
            traceback = traceback.replace(value, short)
        value = short
    room -= text_size(name) + 2 * text_size(value)
    size = text_size(traceback)
    if size > room:
        found = _TRACEBACK_NOTICE.search(traceback) if marked else None
        prior, where = 0, len(traceback)
        if found is not None:  # a previous hop cut it: cut what it kept, say it all
            prior, where = int(found.group(1)), found.start()
            traceback = traceback[:where] + traceback[found.end():]
            size = text_size(traceback)
        room -= text_size(notice("traceback", prior + size))
        if size <= room:
            return name, value, traceback[:where] + notice("traceback", prior) + traceback[where:]
        first = head(traceback, max(0, room) // 3)
        last = tail(traceback, max(0, room) - max(0, room) // 3)
        said = notice("traceback", prior + size - text_size(first) - text_size(last))
        traceback = first + said + last
    return name, value, traceback


def _cut_error(content: dict[str, Any], room: int,
               marked: bool) -> tuple[dict[str, Any], int]:
    name, value = as_text(content.get("ename")), as_text(content.get("evalue"))
    traceback = traceback_text(content)
    before = _error_size(name, value, traceback)
    name, value, traceback = _cut_error_text(name, value, traceback, room - CHUNK_COST, marked)
    out = {k: v for k, v in content.items() if k not in _payload_keys("error")}
    if out and value_size(out) > CHUNK_COST:
        out = {}  # what an error message holds beside its error is dropped, if it is large
    out.update(ename=name, evalue=value, traceback=[traceback] if traceback else [])
    return out, max(1, before - _error_size(name, value, traceback))


def cut(msg_type: str, content: dict[str, Any], room: int,
        marked: bool = False) -> tuple[dict[str, Any] | None, int]:
    """``content`` cut to cost at most ``room`` (`cost`), with a notice of what was dropped,
    and the bytes dropped; None if not even the notice fits (an error always fits: give it
    at least `ERROR_FLOOR`). ``marked``: a previous hop cut it, read its notice."""
    if msg_type == "stream":
        return _cut_stream(content, room, marked)
    if msg_type == "error":
        return _cut_error(content, room, marked)
    return _cut_bundle(msg_type, content, room, marked)


# -- a run's accounting --------------------------------------------------------------------


class RunBudget:
    """The output of one run: what each of its messages may keep (see the module).

    Args:
        limit: Most bytes kept per run (None: no limit at all).
        message_limit: Most bytes of one message (None: the run's limit).
    """

    def __init__(self, limit: int | None = OUTPUT_LIMIT,
                 message_limit: int | None = MESSAGE_LIMIT) -> None:
        self.limit = limit
        self.message_limit = None if limit is None else min(limit, message_limit or limit)
        self.used = 0
        self.truncated = False  # something of this run was cut or dropped, here or before
        self._shown: dict[str, int] = {}  # display id -> its cost
        self._clear_waits = False
        self._later: dict[str, int] = {}  # bytes dropped per kind, said at the end

    @property
    def error_room(self) -> int | None:
        """The room of an error whatever the run has used (None: any)."""
        if self.message_limit is None:
            return None
        return max(ERROR_FLOOR, min(ERROR_LIMIT, self.message_limit))

    def take(self, msg_type: str, content: dict[str, Any],
             metadata: dict[str, Any] | None = None,
             extra: int = 0) -> tuple[dict[str, Any] | None, int]:
        """One message of the run: the content to pass on (None: nothing, it was dropped or
        shows nothing) and the bytes of it dropped (0: it passes whole). ``extra``: bytes it
        carries beside its content (raw buffers), counted too; a message that is cut loses
        them."""
        marked = isinstance(metadata, dict) and bool(metadata.get(TRUNCATED_KEY))
        self.truncated = self.truncated or marked
        if msg_type == "clear_output":
            return self._clear(content)
        if msg_type == "stream" and marked and self._add_summary(content):
            return None, 0
        shown = None
        if msg_type in DISPLAY_TYPES:
            data = content.get("data")
            shown = display_id(content)
            if not isinstance(data, dict) or not data or (
                    msg_type == "update_display_data" and shown not in self._shown):
                return None, 0  # it shows nothing (an update of a display not shown)
        elif msg_type not in OUTPUT_TYPES:
            return content, 0
        size = cost(msg_type, content) + extra
        room = self._room(shown)
        if msg_type == "error" and room is not None and self.error_room is not None:
            room = max(ERROR_FLOOR, min(room, self.error_room))
        if room is None or size <= room:
            self._add(size, shown)
            return content, 0
        self.truncated = True
        kept, dropped = cut(msg_type, content, room, marked)
        if kept is None:
            self._drop(msg_type, content, marked)
            return None, 0
        self._add(cost(msg_type, kept), shown)
        return kept, max(1, dropped)

    def take_reply(self, content: dict[str, Any],
                   metadata: dict[str, Any] | None = None) -> tuple[dict[str, Any], int]:
        """An ``execute_reply``: the error it carries cut to `error_room` (whatever the run
        has used, so that every hop cuts it alike); other replies whole."""
        room = self.error_room
        if content.get("status") != "error" or room is None:
            return content, 0
        name, value = as_text(content.get("ename")), as_text(content.get("evalue"))
        traceback = traceback_text(content)
        before = _error_size(name, value, traceback)
        if before + CHUNK_COST <= room:
            return content, 0
        marked = isinstance(metadata, dict) and bool(metadata.get(TRUNCATED_KEY))
        name, value, traceback = _cut_error_text(name, value, traceback, room - CHUNK_COST,
                                                 marked)
        self.truncated = True
        cut_content = {**content, "ename": name, "evalue": value, "traceback": [traceback]}
        return cut_content, max(1, before - _error_size(name, value, traceback))

    def closing(self) -> tuple[str, int]:
        """Once the run is over: the notice of what it dropped, per kind, and the bytes it
        dropped, once (``("", 0)``: none)."""
        text = "".join(notice(kind, size) for kind, size in self._later.items())
        dropped = sum(self._later.values())
        self._later = {}
        return text, dropped

    def _room(self, shown: str | None) -> int | None:
        if self.limit is None or self.message_limit is None:
            return None
        if shown is not None and shown in self._shown:
            freed = self._shown[shown]
        else:
            freed = self.used if self._clear_waits else 0
        return max(0, min(self.limit - self.used + freed, self.message_limit))

    def _add(self, size: int, shown: str | None) -> None:
        """Count a message kept, as a notebook shows it: an update replaces its display, a
        waiting clear clears at the next output."""
        if shown is not None and shown in self._shown:
            self.used += size - self._shown[shown]
            self._shown[shown] = size
            return
        if self._clear_waits:
            self._reset()
        self.used += size
        if shown is not None:
            self._shown[shown] = size

    def _clear(self, content: dict[str, Any]) -> tuple[dict[str, Any] | None, int]:
        if value_size(content) > CHUNK_COST:
            return None, 0  # a clear says one thing (whether to wait): not this
        if content.get("wait"):
            self._clear_waits = True
        else:
            self._reset()
        return content, 0

    def _reset(self) -> None:
        self.used, self._shown, self._clear_waits = 0, {}, False

    def _drop(self, msg_type: str, content: dict[str, Any], marked: bool) -> None:
        if msg_type == "stream":
            text, prior, _ = _said(as_text(content.get("text")), marked)
            self._say(stream_kind(content), text_size(text) + prior)
        else:
            for mime, size in _parts(content["data"]).items():
                self._say(mime, size)

    def _say(self, kind: str, size: int) -> None:
        kind = _kind(kind)
        if kind not in self._later and len(self._later) >= KINDS_SAID:
            kind = "output"
        self._later[kind] = self._later.get(kind, 0) + size

    def _add_summary(self, content: dict[str, Any]) -> bool:
        """Whether ``content`` is a previous hop's closing notice: then what it says is
        added to this run's own, said at the end."""
        text = as_text(content.get("text"))
        if len(text) > 256 * (KINDS_SAID + 1) or not _NOTICES.fullmatch(text):
            return False
        for found in _ONE_NOTICE.finditer(text):
            self._say(found.group(2), int(found.group(1)))
        return True


class Budgets:
    """The runs of one kernel (or one connection to it), each by the ``msg_id`` of its
    request: the recent ones are kept.

    Args:
        limit: Most bytes of output per run.
        message_limit: Most bytes of one message.
    """

    def __init__(self, limit: int = OUTPUT_LIMIT, message_limit: int = MESSAGE_LIMIT) -> None:
        self.limit, self.message_limit = limit, min(limit, message_limit)
        self._runs: OrderedDict[str, RunBudget] = OrderedDict()

    def run(self, parent: str) -> RunBudget:
        """The budget of the run ``parent``."""
        run = self._runs.get(parent)
        if run is None:
            run = self._runs[parent] = RunBudget(self.limit, self.message_limit)
            while len(self._runs) > _RUNS_KEPT:
                self._runs.popitem(last=False)
        else:
            self._runs.move_to_end(parent)
        return run

    def closing(self, parent: str) -> tuple[str, int]:
        """The closing notice of the run ``parent`` and the bytes it says (`RunBudget.closing`)."""
        run = self._runs.get(parent)
        return run.closing() if run is not None else ("", 0)


def closing_content(text: str) -> dict[str, Any]:
    """The content of the ``stream`` message of a closing notice."""
    return {"name": "stderr", "text": text}


def limits_from_env(environ: Any = os.environ) -> tuple[int, int]:
    """The (run, message) limits a kernel was started with: ``CODEBOX_KERNEL_OUTPUT_LIMIT``
    and ``CODEBOX_KERNEL_MESSAGE_LIMIT``, else the defaults."""
    run = _positive(environ.get("CODEBOX_KERNEL_OUTPUT_LIMIT")) or OUTPUT_LIMIT
    message = _positive(environ.get("CODEBOX_KERNEL_MESSAGE_LIMIT")) or MESSAGE_LIMIT
    return run, min(run, message)


def _positive(raw: Any) -> int | None:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def dumps(content: dict[str, Any]) -> bytes:
    """A message part as the Jupyter session packs it."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False,
                      default=str).encode("utf8", errors="surrogateescape")
