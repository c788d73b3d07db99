"""RFC 9457 problem details: every error a client sees is `application/problem+json`.

`type` is a stable URI per kind of problem (clients branch on it), `detail` is for people,
and validation problems list the offending fields. Nothing escapes as a bare 500.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://crm.example/problems/"

log = structlog.get_logger(__name__)


class Problem(Exception):
    """Raise from anywhere in request handling to answer with a problem document."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})
        self.extensions = extensions


def validation_problem(field: str, message: str) -> Problem:
    """422 naming the field at fault, shaped like the framework's own validation errors.

    For rules pydantic cannot see (a uniqueness, a value read from the database), so that
    clients read every validation failure the same way.
    """
    return Problem(
        422,
        "validation-error",
        "Validation error",
        f"The request is not valid: {field}.",
        errors=[{"field": field, "message": message, "type": "value_error"}],
    )


def problem_response(
    status: int,
    kind: str,
    title: str,
    detail: str,
    *,
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    """Build the problem+json response itself."""
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + kind,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extensions)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


_KIND_BY_STATUS = {
    400: ("bad-request", "Bad request"),
    401: ("missing-token", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    409: ("conflict", "Conflict"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("validation-error", "Validation error"),
    429: ("too-many-requests", "Too many requests"),
}


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(
        exc.status,
        exc.kind,
        exc.title,
        exc.detail,
        instance=request.url.path,
        headers=exc.headers,
        **exc.extensions,
    )


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kind, title = _KIND_BY_STATUS.get(exc.status_code, ("http-error", "HTTP error"))
    detail = exc.detail if isinstance(exc.detail, str) else title
    return problem_response(
        exc.status_code, kind, title, detail, instance=request.url.path, headers=exc.headers
    )


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "field": ".".join(str(part) for part in error["loc"]),
            "message": error["msg"],
            "type": error["type"],
        }
        for error in exc.errors()
    ]
    fields = ", ".join(e["field"] for e in errors)
    return problem_response(
        422,
        "validation-error",
        "Validation error",
        f"The request is not valid: {fields}.",
        instance=request.url.path,
        errors=errors,
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("http.unhandled_error", path=request.url.path)
    return problem_response(
        500,
        "internal-error",
        "Internal error",
        "The server failed to handle this request; it has been logged.",
        instance=request.url.path,
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Make `app` answer every error as problem+json."""
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(Exception, _on_unexpected)
