"""The host's package index configuration, as uv needs it.

uv reads its own configuration (``UV_*`` variables, ``uv.toml``) but not pip's, and a
template must be built from the index the host names: so pip's settings — its
configuration files and ``PIP_*`` variables, in pip's order of precedence — are translated
into uv's options, unless uv has index settings of its own (then uv's win, as they would
for ``uv pip install`` on the host). Local indexes and wheel directories (``file://``
URLs, paths) are listed, to be made readable inside the build's sandbox.

`translate` is pure (tested in memory); `host_index` reads the files and the environment.
"""

from __future__ import annotations

import configparser
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

# pip's settings that choose where packages come from (several values: whitespace apart).
_MULTI = ("extra-index-url", "find-links", "trusted-host", "constraint")
_SINGLE = ("index-url", "no-index", "cert", "timeout", "default-timeout")
# uv's own settings of the same kind: any of them set means uv is configured already.
_UV_INDEX_VARS = ("UV_DEFAULT_INDEX", "UV_INDEX_URL", "UV_INDEX", "UV_EXTRA_INDEX_URL",
                  "UV_FIND_LINKS", "UV_NO_INDEX")
_UV_TOML_KEYS = ("index", "find-links", "no-index")
_TRUE = ("1", "true", "yes", "on")
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@dataclass
class IndexConfig:
    """What a build needs to reach the host's index: uv options, variables, and the local
    paths (indexes, wheel directories, files) it reads."""

    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    read_only: list[str] = field(default_factory=list)


def pip_settings(files: Sequence[str], environ: Mapping[str, str]) -> dict[str, list[str]]:
    """pip's effective settings from the texts of its configuration ``files`` (in pip's
    order: global, user, site, ``PIP_CONFIG_FILE``; later ones win, ``[install]`` over
    ``[global]``) and the ``PIP_*`` variables of ``environ`` (which win over every file)."""
    out: dict[str, list[str]] = {}
    for text in files:
        parser = configparser.RawConfigParser()
        try:
            parser.read_string(text)
        except configparser.Error:
            continue  # pip would refuse it; the build goes on with what is readable
        for section in ("global", "install"):
            if not parser.has_section(section):
                continue
            for key, value in parser.items(section):
                name = key.replace("_", "-")
                if name in _MULTI or name in _SINGLE:
                    out[name] = value.split() if name in _MULTI else [value.strip()]
    for key, value in environ.items():
        if not key.startswith("PIP_"):
            continue
        name = key[4:].lower().replace("_", "-")
        if name in _MULTI or name in _SINGLE:
            out[name] = value.split() if name in _MULTI else [value.strip()]
    return out


def translate(pip: Mapping[str, list[str]], environ: Mapping[str, str], *,
              uv_toml: str = "") -> IndexConfig:
    """uv options for pip's settings ``pip``, honouring uv's own (``UV_*`` in ``environ``,
    the text of the ``uv.toml`` files uv will read)."""
    config = IndexConfig()
    uv_has_index = any(environ.get(name) for name in _UV_INDEX_VARS) or any(
        f"\n{key}" in f"\n{uv_toml}" or f"[[{key}]]" in uv_toml for key in _UV_TOML_KEYS)
    if not uv_has_index:
        indexes = 0
        if pip.get("index-url"):
            config.args += ["--default-index", pip["index-url"][0]]
            config.read_only += _local_index(pip["index-url"][0])
        if pip.get("no-index", [""])[0].lower() in _TRUE:
            config.args.append("--no-index")
        else:
            indexes = 1
        for url in pip.get("extra-index-url", []):
            config.args += ["--index", url]
            config.read_only += _local_index(url)
            indexes += 1
        for location in pip.get("find-links", []):
            config.args += ["--find-links", location]
            config.read_only += _local_path(location)
        if indexes > 1 and not environ.get("UV_INDEX_STRATEGY"):
            # pip takes the best version any index offers; uv's default takes the first
            # index that has the package at all.
            config.args += ["--index-strategy", "unsafe-best-match"]
    for host in pip.get("trusted-host", []):
        if not environ.get("UV_INSECURE_HOST"):
            config.args += ["--allow-insecure-host", host]
    for constraint in pip.get("constraint", []):
        if not environ.get("UV_CONSTRAINT"):
            config.args += ["--constraint", constraint]
            config.read_only += _local_path(constraint)
    # The certificates the host trusts (uv reads SSL_CERT_FILE / SSL_CERT_DIR).
    cert = environ.get("SSL_CERT_FILE") or (pip.get("cert") or [""])[0]
    if cert:
        config.env["SSL_CERT_FILE"] = cert
        config.read_only.append(cert)
    if environ.get("SSL_CERT_DIR"):
        config.env["SSL_CERT_DIR"] = environ["SSL_CERT_DIR"]
        config.read_only.append(environ["SSL_CERT_DIR"])
    for key, value in environ.items():  # the host's proxies lead to its index
        if key.lower() in _PROXY_VARS:
            config.env[key] = value
    timeout = (pip.get("timeout") or pip.get("default-timeout") or [""])[0]
    if timeout and not environ.get("UV_HTTP_TIMEOUT"):
        config.env["UV_HTTP_TIMEOUT"] = timeout
    config.read_only = list(dict.fromkeys(p for p in config.read_only if p))
    return config


def _file_path(location: str) -> str | None:
    """The local path a ``file://`` URL or a plain path names; None for a remote URL."""
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return unquote(parsed.path)
    if not parsed.scheme:
        return os.path.abspath(location)
    return None


def _local_index(url: str) -> list[str]:
    """What must be readable for a local index: its parent too, where a "simple" index's
    relative links (``../../files/...``) lead."""
    path = _file_path(url)
    if path is None:
        return []
    path = path.rstrip("/")
    return [os.path.dirname(path) or path]


def _local_path(location: str) -> list[str]:
    path = _file_path(location)
    return [] if path is None else [path]


# -- the host's files ------------------------------------------------------------------------


def pip_config_files(environ: Mapping[str, str]) -> list[Path]:
    """pip's configuration files on this machine, in its order (later ones win)."""
    env_file = environ.get("PIP_CONFIG_FILE")
    if env_file == os.devnull:
        return []  # pip reads no file at all then
    dirs = environ.get("XDG_CONFIG_DIRS") or "/etc/xdg"
    files = [Path(d) / "pip" / "pip.conf" for d in dirs.split(os.pathsep) if d]
    files.append(Path("/etc/pip.conf"))
    if not (env_file and os.path.exists(env_file)):
        home = Path(environ.get("HOME") or Path.home())
        config_home = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
        files += [home / ".pip" / "pip.conf", config_home / "pip" / "pip.conf"]
    files.append(Path(sys.prefix) / "pip.conf")
    if env_file:
        files.append(Path(env_file))
    return files


def uv_config_files(environ: Mapping[str, str]) -> list[Path]:
    """The ``uv.toml`` files uv reads (system, then user), or the one ``UV_CONFIG_FILE``
    names; none with ``UV_NO_CONFIG``."""
    if environ.get("UV_NO_CONFIG", "").lower() in _TRUE:
        return []
    if environ.get("UV_CONFIG_FILE"):
        return [Path(environ["UV_CONFIG_FILE"])]
    dirs = environ.get("XDG_CONFIG_DIRS") or "/etc/xdg"
    files = [Path(d) / "uv" / "uv.toml" for d in dirs.split(os.pathsep) if d]
    files.append(Path("/etc/uv/uv.toml"))
    home = Path(environ.get("HOME") or Path.home())
    files.append(Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "uv" / "uv.toml")
    return files


def _read(paths: Sequence[Path]) -> list[tuple[Path, str]]:
    out = []
    for path in paths:
        try:
            out.append((path, path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError):
            continue
    return out


def host_index(environ: Mapping[str, str] | None = None) -> IndexConfig:
    """The host's index configuration for a build: pip's translated, uv's own passed on
    (its ``UV_*`` variables, and its ``uv.toml`` files made readable where uv looks)."""
    environ = os.environ if environ is None else environ
    pip = pip_settings([text for _, text in _read(pip_config_files(environ))], environ)
    uv_files = _read(uv_config_files(environ))
    config = translate(pip, environ, uv_toml="\n".join(text for _, text in uv_files))
    # uv finds (and merges) them inside the sandbox where it looks on the host.
    config.read_only += [str(path) for path, _ in uv_files]
    for name in ("XDG_CONFIG_HOME", "XDG_CONFIG_DIRS"):
        if environ.get(name):
            config.env[name] = environ[name]
    if "XDG_CONFIG_HOME" not in config.env:
        config.env["XDG_CONFIG_HOME"] = str(Path(environ.get("HOME") or Path.home()) / ".config")
    for key, value in environ.items():
        if key.startswith("UV_") and key not in config.env:
            config.env[key] = value
    return config
