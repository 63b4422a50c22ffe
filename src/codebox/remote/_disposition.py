"""The file name in a ``Content-Disposition`` header (RFC 6266, with RFC 5987's
``filename*``), read without I/O."""

from __future__ import annotations

import urllib.parse

from .._paths import check_file_name
from ..errors import CodeBoxError


def _header_params(value: str) -> dict[str, str]:
    """The parameters of a header value like ``attachment; filename="a;b.txt"``."""
    params: dict[str, str] = {}
    i, n = value.find(";"), len(value)
    if i < 0:
        return params
    i += 1
    while i < n:
        eq, semi = value.find("=", i), value.find(";", i)
        if eq < 0 or (0 <= semi < eq):
            i = n if semi < 0 else semi + 1  # a parameter without a value
            continue
        name = value[i:eq].strip().lower()
        i = eq + 1
        while i < n and value[i] in " \t":
            i += 1
        if i < n and value[i] == '"':
            chars, i = [], i + 1
            while i < n and value[i] != '"':
                if value[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(value[i])
                i += 1
            text = "".join(chars)
            semi = value.find(";", i)
            i = n if semi < 0 else semi + 1
        else:
            semi = value.find(";", i)
            end = n if semi < 0 else semi
            text, i = value[i:end].strip(), end + 1
        params.setdefault(name, text)
    return params


def _decode_ext_value(value: str) -> str | None:
    """An RFC 5987 ``charset'language'percent-encoded`` value, decoded."""
    charset, sep, rest = value.partition("'")
    _language, sep2, encoded = rest.partition("'")
    if not sep or not sep2 or charset.lower() not in ("utf-8", "iso-8859-1"):
        return None
    try:
        return urllib.parse.unquote(encoded, encoding=charset, errors="strict")
    except (UnicodeDecodeError, LookupError):
        return None


def parse_content_disposition(value: str | None) -> str | None:
    """The file name of a ``Content-Disposition`` header: ``filename*`` (RFC 5987) first,
    then ``filename`` (quoted or not); ``None`` if there is none."""
    if not value:
        return None
    params = _header_params(value)
    extended = params.get("filename*")
    name = _decode_ext_value(extended) if extended else None
    return name or params.get("filename") or None


def box_name(name: str | None) -> str | None:
    """A name the server sent, if it is a valid box file name."""
    if name is None:
        return None
    try:
        return check_file_name(name)
    except CodeBoxError:
        return None
