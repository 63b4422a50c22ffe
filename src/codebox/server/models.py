"""The request and answer bodies of the REST API (see docs/protocol.md), for validation and for
the OpenAPI document. Run results are `codebox.CodeBoxOutput` itself."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Capabilities(BaseModel):
    version: str = Field(description="The server's codebox version.")
    extensions: list[str] = Field(description="The protocol extensions the server offers.")


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
