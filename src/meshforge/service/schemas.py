"""Response schemas of the HTTP API (request options arrive as multipart form fields, see the routes).

Times are ISO 8601 UTC strings; durations are seconds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

JobState = Literal["queued", "running", "succeeded", "failed", "canceled"]
JobKind = Literal["generate", "optimize", "export"]
ResultFormat = Literal["glb", "obj", "ply", "stl"]


class Progress(BaseModel):
    """Where a job is.

    ``stage`` is the stage that is running (generate: prepare, reconstruct, extract, clean, decimate,
    unwrap, bake, export; optimize: load, flatten, clean, decimate, unwrap, bake, export; export: clean,
    decimate, unwrap, bake, export); ``percent``
    is 0–100 (100 only when succeeded); ``queue_position`` is 1 for the next job to run, null unless queued.
    """

    stage: str | None = None
    percent: float = 0.0
    queue_position: int | None = None


class JobInput(BaseModel):
    """The uploaded file."""

    name: str = Field(description="the upload's file name (made file-safe)")
    sha256: str = Field(description="hex SHA-256 of the uploaded bytes")
    bytes: int
    media_type: str


class JobError(BaseModel):
    """Why a job failed or was canceled: a stable ``code`` and a one-line ``message``.

    Codes: ``invalid_input``, ``backend_error``, ``stage_failed``, ``missing_dependency``,
    ``out_of_memory``, ``timeout``, ``interrupted``, ``internal_error``, ``canceled``.
    """

    code: str
    message: str


class Timings(BaseModel):
    """Durations of a job, seconds.

    ``queued_s``: waiting in the queue; ``run_s``: from start to finish (wall); ``pipeline_s``: the
    pipeline's own stage times (the report's total, a generate job's ``raw`` stage included); ``export_s``:
    encoding and writing the result files (every format);
    ``backend_load_s``: building a backend for this job (0 when already built); ``pipeline_call_s``: wall
    time of the pipeline call (its stages, the progress callbacks, and the pipeline's own untimed work such
    as per-stage memory bookkeeping); ``progress_s``: time spent recording progress at stage boundaries
    (ledger writes); ``overhead_s``: ``run_s − pipeline_s``, everything the job's run
    adds to the pipeline's stage times (export included; the final ledger write excluded).
    """

    queued_s: float | None = None
    run_s: float | None = None
    pipeline_s: float | None = None
    export_s: float | None = None
    backend_load_s: float | None = None
    pipeline_call_s: float | None = None
    progress_s: float | None = None
    overhead_s: float | None = None
    result_bytes: int | None = None


class JobLinks(BaseModel):
    """Where to go next (paths relative to the server); ``result``/``preview`` only when succeeded,
    ``cutout`` (the prepared picture the backend saw) and ``exports`` (``POST`` there to re-export) only
    when a generate job succeeded; ``picture`` (the generated picture) for every prompt job (404 until its
    text-to-image stage made it)."""

    job: str
    events: str
    cancel: str
    input: str
    result: str | None = None
    preview: str | None = None
    cutout: str | None = None
    exports: str | None = None
    picture: str | None = None


class ExportSummary(BaseModel):
    """One export of a generate job, as ``GET /v1/jobs/{id}`` lists them (fetch the export for the rest)."""

    id: str
    state: JobState
    options: dict[str, Any]
    created_at: datetime
    error: JobError | None = None
    links: JobLinks


class Job(BaseModel):
    """A job, as ``POST /v1/jobs``, ``GET /v1/jobs/{id}`` and the events stream return it.

    ``cached`` is true when the submission was answered by an existing job with the same input bytes,
    options, backend and weights (no new work was queued). ``degraded`` is true when the job ran out of
    memory and was retried with reduced settings (``effective_options``). ``report`` is the pipeline's
    report (per-stage times, peak memory, counts, warnings, configuration) once succeeded. ``warnings``
    are the report's warnings (results the pipeline cannot fully trust, a fallback it took), also in the
    job list, which leaves reports out.

    An ``export`` job (``POST /v1/jobs/{id}/exports``) finishes the raw reconstruction of the generate job
    ``parent`` again with other ``options`` (faces, texture_size, textures, preset), without a backend; its
    ``input`` is that raw (``.mfraw``). A generate job lists its ``exports``, oldest first.
    """

    id: str
    kind: JobKind
    parent: str | None = Field(default=None, description="export jobs: the generate job whose raw it finishes")
    state: JobState
    cached: bool = False
    degraded: bool = False
    cancel_requested: bool = False
    attempts: int = Field(description="how many times the job was started (more than 1 after a restart)")
    backend: str | None = None
    options: dict[str, Any] = Field(
        description="the job's user-facing options by their form-field names (the whole configuration it ran "
        "with is the report's `config`)"
    )
    effective_options: dict[str, Any] | None = Field(
        default=None, description="the reduced options of the retry after running out of memory (`degraded`)"
    )
    input: JobInput
    progress: Progress
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expires_at: datetime | None = None
    timings: Timings
    error: JobError | None = None
    warnings: list[str] = Field(default_factory=list, description="the report's warnings, one line each")
    report: dict[str, Any] | None = None
    exports: list[ExportSummary] = Field(default_factory=list, description="generate jobs: their exports")
    links: JobLinks


class JobList(BaseModel):
    """One page of jobs, newest first; pass ``next_cursor`` as ``cursor`` for the next page (null at the end)."""

    items: list[Job]
    next_cursor: str | None = None


class BackendInfo(BaseModel):
    """One backend this server enables.

    ``available`` is false when a job asking for it would be refused (422 ``backend_unavailable``): its
    weights, or a package it needs, are missing; ``note`` then says what to do. ``resolves_to`` is the
    backend ``auto`` picks now (null for concrete backends).
    """

    name: str
    available: bool
    needs_weights: bool
    note: str
    resolves_to: str | None = None


class BackendList(BaseModel):
    """``GET /v1/backends``: the enabled backends in the server's order and the one used when a job names none."""

    default: str
    items: list[BackendInfo]


class OptionInfo(BaseModel):
    """One user-facing option of the submit form, from :data:`meshforge.config.OPTIONS` (where its range,
    choices, default and help are written once).

    ``maximum`` is the table's, lowered to this server's cap (``MESHFORGE_SERVICE_MAX_RESOLUTION``,
    ``..._MAX_FACES``, ``..._MAX_TEXTURE_SIZE``): the largest value a job may ask for here; null when
    there is no upper bound. ``help`` is the one-line description with the range and default.
    """

    type: Literal["integer", "number", "string", "boolean"]
    default: bool | int | float | str
    minimum: float | None = None
    maximum: float | None = None
    choices: list[str] | None = None
    help: str


class OptionTable(BaseModel):
    """``GET /v1/options``: the generate options by form-field name, and the named budgets (``preset``:
    faces and texture size) that optimize and re-export take."""

    options: dict[str, OptionInfo]
    presets: dict[str, dict[str, int]]


class Problem(BaseModel):
    """RFC 9457 problem details (``application/problem+json``); ``code`` is stable, ``detail`` one line."""

    type: str = Field(examples=["urn:meshforge:problem:queue_full"])
    title: str
    status: int
    detail: str
    code: str
    instance: str | None = None


class WorkerInfo(BaseModel):
    """One worker thread."""

    name: str
    device: str
    alive: bool
    backend: str
    backend_loaded: bool
    load_error: str | None = None
    current_job: str | None = None
    jobs_done: int


class GpuMemory(BaseModel):
    """Memory of one CUDA device, bytes (from ``torch.cuda.mem_get_info``)."""

    device: str
    free_bytes: int
    total_bytes: int


class RemoteWorkerInfo(BaseModel):
    """One ``meshforge worker`` process, as its last heartbeat row in the ledger says."""

    name: str
    host: str
    device: str
    queue: str
    backends: list[str]
    free_vram_bytes: int | None = None
    total_vram_bytes: int | None = None
    accepting: bool
    current_job: str | None = None
    jobs_done: int
    jobs_failed: int
    redeliveries_dropped: int
    started_at: float
    last_seen: float


class Readiness(BaseModel):
    """``/readyz``: ready when every worker is alive and has built its default backend, and the data
    dir's disk has at least ``min_free_bytes`` free; with a broker, when the ledger, broker and object store
    answer (``checks``) and a live ``meshforge worker`` takes jobs (``remote_workers``); ``reasons`` says
    why not (empty when ready)."""

    ready: bool
    reasons: list[str] = Field(default_factory=list)
    workers: list[WorkerInfo]
    queue_depth: int
    running: int
    checks: dict[str, bool] = Field(
        default_factory=dict, description="whether the ledger, and the broker and object store when used, answer"
    )
    remote_workers: list[RemoteWorkerInfo] = Field(
        default_factory=list, description="live meshforge worker processes (heartbeat within 3 periods)"
    )
    disk_free_bytes: int | None = None
    gpus: list[GpuMemory] = Field(default_factory=list)


class Liveness(BaseModel):
    """``/livez``: the process answers."""

    status: Literal["ok"] = "ok"
