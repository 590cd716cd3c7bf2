"""The FastAPI application: :func:`create_app` wires settings, routes, error handlers, the workers and
the housekeeping loop (job watchdog and expiry sweep)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._version import __version__
from .events import ChangeHub
from .logs import AccessLog
from .manager import JobManager
from .problems import PROBLEM_MEDIA_TYPE, ProblemError, install_handlers, problem_response
from .routes import api, ops
from .settings import Settings

log = logging.getLogger("meshforge.service")

_DESCRIPTION = """\
Turn one picture into a game-ready GLB (`kind=generate`), or a dense mesh into an optimized one
(`kind=optimize`), as asynchronous jobs.

Submit with `POST /v1/jobs` (multipart), follow `GET /v1/jobs/{id}` or its Server-Sent Events at
`/v1/jobs/{id}/events`, then download `/v1/jobs/{id}/result?format=glb|obj|ply|stl`.

Every error is an RFC 9457 problem document (`application/problem+json`) with a stable `code`.
"""

_INDEX = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>meshforge</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto">
<h1>meshforge</h1>
<p>One picture in, a game-ready GLB out. This server has no web viewer installed.</p>
<ul>
<li><a href="/docs">API documentation</a> (<a href="/openapi.json">OpenAPI</a>)</li>
<li><a href="/readyz">readiness</a> · <a href="/metrics">metrics</a></li>
</ul>
</body></html>
"""

#: bytes of multipart framing and form fields allowed on top of the largest file
_FORM_SLACK = 1 << 20


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 ``payload_too_large``, before reading them
    when ``Content-Length`` says so, else as soon as the count passes the limit."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        limit = self.limit
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                response = problem_response(
                    None,
                    413,
                    "payload_too_large",
                    f"the request body is larger than the limit of {limit} bytes",
                    instance=scope.get("path", ""),
                )
                await response(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise ProblemError(
                        413, "payload_too_large", f"the request body is larger than the limit of {limit} bytes"
                    )
            return message

        await self.app(scope, limited, send)


async def _housekeeping(manager: JobManager, settings: Settings) -> None:
    """Every second: re-queue jobs whose lease expired and fail overdue jobs; every ``sweep_interval_s``:
    delete expired jobs."""
    last_sweep = 0.0
    tick = min(1.0, settings.sweep_interval_s)
    while True:
        await asyncio.sleep(tick)
        try:
            await run_in_threadpool(manager.watchdog)
            if time.monotonic() - last_sweep >= settings.sweep_interval_s:
                last_sweep = time.monotonic()
                await run_in_threadpool(manager.sweep)
        except Exception:  # pragma: no cover - keep the loop alive; the log says what broke
            log.exception("housekeeping failed")


def _openapi_schema(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """The OpenAPI document as FastAPI builds it, corrected to say what the service does.

    - Error responses (every 4xx/5xx whose body is a :class:`~.schemas.Problem`, and FastAPI's generic 422)
      are ``application/problem+json`` (RFC 9457), not ``application/json``.
    - The bearer security scheme and the per-operation ``security`` requirement are declared only when
      API keys are configured (``settings.api_keys``); without keys the API is open and says so.
    """
    if app.openapi_schema is not None:
        return app.openapi_schema
    spec = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    problem = {"$ref": "#/components/schemas/Problem"}
    generic = ("#/components/schemas/HTTPValidationError", "#/components/schemas/Problem")
    for path_item in spec.get("paths", {}).values():
        for op in path_item.values():
            for code, resp in op.get("responses", {}).items():
                schema = resp.get("content", {}).get("application/json", {}).get("schema", {})
                if code[0] in "45" and schema.get("$ref") in generic:
                    resp["content"] = {PROBLEM_MEDIA_TYPE: {"schema": problem}}
                    if resp.get("description") == "Validation Error":
                        resp["description"] = "bad option or request (`invalid_options`)"
            if not settings.auth_enabled():
                op.pop("security", None)
    components = spec.setdefault("components", {})
    schemas = components.get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    if not settings.auth_enabled():
        components.pop("securitySchemes", None)
    app.openapi_schema = spec
    return spec


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service app.

    Args:
        settings: the settings (read from the environment with :meth:`Settings.from_env` when None).

    Returns:
        A FastAPI app. Its lifespan opens the ledger in ``settings.data_dir``, re-queues running jobs whose
        lease expired (their process died; jobs of live processes are left alone), starts one worker
        thread per device and the housekeeping loop; on shutdown it drains: no new job is taken, running
        jobs may finish within ``shutdown_grace_s``, those still running are put back in the queue.

    Raises:
        SettingsError: invalid settings in the environment.
    """
    settings = settings if settings is not None else Settings.from_env()
    hub = ChangeHub()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub.bind(asyncio.get_running_loop())
        manager = await run_in_threadpool(JobManager.start, settings, hub)
        app.state.manager = manager
        task = asyncio.create_task(_housekeeping(manager, settings))
        log.info("meshforge service ready: data in %s, workers on %s", settings.data_dir, settings.resolved_devices())
        try:
            yield
        finally:
            task.cancel()
            await run_in_threadpool(manager.shutdown)
            app.state.manager = None
            manager.store.close()

    app = FastAPI(
        title="meshforge",
        version=__version__,
        summary="One picture → game-ready GLB; dense mesh → optimized GLB.",
        description=_DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.manager = None
    app.openapi = lambda: _openapi_schema(app, settings)  # type: ignore[method-assign]
    install_handlers(app)
    app.add_middleware(BodyLimit, limit=max(settings.max_image_bytes, settings.max_mesh_bytes) + _FORM_SLACK)
    app.add_middleware(AccessLog)  # outermost: every request is logged, refused ones included
    app.include_router(api)
    app.include_router(ops)
    vendor = settings.web_dir / "node_modules"
    if settings.web_dir.is_dir() and (vendor / "three").is_dir():
        from fastapi.staticfiles import StaticFiles

        # the page's import map loads its npm dependencies (three.js) from /vendor/<package>/...
        app.mount("/vendor", StaticFiles(directory=vendor), name="vendor")
        app.mount("/", StaticFiles(directory=settings.web_dir, html=True), name="web")
    else:
        # no studio (or its three.js was never installed): a minimal page that says how to get it
        hint = f"<p>To get the web studio, run <code>npm ci --prefix {settings.web_dir}</code> and restart.</p>"
        page = _INDEX.replace("</body>", hint + "</body>") if settings.web_dir.is_dir() else _INDEX

        @app.get("/", include_in_schema=False)
        async def index() -> HTMLResponse:
            return HTMLResponse(page)

    return app
