"""The request and answer bodies of the REST API (see docs/protocol.md), for validation and for
the OpenAPI document. Run results are `codebox.CodeBoxOutput` itself."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _well_formed(value: str) -> str:
    # JSON's "\ud800" escapes decode to lone surrogates, which no kernel message can carry.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"not valid Unicode: a lone surrogate at position {exc.start}") from None
    return value


Text = Annotated[str, AfterValidator(_well_formed)]
"""A string that can be encoded: no lone surrogates."""

# The rules the endpoints enforce, written for the OpenAPI document (the endpoints check
# them with the same code as every box: `codebox._paths`, `codebox._commands`).
_UNSAFE = r"\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
FILE_NAME_PATTERN = (
    r"^(?!\s*$)"  # not blank
    r"(?![/\\])(?!.:)"  # not absolute (nor a drive, as in c:)
    r"(?!(?:.*[/\\])?\.\.(?:[/\\]|$))"  # no '..' component
    r"(?!(?:\.(?:[/\\]+|$))+$)"  # names a file, not the box's own directory
    r"(?!.*[^/\\]{256})"  # components of at most 255 characters
    rf"[^{_UNSAFE}]+$"  # no control or bidirectional characters
)
FILE_NAME: dict[str, Any] = {
    "pattern": FILE_NAME_PATTERN,
    "description": "A path relative to the session's directory: not absolute, no `..` "
    "component, no control or bidirectional characters, each component at most 255 "
    "UTF-8 bytes.",
}
NO_NUL = r"^[^\x00]*$"
ENV: dict[str, Any] = {"propertyNames": {"pattern": r"^[^=\x00]+$"},
                       "additionalProperties": {"type": "string", "pattern": NO_NUL}}


class Capabilities(BaseModel):
    version: str = Field(description="The server's codebox version.")
    extensions: list[str] = Field(description="The protocol extensions the server offers.")
    templates: list[str] = Field(default_factory=list,
                                 description="The templates a session may start from.")


Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class StartRequest(BaseModel):
    env: dict[Text, Text] = Field(
        default_factory=dict, description="Environment variables set in the session's kernel "
        "(names without `=` or NUL, values without NUL).", json_schema_extra=ENV,
    )
    lifetime: Seconds | None = Field(
        None, description="Seconds after its last use when the session stops by itself "
        "(at most the server's `max_lifetime`; default: the server's idle timeout)."
    )
    template: Text | None = Field(
        None, min_length=1, description="Start from this template of the server (see "
        "`templates` in the capabilities); unknown names are a 404."
    )
    snapshot: Text | None = Field(
        None, min_length=1, description="Start from this snapshot of the key's (its files, "
        "packages and variables); another key's, or an unknown one, is a 404."
    )


class Started(BaseModel):
    id: int = Field(description="The new session's id.")


class Status(BaseModel):
    status: str


class RunRequest(BaseModel):
    code: Text = Field(description="Python source to run in the session's kernel.")
    timeout: float | None = Field(
        None, gt=0, description="Seconds before the run is interrupted (at most the server's "
        "run timeout, which applies when this is absent)."
    )


PackageName = Annotated[str, Field(pattern=r"^[^\s-]", description="A pip requirement; "
                                   "not an option (no leading `-`)."),
                        AfterValidator(_well_formed)]


class InstallRequest(BaseModel):
    # One of the two is needed (the endpoint says so too; this tells the OpenAPI document).
    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": [name], "properties": {name: {"not": {"type": "null"}}}}
        for name in ("package_name", "package_names")]})

    package_name: PackageName | None = Field(None, description="One package (core protocol).")
    package_names: list[PackageName] | None = Field(
        None, min_length=1,
        description="Several packages; used instead of `package_name` when given.",
    )


class DownloadRequest(BaseModel):
    file_name: Text = Field(min_length=1, description="The file's relative path in the "
                            "session.", json_schema_extra=FILE_NAME)


class Uploaded(BaseModel):
    status: str = Field(description="Names the file.")
    name: str
    size: int


class FileEntry(BaseModel):
    name: str
    size: int | None = None


class Files(BaseModel):
    files: list[FileEntry]


class Health(BaseModel):
    status: str
    version: str
    sessions: int


_COMMAND: dict[str, Any] = {"anyOf": [
    {"type": "string", "pattern": r"^[^\x00]*[^\s\x00][^\x00]*$"},
    {"type": "array", "minItems": 1, "prefixItems": [{"type": "string", "minLength": 1}],
     "items": {"type": "string", "pattern": NO_NUL}},
]}
_CWD: dict[str, Any] = {"anyOf": [
    {"type": "string", "pattern": r"^\./?$|" + FILE_NAME_PATTERN}, {"type": "null"}]}


class ShellRequest(BaseModel):
    command: Text | list[Text] = Field(
        description="A string run by /bin/sh -c (not blank), or a list [program, *args] "
        "run directly (a program named); no NUL bytes.", json_schema_extra=_COMMAND,
    )
    timeout: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="Seconds before the command and every "
        "process it started are ended (at most the server's run timeout, which applies "
        "when this is absent)."
    )
    cwd: Text | None = Field(None, description="Directory to start in, relative to the "
                             "session (the file-name rules of every path).",
                             json_schema_extra=_CWD)
    env: dict[Text, Text] | None = Field(None, description="Variables added for this command "
                                         "(names without `=` or NUL, values without NUL).",
                                         json_schema_extra={"anyOf": [
                                             {"type": "object", **ENV}, {"type": "null"}]})


class PathRequest(BaseModel):
    path: Text = Field(min_length=1, description="A path relative to the session's directory.",
                       json_schema_extra=FILE_NAME)


class RenameRequest(BaseModel):
    source: Text = Field(min_length=1, description="The path to move, relative to the "
                         "session's directory.", json_schema_extra=FILE_NAME)
    destination: Text = Field(min_length=1, json_schema_extra=FILE_NAME,
                              description="Its new path; missing parents are created.")


class FileInfo(BaseModel):
    name: str
    size: int | None = Field(None, description="Bytes; null for a directory.")
    is_dir: bool = False
    modified: datetime | None = Field(None, description="Last modification (ISO 8601, UTC).")


class SessionInfo(BaseModel):
    id: int = Field(description="The session's id.")
    status: str = Field(description="`starting`, `running`, `pausing`, `paused`, "
                        "`resuming` or `stopping`.")
    created: datetime = Field(description="When it was started (ISO 8601, UTC).")
    last_used: datetime = Field(description="When it was last used (ISO 8601, UTC).")
    template: str | None = Field(None, description="The template it started from, if any.")
    expires: datetime | None = Field(
        None, description="When it stops by itself unless used again (ISO 8601, UTC).")


class SnapshotInfo(BaseModel):
    id: str = Field(description="The snapshot's id (for `snapshot` on start, and DELETE).")
    created: datetime = Field(description="When it was taken (ISO 8601, UTC).")
    size: int = Field(description="Bytes it takes (they count toward the key's quota).")
    unpicklable: list[str] = Field(description="The variables that could not be saved.")


class LifetimeRequest(BaseModel):
    seconds: Seconds | None = Field(
        description="Seconds after its last use (from now on) when the session stops by "
        "itself, at most the server's `max_lifetime`; null: the server's idle timeout."
    )


class Lifetime(BaseModel):
    expires: datetime | None = Field(
        description="When the session stops by itself unless used again (ISO 8601, UTC).")
