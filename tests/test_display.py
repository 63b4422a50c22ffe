"""Notebook display of outputs and chunks, through IPython's own display formatter."""

from __future__ import annotations

import base64

import pytest
from IPython.core.formatters import DisplayFormatter

from codebox import CodeBoxOutput, ExecError, OutputChunk

PNG_BYTES = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8
PNG = base64.b64encode(PNG_BYTES).decode()


def shown(obj: object) -> dict:
    """What Jupyter would display: the MIME bundle IPython builds for ``obj``."""
    data, _ = DisplayFormatter().format(obj)
    return data


def test_an_output_shows_every_chunk_in_order_as_html():
    out = CodeBoxOutput.from_chunks(
        [OutputChunk(type="stdout", content="a < b\n"), OutputChunk(type="image/png", content=PNG),
         OutputChunk(type="text/html", content="<table><tr><td>1</td></tr></table>"),
         OutputChunk(type="stderr", content="careful")],
    )
    data = shown(out)
    html = data["text/html"]
    assert html.index("a &lt; b") < html.index(f"data:image/png;base64,{PNG}") < html.index(
        "<table>") < html.index("careful")
    assert data["image/png"] == PNG  # the first image, as Jupyter carries PNGs
    assert out._repr_png_() == PNG_BYTES
    assert "CodeBoxOutput(type='image/png'" in data["text/plain"]


def test_an_error_shows_its_traceback():
    err = ExecError(name="ZeroDivisionError", value="division by zero",
                    traceback="Cell In[1], line 1\n----> 1 1/0\n\n"
                              "ZeroDivisionError: division by zero")
    out = CodeBoxOutput.from_chunks(
        [OutputChunk(type="stdout", content="before\n"),
         OutputChunk(type="error", content=str(err))], error=err)
    data = shown(out)
    assert "----&gt; 1 1/0" in data["text/html"]
    assert data["text/html"].count("ZeroDivisionError: division by zero") == 1
    assert data["text/plain"].startswith("ZeroDivisionError: division by zero\nCell In[1]")
    assert "image/png" not in data and out._repr_png_() is None


def test_a_text_output_is_plain_text_first():
    out = CodeBoxOutput.from_chunks([OutputChunk(type="text", content="42")], truncated=True)
    data = shown(out)
    assert data["text/plain"] == "42"
    assert "truncated" in data["text/html"]
    assert set(out._repr_mimebundle_(include=["text/plain"])) == {"text/plain"}
    assert "text/html" not in out._repr_mimebundle_(exclude=["text/html"])


@pytest.mark.parametrize("chunk, mime, value", [
    (OutputChunk(type="image/png", content=PNG), "image/png", PNG),
    (OutputChunk(type="text/html", content="<b>hi</b>"), "text/html", "<b>hi</b>"),
    (OutputChunk(type="image/svg+xml", content="<svg></svg>"), "image/svg+xml", "<svg></svg>"),
    (OutputChunk(type="application/json", content='{"a": [1]}'), "application/json", {"a": [1]}),
    (OutputChunk(type="stdout", content="hello"), "text/plain", "hello"),
])
def test_a_chunk_shows_as_its_own_mime_type(chunk, mime, value):
    data = shown(chunk)
    assert data[mime] == value
    assert "text/plain" in data


def test_a_png_chunk_gives_png_bytes_and_others_none():
    assert OutputChunk(type="image/png", content=PNG)._repr_png_() == PNG_BYTES
    assert OutputChunk(type="stdout", content="x")._repr_png_() is None
    html = OutputChunk(type="stderr", content="<oops>")._repr_html_()
    assert "&lt;oops&gt;" in html and "<oops>" not in html
