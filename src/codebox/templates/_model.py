"""``Template``: what a box's environment holds, as data. Pure: no I/O, no subprocess.

Equal templates are one template: `Template.id` is a digest of the *resolved* content, so
two templates that would build the same environment share one id (and one build). What
counts, after normalisation:

- the requirements: ``packages`` and the lines of ``requirements`` together, as a sorted
  set of canonical specifiers (names normalised as PEP 503 says, extras sorted, version
  specifiers sorted, markers and URLs as `packaging` prints them); comments, blank lines
  and order do not count, nor whether a line came from ``packages`` or ``requirements``;
- ``preload``, in order (imports run in that order), each as ``"module"`` or
  ``"module as name"`` with single spaces;
- ``env``;
- ``python`` as given, or the running interpreter's full version (``"3.11.7"``) when not
  given;
- what codebox adds to every template (`KERNEL_REQUIREMENTS`) and the layout version of a
  build (`BUILD_FORMAT`): a codebox that builds differently builds anew.

The versions the resolver picks do not count: a template is built once per machine, and
later boxes reuse that build until it is removed.
"""

from __future__ import annotations

import hashlib
import json
import keyword
import re
import sys
from functools import cached_property
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .._template_kernel import KERNEL_NAME_PREFIX

BUILD_FORMAT = 1
"""The layout of a built template; part of every id."""

KERNEL_REQUIREMENTS = ("ipykernel>=6.29,<8", "pip", "cloudpickle>=3.0")
"""Added to every template: the kernel itself (the range codebox's own gateway speaks),
pip, which `install` runs, and cloudpickle, which snapshots pickle the variables with."""


_MODULE = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_PRELOAD = re.compile(rf"\s*({_MODULE})(?:\s+as\s+([A-Za-z_][A-Za-z0-9_]*))?\s*")
_PYTHON = re.compile(r"[A-Za-z0-9._+@/-]+")
_ID_LENGTH = 24  # hex digits of SHA-256: 96 bits


def canonical_requirement(text: str) -> str:
    """One requirement specifier in its canonical form.

    Raises:
        ValueError: It is not a requirement (an option such as ``-r``, ``-e`` or
            ``--index-url`` included: the text of a template is self-contained, and its
            index is the host's).
    """
    line = text.strip()
    if line.startswith("-"):
        raise ValueError(f"{line!r}: a template takes requirement specifiers only, not "
                         "options (-r, -c, -e, --index-url, ...)")
    try:
        req = Requirement(line)
    except InvalidRequirement as exc:
        raise ValueError(f"not a requirement: {line!r} ({exc})") from None
    extras = f"[{','.join(sorted(canonicalize_name(e) for e in req.extras))}]" if req.extras else ""
    if req.url:
        out = f"{canonicalize_name(req.name)}{extras} @ {req.url}"
        return f"{out} ; {req.marker}" if req.marker else out
    out = f"{canonicalize_name(req.name)}{extras}{req.specifier}"
    return f"{out}; {req.marker}" if req.marker else out


def requirement_lines(text: str) -> list[str]:
    """The requirement lines of a requirements file's text: comments (``#`` at the start of
    a line or after whitespace), blank lines and line continuations handled."""
    joined = re.sub(r"\\\r?\n", "", text)
    lines = []
    for raw in joined.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if line:
            lines.append(line)
    return lines


def _canonical_preload(entry: str) -> str:
    match = _PRELOAD.fullmatch(entry) if isinstance(entry, str) else None
    if match is None:
        raise ValueError(f"preload entries are 'module' or 'module as name', not {entry!r}")
    module, name = match.groups()
    for part in [*module.split("."), *([name] if name else [])]:
        if keyword.iskeyword(part):
            raise ValueError(f"preload {entry!r}: {part!r} is a Python keyword")
    return f"{module} as {name}" if name else module


def running_python() -> str:
    """The full version of this interpreter (``"3.11.7"``): a template's default."""
    return "{}.{}.{}".format(*sys.version_info[:3])


class Template(BaseModel):
    """The environment a box starts with: packages installed, modules already imported.

    Built once per machine with uv into a read-only environment (see `build_template`);
    every later box of an equal template reuses it.

    Attributes:
        packages: Requirement specifiers (``"pandas==2.*"``, ``"matplotlib"``).
        requirements: The text of a requirements file (specifiers, comments; no options).
        python: A Python version uv can find (``"3.12"``) or an interpreter's path;
            default: the Python running codebox.
        preload: Modules imported and bound in the kernel before a box gets it, each
            ``"module"`` or ``"module as name"`` (``"pandas as pd"``).
        env: Environment variables of the template's kernels.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    packages: list[str] = Field(default_factory=list)
    requirements: str | None = None
    python: str | None = None
    preload: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("packages")
    @classmethod
    def _check_packages(cls, value: list[str]) -> list[str]:
        for item in value:
            canonical_requirement(item)
        return value

    @field_validator("requirements")
    @classmethod
    def _check_requirements(cls, value: str | None) -> str | None:
        for line in requirement_lines(value or ""):
            canonical_requirement(line)
        return value

    @field_validator("python")
    @classmethod
    def _check_python(cls, value: str | None) -> str | None:
        if value is not None and not _PYTHON.fullmatch(value.strip()):
            raise ValueError(f"python must be a version or an interpreter's path, not {value!r}")
        return value.strip() if value is not None else None

    @field_validator("preload")
    @classmethod
    def _check_preload(cls, value: list[str]) -> list[str]:
        for entry in value:
            _canonical_preload(entry)
        return value

    @field_validator("env")
    @classmethod
    def _check_env(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) or "\0" in item:
                raise ValueError(f"invalid environment variable {key!r}")
        return value

    # -- the resolved content ---------------------------------------------------------

    @cached_property
    def specifiers(self) -> list[str]:
        """Every requirement of the template, canonical, sorted, once each."""
        lines = [*self.packages, *requirement_lines(self.requirements or "")]
        return sorted({canonical_requirement(line) for line in lines})

    @cached_property
    def imports(self) -> list[str]:
        """``preload`` normalised: ``"module"`` or ``"module as name"``."""
        return [_canonical_preload(entry) for entry in self.preload]

    @cached_property
    def python_version(self) -> str:
        """``python``, or the running interpreter's full version."""
        return self.python or running_python()

    def content(self) -> dict[str, Any]:
        """What the id is a digest of (see the module's docstring)."""
        return {"format": BUILD_FORMAT, "requirements": self.specifiers,
                "kernel": list(KERNEL_REQUIREMENTS), "preload": self.imports,
                "env": dict(sorted(self.env.items())), "python": self.python_version}

    @cached_property
    def id(self) -> str:
        """The template's id: a digest of its resolved content (hex)."""
        blob = json.dumps(self.content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:_ID_LENGTH]

    @property
    def kernel_name(self) -> str:
        """The kernelspec of the template's kernels (``codebox-template-<id>``)."""
        return KERNEL_NAME_PREFIX + self.id

    def preload_code(self) -> str:
        """The import statements of ``preload``, one per line."""
        return "\n".join(f"import {entry}" for entry in self.imports)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Template):
            return NotImplemented
        return self.id == other.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"Template(id={self.id!r}, packages={self.specifiers!r}, preload={self.imports!r})"

    # -- reading one from a file ------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | Path) -> Template:
        """A template from a file: TOML or JSON with the fields of `Template` (by suffix
        ``.toml`` / ``.json``), else the text of a requirements file.

        Raises:
            ValueError: The file cannot be read or does not describe a template.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read the template file {path}: {exc}") from None
        try:
            return cls.from_text(text, suffix=path.suffix)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    @classmethod
    def from_text(cls, text: str, *, suffix: str = ".txt") -> Template:
        """A template from a file's text (see `from_file`; ``suffix`` says the format).

        Raises:
            ValueError: The text does not describe a template.
        """
        suffix = suffix.lower()
        if suffix == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not JSON: {exc}") from None
        elif suffix == ".toml":
            data = _toml(text)
        else:
            return cls(requirements=text)
        if not isinstance(data, dict):
            raise ValueError("a template file holds one table (object) of fields")
        return cls.model_validate(data)


def _toml(text: str) -> Any:
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"not TOML: {exc}") from None

