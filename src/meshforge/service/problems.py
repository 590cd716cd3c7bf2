"""Errors as RFC 9457 problem details (``application/problem+json``) with a stable ``code``.

Every error response of the service has this body::

    {"type": "urn:meshforge:problem:<code>", "title": "...", "status": 413, "detail": "one line",
     "instance": "/v1/jobs", "code": "<code>", ...extension members}

``code`` is the stable, machine-readable part (documented in :data:`CODES`); ``detail`` is a one-line,
human-readable reason and never a traceback.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .storage import is_storage_full

log = logging.getLogger("meshforge.service")

PROBLEM_MEDIA_TYPE = "application/problem+json"

#: every ``code`` the service answers with, and what it means
CODES: dict[str, str] = {
    "bad_request": "the request is malformed",
    "unauthorized": "missing or wrong API key (Authorization: Bearer <key>)",
    "not_found": "no such resource (or the job expired, or belongs to another API key)",
    "method_not_allowed": "the method is not allowed on this path",
    "payload_too_large": "the upload is larger than the server's limit",
    "unsupported_media_type": "the upload is not a picture (or mesh) in a supported format",
    "invalid_image": "the picture cannot be used (truncated, corrupt, too many pixels, fully transparent)",
    "invalid_mesh": "the mesh cannot be read (truncated, corrupt, no triangles)",
    "invalid_options": "an option is missing, unknown or out of range",
    "backend_unavailable": "the backend cannot run on this server (its weights are missing); see GET /v1/backends",
    "invalid_cursor": "the paging cursor is not one this server issued",
    "idempotency_key_mismatch": "the Idempotency-Key was already used for a different request",
    "queue_full": "too many jobs are waiting; retry after Retry-After seconds",
    "job_not_finished": "the job has no result yet (or failed / was canceled)",
    "not_cancelable": "the job already finished",
    "no_raw": "the job keeps no raw reconstruction to re-export (not a generate job, or made by an older version)",
    "artifact_missing": "the job's files are gone (expired or deleted)",
    "not_ready": "the service is not ready",
    "shutting_down": "the server is draining before it stops and takes no new jobs; retry after Retry-After seconds",
    "insufficient_storage": "the server's disk is (nearly) full; retry later",
    "internal_error": "an unexpected error; the server log has the details",
}

#: the detail of a 507 ``insufficient_storage`` answer
STORAGE_FULL = "the server is out of disk space for this request; retry later"

_STATUS_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_options",
    429: "queue_full",
}

_TITLES: dict[int, str] = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
    507: "Insufficient Storage",
}


class ProblemError(StarletteHTTPException):
    """An error answered as problem details.

    It subclasses Starlette's ``HTTPException`` so it may be raised anywhere, including while the request
    body is being read (FastAPI re-raises those unchanged).

    Args:
        status: HTTP status code.
        code: stable machine-readable code (a key of :data:`CODES`).
        detail: one-line human-readable reason.
        headers: extra response headers (``Retry-After``, ``WWW-Authenticate``).
        **extra: extension members added to the body.
    """

    def __init__(
        self, status: int, code: str, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(status_code=status, detail=one_line(detail), headers=headers)
        self.code = code
        self.extra = extra


def one_line(text: object, limit: int = 500) -> str:
    """Collapse whitespace (no multi-line messages, no tracebacks) and cut to ``limit`` characters."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def hide_paths(text: str, names: Mapping[str, str]) -> str:
    """Replace server paths in a message by what the user knows them as.

    Args:
        text: the message.
        names: ``{path: name}``, e.g. the stored upload's path → its file name; each path is also matched
            in its resolved (absolute, symlink-free) form. Longer paths are replaced first.

    Returns:
        The message with no occurrence of those paths.
    """
    pairs: dict[str, str] = {}
    for path, name in names.items():
        pairs[path] = name
        try:
            pairs.setdefault(str(Path(path).resolve()), name)
        except (OSError, RuntimeError):  # pragma: no cover - an unresolvable path is matched as given
            pass
    for path in sorted(pairs, key=len, reverse=True):
        if path:
            text = text.replace(path, pairs[path])
    return text


def problem_response(
    request: Request | None,
    status: int,
    code: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """Build a ``application/problem+json`` response (RFC 9457)."""
    body: dict[str, Any] = {
        "type": f"urn:meshforge:problem:{code}",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": one_line(detail),
        "code": code,
    }
    if request is not None:
        body["instance"] = request.url.path
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_MEDIA_TYPE)


def install_handlers(app: FastAPI) -> None:
    """Answer every error (HTTP errors, validation errors, unexpected exceptions) as problem details."""

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if isinstance(exc, ProblemError):
            return problem_response(
                request, exc.status_code, exc.code, str(exc.detail), headers=exc.headers, **exc.extra
            )
        code = _STATUS_CODES.get(exc.status_code, "bad_request" if exc.status_code < 500 else "internal_error")
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "error")
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such resource: {request.url.path}"
        return problem_response(request, exc.status_code, code, detail, headers=exc.headers)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": one_line(e.get("msg", "invalid"))} for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(p for p in first["loc"] if p not in ("body", "query", "header", "path")) or "request"
        return problem_response(request, 422, "invalid_options", f"{where}: {first['msg']}", errors=errors)

    async def storage_error(request: Request, exc: Exception) -> JSONResponse:
        # OSError / sqlite3.Error: a full disk is the server's state, not a bug; anything else is unexpected
        if not is_storage_full(exc):
            raise exc
        log.warning("%s %s: the data dir's disk is full (%s)", request.method, request.url.path, one_line(exc))
        return problem_response(request, 507, "insufficient_storage", STORAGE_FULL)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem_response(request, 500, "internal_error", f"internal error ({type(exc).__name__})")

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(OSError, storage_error)
    app.add_exception_handler(sqlite3.Error, storage_error)

    async def backing_service_down(request: Request, exc: Exception) -> JSONResponse:
        # the object store or the PostgreSQL ledger cannot be reached: the server's state, retry later
        what = "object store" if type(exc).__module__.startswith("botocore") else "job ledger"
        log.warning("%s %s: the %s failed: %s", request.method, request.url.path, what, one_line(exc))
        code = "storage_unavailable" if what == "object store" else "ledger_unavailable"
        return problem_response(
            request, 503, code, f"the service's {what} cannot be reached; retry later", headers={"Retry-After": "5"}
        )

    try:
        from botocore.exceptions import BotoCoreError, ClientError

        app.add_exception_handler(BotoCoreError, backing_service_down)
        app.add_exception_handler(ClientError, backing_service_down)
    except ImportError:  # no object storage support installed
        pass
    try:
        import psycopg

        app.add_exception_handler(psycopg.OperationalError, backing_service_down)
    except ImportError:  # no PostgreSQL support installed
        pass
    app.add_exception_handler(Exception, unexpected)
