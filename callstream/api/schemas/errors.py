"""The error envelopes, as OpenAPI models: what every route may answer besides success.

The server builds these bodies itself (``callstream.api.errors``); the models exist so
the OpenAPI document describes them and clients (and schemathesis) can check them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorSource(BaseModel):
    pointer: str | None = Field(None, description="JSON pointer to the offending body field.")
    parameter: str | None = Field(None, description="The offending query parameter.")


class Error(BaseModel):
    code: str = Field(description="Telnyx error code, a string of digits.")
    title: str
    detail: str | None = None
    source: ErrorSource | None = None


class ErrorResponse(BaseModel):
    errors: list[Error]


class TexmlError(BaseModel):
    detail: str


class TexmlErrorResponse(BaseModel):
    """TeXML's own shape for an unknown call or stream."""

    errors: list[TexmlError]


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


#: Documented on every operation (413 comes from the request-size limit, before routing).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("The body is not a JSON object (code 10015)."),
    401: _error("Missing or invalid API key (code 10009)."),
    404: _error("Unknown route or resource (code 10005)."),
    413: _error("The request body is too large."),
    422: _error("A field is missing or invalid; `source` names it."),
}
#: A dial on a draining node (docs/cluster.md, "Draining a node").
DRAINING_RESPONSE: dict[int | str, dict[str, Any]] = {
    503: _error("This node is draining and places no new calls (code 10007); retry on "
                "another node."),
}
TEXML_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": TexmlErrorResponse, "description": "Unknown call or stream."},
}
