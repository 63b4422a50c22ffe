"""The request and answer bodies of the REST API (see docs/protocol.md), for validation and for
the OpenAPI document. Run results are `codebox.CodeBoxOutput` itself."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

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


class Capabilities(BaseModel):
    version: str = Field(description="The server's codebox version.")
    extensions: list[str] = Field(description="The protocol extensions the server offers.")


class StartRequest(BaseModel):
    env: dict[Text, Text] = Field(
        default_factory=dict, description="Environment variables set in the session's kernel."
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
                            "session.")


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


class ShellRequest(BaseModel):
    command: Text | list[Text] = Field(
        description="A string run by /bin/sh -c, or a list [program, *args] run directly."
    )
    timeout: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="Seconds before the command and every "
        "process it started are ended (at most the server's run timeout, which applies "
        "when this is absent)."
    )
    cwd: Text | None = Field(None, description="Directory to start in, relative to the "
                             "session.")
    env: dict[Text, Text] | None = Field(None, description="Variables added for this command.")


class PathRequest(BaseModel):
    path: Text = Field(min_length=1, description="A path relative to the session's directory.")


class RenameRequest(BaseModel):
    source: Text = Field(min_length=1, description="The path to move, relative to the "
                         "session's directory.")
    destination: Text = Field(min_length=1,
                              description="Its new path; missing parents are created.")


class FileInfo(BaseModel):
    name: str
    size: int | None = Field(None, description="Bytes; null for a directory.")
    is_dir: bool = False
    modified: datetime | None = Field(None, description="Last modification (ISO 8601, UTC).")
