"""What a model reads of a box's results: text within a character budget, tracebacks cut
to their innermost frames, images with their alt text (pure functions, no I/O)."""

from __future__ import annotations

import base64
import posixpath
import re
from dataclasses import dataclass
from typing import Any, Literal

from ..schema import CodeBoxFile, CodeBoxOutput, CommandResult, OutputChunk

ToolFormat = Literal["openai", "anthropic"]
"""The vendor format of tool definitions and content blocks."""

DEFAULT_MAX_CHARS = 8_000
"""Default character budget of the text a tool result gives the model."""

DEFAULT_TRACEBACK_FRAMES = 3
"""Default number of innermost traceback frames shown to the model."""

DEFAULT_MAX_IMAGES = 4
"""Default number of images one tool result carries (the others are only mentioned)."""

_IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}
# Outputs a model can be shown as an image block (vendors accept PNG and JPEG alike).
_ATTACHABLE = {"image/png": "PNG", "image/jpeg": "JPEG"}
_ALT_MAX_CHARS = 300
_TEXT_KINDS = ("text", "text/html", "application/json", "text/markdown", "text/latex")


@dataclass(frozen=True)
class ToolImage:
    """An image for the model: base64 data (no data-URL prefix), its media type and, when
    the code gave one, its alt text (the display's ``text/plain``, e.g. ``<Figure size
    640x480 with 1 Axes>``). Image blocks have no place for the alt text: the result's text
    names it beside the image's number."""

    data: str
    media_type: str = "image/png"
    alt_text: str | None = None

    def to_block(self, format: ToolFormat) -> dict[str, Any]:
        """The image as a content block of the given format."""
        if format == "openai":
            url = f"data:{self.media_type};base64,{self.data}"
            return {"type": "image_url", "image_url": {"url": url}}
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": self.media_type, "data": self.data},
        }


def alt_text(chunk: OutputChunk) -> str | None:
    """The ``text/plain`` a display gave beside its richest part (``None`` if there is none,
    or if it is that part itself), within a few hundred characters."""
    plain = (chunk.data or {}).get("text/plain")
    if isinstance(plain, list):  # nbformat may split text into lines
        plain = "".join(map(str, plain))
    if not isinstance(plain, str) or not plain.strip() or chunk.type == "text":
        return None
    return truncate_middle(plain.strip(), _ALT_MAX_CHARS)


def truncate_middle(text: str, max_chars: int) -> str:
    """Keep ``text`` within ``max_chars`` characters: its head and its tail, with a note in
    between saying how much was cut (below about 100 characters, only the head is kept).
    """
    if len(text) <= max_chars:
        return text
    if max_chars <= 0:
        return ""
    # Budget the note for the largest number it can show, so the result always fits.
    keep = max_chars - len(_cut_note(len(text), text.count("\n") + 1))
    if keep < 20:
        return text[: max_chars - 1] + "…"
    head, tail = text[: keep * 2 // 5], text[len(text) - (keep - keep * 2 // 5):]
    newline = head.rfind("\n")
    if newline >= len(head) * 4 // 5:  # end the head on a line break when one is near
        head = head[: newline + 1]
    newline = tail.find("\n")
    if 0 <= newline <= len(tail) // 5:
        tail = tail[newline + 1:]
    middle = text[len(head): len(text) - len(tail)]
    return head + _cut_note(len(middle), middle.count("\n")) + tail


def _cut_note(chars: int, lines: int) -> str:
    return f"\n[... {chars} characters ({lines} line breaks) cut from the middle ...]\n"


_CHAINED = re.compile(
    r"^(The above exception was the direct cause of the following exception:"
    r"|During handling of the above exception, another exception occurred:)$",
    re.MULTILINE,
)


def last_frames(traceback: str, frames: int = DEFAULT_TRACEBACK_FRAMES) -> str:
    """The traceback with only its innermost ``frames`` frames, saying what was cut.

    Only the last exception of a chain is kept. A frame of the user's own code (IPython's
    ``Cell In[n]``) is kept too when the innermost frames are all in libraries, so the model
    sees which of its lines failed. Understands IPython's tracebacks (frames separated by
    blank lines) and plain Python ones (``  File ...`` lines); text it cannot split is
    returned unchanged.
    """
    sections = _CHAINED.split(traceback.strip("\n"))
    text = sections[-1].strip("\n")
    chained = (len(sections) - 1) // 2
    lines = text.splitlines()
    if any(line.startswith("  File ") for line in lines):
        return _chain_note(chained) + _last_python_frames(lines, frames)
    if lines and set(lines[0]) == {"-"}:  # IPython's rule above the header
        lines = lines[1:]
    if lines and "Traceback (most recent call last)" in lines[0]:
        lines = lines[1:]
    blocks = [b for b in "\n".join(lines).split("\n\n") if b.strip()]
    if len(blocks) < 2:
        return traceback.strip("\n")
    body, final = blocks[:-1], blocks[-1]
    kept = list(range(max(0, len(body) - frames), len(body)))
    own = [i for i in range(len(body)) if body[i].startswith("Cell In[")]
    if own and not any(i in own for i in kept):
        kept.insert(0, own[-1])
    parts, previous = [], -1
    for i in kept:
        if i > previous + 1:
            gap = i - previous - 1
            parts.append(f"[... {gap} frame{'s' if gap != 1 else ''} cut ...]")
        parts.append(body[i])
        previous = i
    title = "Traceback (most recent call last):\n"
    return _chain_note(chained) + title + "\n\n".join([*parts, final])


def _chain_note(chained: int) -> str:
    if not chained:
        return ""
    return f"[{chained} earlier exception{'s' if chained != 1 else ''} in the chain cut]\n"


def _last_python_frames(lines: list[str], frames: int) -> str:
    starts = [i for i, line in enumerate(lines) if line.startswith("  File ")]
    cut = max(0, len(starts) - frames)
    if not cut:
        return "\n".join(lines)
    head = lines[: starts[0]]
    kept = lines[starts[cut]:]
    note = f"  [... {cut} outer frame{'s' if cut != 1 else ''} cut ...]"
    return "\n".join([*head, note, *kept])


def format_output(
    output: CodeBoxOutput,
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    traceback_frames: int = DEFAULT_TRACEBACK_FRAMES,
    max_images: int = DEFAULT_MAX_IMAGES,
) -> tuple[str, list[ToolImage]]:
    """The text and the images a model gets for the result of a run.

    The outputs are kept in order; an error comes last with the innermost
    ``traceback_frames`` frames of its traceback. If the whole does not fit in
    ``max_chars``, the output keeps its head and tail (the note says what was cut) and the
    error is kept whole where it fits.

    Images (PNG and JPEG) are attached up to ``max_images``; the text marks each where it
    came, with its alt text when the display had one (``[image 1: PNG, attached: <Figure
    size 640x480 with 1 Axes>]``).

    Returns:
        ``(text, images)``.
    """
    parts: list[str] = []
    images: list[ToolImage] = []
    n_images = 0
    for chunk in output.chunks:
        kind = chunk.type
        if kind in ("stdout", "stderr"):
            parts.append(chunk.content)
        elif kind in _TEXT_KINDS:
            parts.append(_own_line(chunk.content, parts))
        elif kind in _ATTACHABLE:
            n_images += 1
            alt = alt_text(chunk)
            if len(images) < max_images:
                images.append(ToolImage(chunk.content, kind, alt))
                note = f"image {n_images}: {_ATTACHABLE[kind]}, attached"
            else:
                note = f"image {n_images}: {_ATTACHABLE[kind]}, not attached (limit)"
            parts.append(_own_line(f"[{note}: {alt}]" if alt else f"[{note}]", parts))
        elif kind == "error":
            continue  # told below, with its traceback
        else:
            note = f"{kind} output, {len(chunk.content)} characters"
            alt = alt_text(chunk)
            parts.append(_own_line(f"[{note}: {alt}]" if alt else f"[{note}]", parts))
    body = "".join(parts)
    if output.truncated:
        body += _own_line("[the box cut this output at its output limit]", [body])

    error_text = ""
    if output.error is not None:
        err = output.error
        tb = last_frames(err.traceback, traceback_frames) if err.traceback.strip() else ""
        if not (tb and str(err).strip() in tb):
            error_text = "\n".join(filter(None, [tb, str(err)]))
        else:
            error_text = tb
        if err.name == "TimeoutError":
            error_text += "\n(The kernel was interrupted; variables defined before are kept.)"
        error_text = truncate_middle(error_text, max_chars // 2)
    if not body.strip() and not error_text:
        return "[the code ran and printed nothing]", images

    sep = "\n" if body and not body.endswith("\n") and error_text else ""
    room = max_chars - len(error_text) - len(sep)
    body = truncate_middle(body, room) if body else ""
    return body + sep + error_text, images


def _own_line(text: str, before: list[str]) -> str:
    """``text`` on a line of its own after what came ``before``."""
    last = before[-1] if before else ""
    lead = "\n" if last and not last.endswith("\n") else ""
    return lead + text + ("" if text.endswith("\n") else "\n")


def format_command(result: CommandResult, *, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """The text a model gets for a shell command: its output in order (head and tail kept
    within ``max_chars``), then how it ended."""
    if result.timed_out:
        ending = ("[the command ran out of time and was ended, with every process it "
                  "started]")
    else:
        ending = f"[exit code {result.exit_code}]"
    if result.truncated:
        ending = "[the box cut this output at its output limit]\n" + ending
    body = str(result)
    if not body:
        return "[no output]\n" + ending
    sep = "" if body.endswith("\n") else "\n"
    return truncate_middle(body, max_chars - len(ending) - len(sep)) + sep + ending


def file_kind(file: CodeBoxFile) -> Literal["image", "text", "binary"]:
    """How a file is shown to a model: as an image (PNG, JPEG, GIF, WebP by extension), as
    text (UTF-8 without NUL bytes), or not at all (binary)."""
    if posixpath.splitext(file.name.lower())[1] in _IMAGE_TYPES:
        return "image"
    try:
        text = (file.content or b"").decode("utf-8")
    except UnicodeDecodeError:
        return "binary"
    return "binary" if "\x00" in text else "text"


def format_file(
    file: CodeBoxFile, *, max_chars: int = DEFAULT_MAX_CHARS
) -> tuple[str, list[ToolImage]]:
    """The text and the images a model gets for a downloaded file (see `file_kind`).

    Images come as an image, text within the budget; binary files are only described (the
    application has them on the result).
    """
    data = file.content or b""
    kind = file_kind(file)
    if kind == "image":
        media_type = _IMAGE_TYPES[posixpath.splitext(file.name.lower())[1]]
        image = ToolImage(base64.b64encode(data).decode("ascii"), media_type)
        return f"{file.name} ({len(data)} bytes): image attached", [image]
    if kind == "binary":
        return (f"{file.name} is a binary file of {len(data)} bytes; it was handed to the "
                "application, not shown."), []
    header = f"{file.name} ({len(data)} bytes):\n"
    return header + truncate_middle(data.decode("utf-8"), max_chars - len(header)), []


def format_files(files: list[CodeBoxFile], *, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """The text a model gets for a list of files: one ``name (size bytes)`` per line."""
    if not files:
        return "The working directory is empty."
    lines = [f"{f.name} ({f.size} bytes)" if f.size is not None else f.name for f in files]
    return truncate_middle("\n".join(lines), max_chars)

