"""The service's structured logs: one line per job event and one per HTTP request, as text or JSON lines.

Job events (logger ``meshforge.service.jobs``, level INFO; ``event`` and ``job_id`` in every one):

- ``job.submitted``: ``kind``, ``how`` (``created``, ``cached``, ``replayed``), ``input_bytes``;
- ``job.started``: ``kind``, ``attempt``, ``worker`` (the lease owner), ``queued_s``;
- ``job.finished``: ``kind``, ``state`` (``succeeded``, ``failed``, ``canceled``), ``code`` (the error
  code, None on success), ``run_s``, ``degraded``;
- ``job.requeued``: put back in the queue (``reason``: ``shutdown``, ``lease_expired``);
- ``job.abandoned``: a worker dropped a job that was no longer its own (its lease was lost).

Requests (logger ``meshforge.service.access``, level INFO, ``event`` = ``http.request``): ``method``,
``path``, ``status``, ``duration_ms``, ``bytes`` (of the response body), ``client``.

With ``MESHFORGE_SERVICE_LOG_FORMAT=json`` every line on stderr — these, the service's other messages and
uvicorn's — is one JSON object with ``ts`` (ISO 8601, UTC), ``level``, ``logger``, ``message`` and the
event's fields; otherwise a line is ``LEVEL logger: message`` with the fields as ``key=value`` pairs.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only the types: job workers import this module without the web stack
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

JOB_LOG = logging.getLogger("meshforge.service.jobs")
ACCESS_LOG = logging.getLogger("meshforge.service.access")

TEXT_FORMAT = "%(levelname)-9s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object (one line): ``ts``, ``level``, ``logger``, ``message``, the
    record's ``fields`` (see :func:`job_event`) and ``exc`` (the traceback text) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def _event(logger: logging.Logger, event: str, fields: dict[str, Any]) -> None:
    if logger.isEnabledFor(logging.INFO):
        text = " ".join(f"{k}={v}" for k, v in fields.items())
        logger.info("%s %s", event, text, extra={"fields": {"event": event, **fields}})


def job_event(event: str, job_id: str, **fields: Any) -> None:
    """Log one job event (see the module docstring for the events and their fields)."""
    _event(JOB_LOG, event, {"job_id": job_id, **fields})


def configure(log_format: str, level: str) -> dict[str, Any] | None:
    """Send the ``meshforge`` loggers to stderr in ``log_format`` (``text`` or ``json``) at ``level``.

    In JSON mode the root logger (and so Python warnings and other libraries' messages) gets the same
    formatter.

    Returns:
        The ``log_config`` to give uvicorn for its own loggers: a JSON one in JSON mode, else None (keep
        uvicorn's default).
    """
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    own = logging.getLogger("meshforge")
    own.handlers = [handler]
    own.propagate = False
    own.setLevel("DEBUG" if level == "trace" else level.upper())
    if log_format != "json":
        return None
    root = logging.getLogger()
    root.handlers = [handler]
    logging.captureWarnings(True)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"json": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["json"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["json"], "level": "INFO", "propagate": False},
        },
    }


class AccessLog:
    """ASGI middleware: one ``http.request`` line per request, when its response has been sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        sent = 0

        async def counting(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting)
        finally:
            client = scope.get("client")
            _event(
                ACCESS_LOG,
                "http.request",
                {
                    "method": scope.get("method", ""),
                    "path": scope.get("path", ""),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - start) * 1000.0, 2),
                    "bytes": sent,
                    "client": client[0] if client else None,
                },
            )
