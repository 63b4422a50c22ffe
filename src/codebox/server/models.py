"""The request and answer bodies of the REST API (see docs/protocol.md), for validation and for
the OpenAPI document. Run results are `codebox.CodeBoxOutput` itself."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class Capabilities(BaseModel):
    version: str = Field(description="The server's codebox version.")
    extensions: list[str] = Field(description="The protocol extensions the server offers.")


class StartRequest(BaseModel):
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment variables set in the session's kernel."
    )


class Started(BaseModel):
    id: int = Field(description="The new session's id.")


class Status(BaseModel):
    status: str


class RunRequest(BaseModel):
    code: str = Field(description="Python source to run in the session's kernel.")
    timeout: float | None = Field(
        None, gt=0, description="Seconds before the run is interrupted (at most the server's "
        "run timeout, which applies when this is absent)."
    )


class InstallRequest(BaseModel):
    package_name: str | None = Field(None, description="One package (core protocol).")
    package_names: list[str] | None = Field(
        None, description="Several packages; used instead of `package_name` when given."
    )


class DownloadRequest(BaseModel):
    file_name: str = Field(description="The file's relative path in the session.")


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
    command: str | list[str] = Field(
        description="A string run by /bin/sh -c, or a list [program, *args] run directly."
    )
    timeout: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="Seconds before the command and every "
        "process it started are ended (at most the server's run timeout, which applies "
        "when this is absent)."
    )
    cwd: str | None = Field(None, description="Directory to start in, relative to the session.")
    env: dict[str, str] | None = Field(None, description="Variables added for this command.")


class PathRequest(BaseModel):
    path: str = Field(description="A path relative to the session's directory.")


class RenameRequest(BaseModel):
    source: str = Field(description="The path to move, relative to the session's directory.")
    destination: str = Field(description="Its new path; missing parents are created.")


class FileInfo(BaseModel):
    name: str
    size: int | None = Field(None, description="Bytes; null for a directory.")
    is_dir: bool = False
    modified: datetime | None = Field(None, description="Last modification (ISO 8601, UTC).")
