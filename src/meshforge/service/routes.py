"""HTTP routes: thin handlers that parse the request, call :class:`~meshforge.service.manager.JobManager`
and shape the response. Errors are problem details (see :mod:`meshforge.service.problems`)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Header, Query, Request, Response, UploadFile
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, RedirectResponse, StreamingResponse

from ..config import OPTIONS, PRESETS
from .manager import FileAnswer, JobManager, Upload
from .metrics import CONTENT_TYPE
from .options import option_table
from .problems import ProblemError
from .schemas import (
    BackendList,
    Job,
    JobKind,
    JobList,
    JobState,
    Liveness,
    OptionTable,
    Problem,
    Readiness,
    ResultFormat,
)
from .storage import TERMINAL

_bearer = HTTPBearer(auto_error=False, description="An API key; required only when the server has keys configured.")

_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": Problem, "description": "missing or wrong API key (`unauthorized`)"},
    404: {"model": Problem, "description": "no such job (`not_found`), or its files are gone (`artifact_missing`)"},
}


def get_manager(request: Request) -> JobManager:
    """The app's :class:`JobManager` (503 ``not_ready`` before startup finished)."""
    manager: JobManager | None = getattr(request.app.state, "manager", None)
    if manager is None:
        raise ProblemError(503, "not_ready", "the service is starting")
    return manager


async def authenticate(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    """The caller's owner id: ``""`` when authentication is off, else derived from the API key.

    Raises:
        ProblemError: 401 ``unauthorized`` (with ``WWW-Authenticate: Bearer``) when keys are configured and
            the request has none or a wrong one.
    """
    keys: tuple[str, ...] = request.app.state.settings.api_keys
    if not keys:
        return ""
    challenge = {"WWW-Authenticate": 'Bearer realm="meshforge"'}
    if credentials is None:
        raise ProblemError(
            401, "unauthorized", "this server needs an API key: Authorization: Bearer <key>", headers=challenge
        )
    token = credentials.credentials.encode()
    for key in keys:
        if hmac.compare_digest(token, key.encode()):
            return hashlib.sha256(key.encode()).hexdigest()[:16]
    raise ProblemError(401, "unauthorized", "the API key is not valid", headers=challenge)


def require_multipart(content_type: Annotated[str | None, Header(include_in_schema=False)] = None) -> None:
    """415 ``unsupported_media_type`` unless the request body is ``multipart/form-data``."""
    if not content_type or not content_type.lower().startswith("multipart/form-data"):
        raise ProblemError(
            415, "unsupported_media_type", f"send the upload as multipart/form-data, not {content_type or 'nothing'}"
        )


def option_form(name: str, job: str = "", *, default: str | None = None) -> Any:
    """The HTTP form field of a user-facing option, from :data:`meshforge.config.OPTIONS` (range, choices,
    help and default written once there); ``job`` prefixes the description (``"generate: …"``),
    ``default`` replaces the default it names (e.g. ``"the job's"``)."""
    option = OPTIONS[name]
    text = option.describe(default)
    extra = {"enum": list(option.choices)} if option.choices is not None else None
    return Form(
        ge=option.minimum, le=option.maximum, description=f"{job}: {text}" if job else text, json_schema_extra=extra
    )


def preset_form(description: str) -> Any:
    """The ``preset`` form field: one of :data:`meshforge.config.PRESETS`."""
    return Form(description=description, json_schema_extra={"enum": list(PRESETS)})


Owner = Annotated[str, Depends(authenticate)]
Manager = Annotated[JobManager, Depends(get_manager)]

api = APIRouter(prefix="/v1", tags=["jobs"], responses=_ERRORS)


@api.post(
    "/jobs",
    status_code=202,
    response_model=Job,
    dependencies=[Depends(require_multipart)],
    responses={
        200: {"model": Job, "description": "answered by an existing job: Idempotency-Key replay, or `cached: true`"},
        413: {"model": Problem, "description": "upload too large (`payload_too_large`)"},
        415: {
            "model": Problem,
            "description": "not multipart, or not a supported picture/mesh (`unsupported_media_type`)",
        },
        422: {
            "model": Problem,
            "description": "bad option (`invalid_options`), unusable picture (`invalid_image`) or mesh "
            "(`invalid_mesh`), a backend without weights (`backend_unavailable`), Idempotency-Key reused for "
            "another request (`idempotency_key_mismatch`)",
        },
        429: {"model": Problem, "description": "queue full (`queue_full`); see `Retry-After`"},
        503: {"model": Problem, "description": "the server is draining (`shutting_down`); see `Retry-After`"},
        507: {"model": Problem, "description": "the server's disk is (nearly) full (`insufficient_storage`)"},
    },
)
def submit_job(
    response: Response,
    owner: Owner,
    manager: Manager,
    file: Annotated[
        UploadFile | None, File(description="the picture (generate) or the dense mesh (optimize); or a prompt")
    ] = None,
    prompt: Annotated[
        str | None,
        Form(
            description="generate: a prompt instead of a file: a text-to-image model (the server's "
            "t2i_model) makes the picture first (GET /v1/jobs/{id}/picture)"
        ),
    ] = None,
    seed: Annotated[int | None, option_form("seed", "prompt jobs: the text-to-image noise")] = None,
    kind: Annotated[JobKind, Form(description="generate: picture → asset; optimize: dense mesh → asset")] = "generate",
    resolution: Annotated[int | None, option_form("resolution", "generate")] = None,
    faces: Annotated[int | None, option_form("faces")] = None,
    texture_size: Annotated[int | None, option_form("texture_size")] = None,
    no_texture: Annotated[bool, Form(description="generate: vertex colours instead of baked textures")] = False,
    foreground_ratio: Annotated[float | None, option_form("foreground_ratio", "generate")] = None,
    background: Annotated[str | None, option_form("background", "generate")] = None,
    backend: Annotated[
        str | None, Form(max_length=64, description="generate: backend name (default: server's)")
    ] = None,
    preset: Annotated[str | None, preset_form("optimize: named budget")] = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)] = None,
) -> Job:
    """Submit a job: a picture to turn into an asset (``kind=generate``) or a dense mesh to optimize.

    Returns 202 with the queued job, or 200 with an existing job when the ``Idempotency-Key`` was seen
    before (same request) or an identical request (same input bytes, options, backend and weights) has a
    job already (``cached: true``). ``Location`` points at the job either way.
    """
    if (file is None or not file.filename) and prompt is None:
        raise ProblemError(422, "invalid_options", "send a file or a prompt (form field 'file' or 'prompt')")
    if file is not None and file.filename and prompt is not None:
        raise ProblemError(422, "invalid_options", "send a file or a prompt, not both")
    if prompt is not None and kind != "generate":
        raise ProblemError(422, "invalid_options", "a prompt makes a picture: it applies to generate jobs only")
    if seed is not None and prompt is None:
        raise ProblemError(422, "invalid_options", "seed applies to prompt jobs only")
    if kind == "generate":
        if preset is not None:
            raise ProblemError(422, "invalid_options", "preset applies to optimize jobs only")
        options: dict[str, object] = {
            "resolution": resolution,
            "faces": faces,
            "texture_size": texture_size,
            "no_texture": no_texture,
            "foreground_ratio": foreground_ratio,
            "background": background,
            "backend": backend,
        }
    else:
        extra = [
            n
            for n, v in (
                ("resolution", resolution),
                ("no_texture", no_texture or None),
                ("foreground_ratio", foreground_ratio),
                ("background", background),
                ("backend", backend),
            )
            if v is not None
        ]
        if extra:
            raise ProblemError(422, "invalid_options", f"{', '.join(extra)} apply to generate jobs only")
        options = {"faces": faces, "texture_size": texture_size, "preset": preset}
    if prompt is not None:
        job, how = manager.submit_prompt(prompt, seed, options, owner=owner, idempotency_key=idempotency_key)
    else:
        assert file is not None
        upload = Upload(data=file.file.read(), filename=file.filename or "")
        job, how = manager.submit(kind, upload, options, owner=owner, idempotency_key=idempotency_key)
    response.status_code = 202 if how == "created" else 200
    response.headers["Location"] = job.links.job
    return job


@api.post(
    "/jobs/{job_id}/exports",
    status_code=202,
    response_model=Job,
    responses={
        200: {"model": Job, "description": "answered by an existing export: Idempotency-Key replay, or `cached: true`"},
        409: {
            "model": Problem,
            "description": "the job has not succeeded (`job_not_finished`) or keeps no raw (`no_raw`: an optimize "
            "or export job, or a job made by an older version)",
        },
        422: {"model": Problem, "description": "bad option (`invalid_options`), `idempotency_key_mismatch`"},
        429: {"model": Problem, "description": "queue full (`queue_full`); see `Retry-After`"},
        503: {"model": Problem, "description": "the server is draining (`shutting_down`); see `Retry-After`"},
    },
)
def submit_export(
    job_id: str,
    response: Response,
    owner: Owner,
    manager: Manager,
    faces: Annotated[int | None, option_form("faces", default="the job's")] = None,
    texture_size: Annotated[int | None, option_form("texture_size", default="the job's")] = None,
    preset: Annotated[str | None, preset_form("named budget for what is not given")] = None,
    no_texture: Annotated[bool, Form(description="vertex colours instead of baked textures")] = False,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)] = None,
) -> Job:
    """Re-export a succeeded generate job: finish its raw reconstruction again with other budgets (a new
    job of kind ``export``, queued like any job, listed under the generate job; no backend runs).

    Form fields (urlencoded or multipart); the ones not given are the generate job's. Returns 202 with the
    queued export, or 200 with an existing one (``Idempotency-Key`` replay, or the same options again:
    ``cached: true``). ``Location`` points at the export.
    """
    options = {"faces": faces, "texture_size": texture_size, "preset": preset, "no_texture": no_texture}
    job, how = manager.submit_export(job_id, options, owner=owner, idempotency_key=idempotency_key)
    response.status_code = 202 if how == "created" else 200
    response.headers["Location"] = job.links.job
    return job


@api.get("/jobs", response_model=JobList)
def list_jobs(
    owner: Owner,
    manager: Manager,
    state: Annotated[
        list[JobState | Literal["dead"]] | None,
        Query(description="only jobs in these states (repeatable); `dead`: the dead-letter list, failed jobs"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=64, description="next_cursor of the previous page")] = None,
) -> JobList:
    """Jobs newest first, a page at a time (reports left out; fetch a job for its report)."""
    return manager.list_jobs(owner, list(state) if state else None, limit, cursor)


@api.get("/jobs/{job_id}", response_model=Job)
def get_job(job_id: str, owner: Owner, manager: Manager) -> Job:
    """A job: state, progress (stage, percent, queue position), timings, report, error."""
    return manager.get(job_id, owner)


@api.post(
    "/jobs/{job_id}/cancel",
    response_model=Job,
    responses={
        202: {"model": Job, "description": "running: it stops at its next stage boundary"},
        409: {"model": Problem, "description": "already succeeded or failed (`not_cancelable`)"},
    },
)
def cancel_job(job_id: str, owner: Owner, manager: Manager, response: Response) -> Job:
    """Cancel a job: a queued one at once (200, ``canceled``); a running one at its next stage boundary
    (202, ``cancel_requested: true``). Canceling a canceled job is a no-op (200)."""
    job = manager.cancel(job_id, owner)
    response.status_code = 202 if job.state == "running" else 200
    return job


@api.post(
    "/jobs/{job_id}/retry",
    response_model=Job,
    status_code=202,
    responses={409: {"model": Problem, "description": "the job is not failed or canceled (`not_retryable`)"}},
)
def retry_job(job_id: str, owner: Owner, manager: Manager) -> Job:
    """Put a failed (dead-letter, see ``GET /v1/jobs?state=dead``) or canceled job back in the queue, as
    new: attempts, error and degraded flag cleared, the options it was submitted with."""
    return manager.retry(job_id, owner)


@api.delete("/jobs/{job_id}", status_code=204, response_class=Response, responses={204: {"description": "deleted"}})
def delete_job(job_id: str, owner: Owner, manager: Manager) -> Response:
    """Delete a job in any state with all its files (upload, result, previews). A queued job never runs;
    a running one stops at its next stage boundary. Afterwards the job answers 404."""
    manager.delete(job_id, owner)
    return Response(status_code=204)


@api.get("/backends", response_model=BackendList, tags=["backends"])
def list_backends(owner: Owner, manager: Manager) -> BackendList:
    """The backends this server enables, each with whether a job asking for it can run now (a backend
    whose weights are missing is refused at submit with 422 ``backend_unavailable``; ``note`` says what
    to do) and what ``auto`` resolves to."""
    return manager.backends()


@api.get("/options", response_model=OptionTable, tags=["options"])
def list_options(request: Request) -> OptionTable:
    """The generate options the submit form takes (type, default, range, choices, help), from the one option
    table that also builds the form fields and the CLI, with each maximum lowered to this server's cap, and
    the presets. The studio builds its form from it. No API key needed: it says nothing about jobs."""
    return OptionTable.model_validate(option_table(request.app.state.settings))


@api.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
)
async def job_events(job_id: str, request: Request, owner: Owner, manager: Manager) -> StreamingResponse:
    """Server-Sent Events with the job (the same JSON as ``GET /v1/jobs/{id}``) on every change.

    Events are named ``progress`` while the job is queued or running; the last one is named ``done`` (its
    data has the terminal state: succeeded, failed or canceled) and the stream ends after it. An unknown or
    expired job gives 404 before the stream starts, or an ``error`` event if it expires while followed. A
    comment line is sent after quiet periods to keep proxies from closing the connection.
    """
    await run_in_threadpool(manager.get_row, job_id, owner)  # 404 before the stream starts
    s = request.app.state.settings
    return StreamingResponse(
        _events(manager, job_id, owner, s.sse_poll_s, s.sse_heartbeat_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(
    manager: JobManager, job_id: str, owner: str, poll_s: float, heartbeat_s: float
) -> AsyncIterator[str]:
    n, last, quiet = 0, "", time.monotonic()
    with manager.hub.subscribe(job_id) as changed:
        while True:
            changed.clear()
            try:
                job = await run_in_threadpool(manager.get, job_id, owner)
            except ProblemError as exc:  # expired while followed
                yield f"event: error\ndata: {json.dumps({'code': exc.code, 'detail': exc.detail})}\n\n"
                return
            text = job.model_dump_json()
            if text != last:
                n, last, quiet = n + 1, text, time.monotonic()
                terminal = job.state in TERMINAL
                yield f"id: {n}\nevent: {'done' if terminal else 'progress'}\ndata: {text}\n\n"
                if terminal:
                    return
            elif time.monotonic() - quiet >= heartbeat_s:
                quiet = time.monotonic()
                yield ": keep-alive\n\n"
            try:
                await asyncio.wait_for(changed.wait(), timeout=min(poll_s, heartbeat_s))
            except TimeoutError:
                pass


def _file(answer: FileAnswer, *, inline: bool) -> FileResponse:
    return FileResponse(
        answer.path,
        media_type=answer.media_type,
        filename=answer.filename,
        content_disposition_type="inline" if inline else "attachment",
        headers={"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox", "Cache-Control": "private"},
    )


_FILE_ERRORS: dict[int | str, dict[str, object]] = {
    409: {"model": Problem, "description": "the job has not succeeded (`job_not_finished`)"},
    507: {"model": Problem, "description": "no disk space to write the file on first request (`insufficient_storage`)"},
}


@api.get(
    "/jobs/{job_id}/result",
    response_class=FileResponse,
    responses={
        **_FILE_ERRORS,
        200: {
            "content": {
                "model/gltf-binary": {},
                "application/zip": {},
                "application/octet-stream": {},
                "model/stl": {},
            },
            "description": "the asset: GLB, OBJ+MTL+PNG as a zip, binary PLY or binary STL",
        },
    },
)
def job_result(
    job_id: str,
    owner: Owner,
    manager: Manager,
    format: Annotated[ResultFormat, Query()] = "glb",
    redirect: Annotated[
        bool,
        Query(description="with object storage (storage_url): answer 307 to a presigned URL of the file"),
    ] = False,
) -> Response:
    """Download the asset (``format``: glb, obj — a zip of OBJ, MTL and textures —, ply, stl); with
    ``redirect=true`` and object storage, a 307 to a presigned URL of the object (valid one hour)."""
    if redirect:
        url = manager.result_url(job_id, owner, format)
        if url is not None:
            return RedirectResponse(url, status_code=307, headers={"Cache-Control": "private, no-store"})
    return _file(manager.result(job_id, owner, format), inline=False)


@api.get(
    "/jobs/{job_id}/preview.png",
    response_class=FileResponse,
    responses={**_FILE_ERRORS, 200: {"content": {"image/png": {}}, "description": "rendered views"}},
)
def job_preview(job_id: str, owner: Owner, manager: Manager) -> FileResponse:
    """A PNG sheet of the asset from several sides (top row unlit, bottom row lit)."""
    return _file(manager.preview(job_id, owner), inline=True)


@api.get(
    "/jobs/{job_id}/cutout",
    response_class=FileResponse,
    responses={
        **_FILE_ERRORS,
        200: {"content": {"image/png": {}}, "description": "the prepared picture (RGBA, alpha = mask)"},
    },
)
def job_cutout(job_id: str, owner: Owner, manager: Manager) -> FileResponse:
    """The picture the backend saw (generate jobs): the object cut out of its background (alpha), centred
    in a square at the job's ``foreground_ratio``."""
    return _file(manager.cutout(job_id, owner), inline=True)


@api.get(
    "/jobs/{job_id}/picture",
    response_class=FileResponse,
    responses={
        **_FILE_ERRORS,
        200: {"content": {"image/png": {}}, "description": "the picture the text-to-image model made"},
    },
)
def job_picture(job_id: str, owner: Owner, manager: Manager) -> FileResponse:
    """The generated picture of a prompt job (opaque RGB PNG), once the text-to-image stage made it; kept when
    the job fails later (a picture with no object is refused like an upload)."""
    return _file(manager.picture(job_id, owner), inline=True)


@api.get(
    "/jobs/{job_id}/input",
    response_class=FileResponse,
    responses={200: {"content": {"image/*": {}, "application/octet-stream": {}}, "description": "the upload"}},
)
def job_input(job_id: str, owner: Owner, manager: Manager) -> FileResponse:
    """The uploaded picture (or mesh), for showing beside the result."""
    answer = manager.input(job_id, owner)
    return _file(answer, inline=answer.media_type.startswith("image/"))


ops = APIRouter(tags=["operations"])


@ops.get("/livez", response_model=Liveness)
async def livez() -> Liveness:
    """200 while the process answers."""
    return Liveness()


@ops.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness, "description": "not ready"}})
def readyz(manager: Manager, response: Response) -> Readiness:
    """200 when every worker is alive with its default backend built and the data dir's disk has at least
    ``min_free_bytes`` free, else 503 with ``reasons``; also queue depth, free disk space and free GPU
    memory (when PyTorch with CUDA is in use)."""
    ready = manager.readiness()
    response.status_code = 200 if ready.ready else 503
    return ready


@ops.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(manager: Manager) -> Response:
    """Prometheus metrics (text format 0.0.4): jobs by state, queue depth, stage durations, GPU memory."""
    return Response(manager.metrics.render(), media_type=CONTENT_TYPE)
