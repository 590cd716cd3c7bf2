"""Service settings: read from the environment once, validated at startup.

Every field can be set with an environment variable ``MESHFORGE_SERVICE_<FIELD>`` (upper case), e.g.
``MESHFORGE_SERVICE_DATA_DIR=/var/lib/meshforge``; list fields take comma-separated values
(``MESHFORGE_SERVICE_API_KEYS=key1,key2``). Explicit keyword arguments (the ``meshforge serve`` options)
win over the environment. Unknown ``MESHFORGE_SERVICE_*`` variables are refused, so a typo is an error at
startup rather than a silently ignored setting.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..devices import check_device, resolve_devices
from ..errors import InputError

ENV_PREFIX = "MESHFORGE_SERVICE_"

#: the bundled static viewer, served at ``/`` when the folder exists
DEFAULT_WEB_DIR = Path(__file__).resolve().parents[1] / "web"


class SettingsError(InputError):
    """The service settings are invalid; the message names the variable and says why (one line)."""


class Settings(BaseModel):
    """Everything the service reads from its environment.

    Attributes:
        data_dir: folder owned by the service: the SQLite job ledger (``jobs.sqlite3``) and one folder of
            artifacts per job (``jobs/<id>/``). Created when missing.
        host: interface :func:`~meshforge.service.entry.serve_main` binds (loopback by default).
        port: TCP port :func:`~meshforge.service.entry.serve_main` binds.
        backend: backend used when a generate job names none (``auto``: the best backend whose weights are
            present, else ``inflate``).
        backends: backends a job may ask for (``auto`` included); others are refused with 422.
        weights: weights location for backends that need them (folder or hub id).
        weights_version: a label standing for the weights in the cache key; empty derives one from the
            weights files (name, size, modification time).
        download_weights: let a backend download missing weights when a job first needs it.
        devices: ``auto`` (every CUDA device when PyTorch sees one, else ``cpu``) or a list such as
            ``cuda:0,cuda:1``; one worker thread per device, each building its backends once.
        max_image_bytes: largest accepted picture upload (bytes); larger uploads get 413.
        max_mesh_bytes: largest accepted mesh upload for optimize jobs (bytes); larger uploads get 413.
        max_pixels: largest accepted picture in pixels (width·height); larger pictures get 422.
        max_concurrent_decodes: most pictures the workers decode at the same time (process-wide). A
            submission only reads the picture's header; its pixels are decoded by the worker that runs the
            job, which takes about 11 bytes per pixel at the peak (~0.45 GB for 40 MP), so this bounds the
            memory workers spend on decoding. Workers beyond it wait for a free slot.
        max_resolution: largest ``resolution`` option a job may ask for.
        max_faces: largest ``faces`` option a job may ask for.
        max_texture_size: largest ``texture_size`` option a job may ask for.
        max_queue: most jobs waiting in the queue; more submissions get 429 with ``Retry-After``.
        min_free_bytes: free space (bytes) the data dir's filesystem must keep. Below it ``/readyz``
            answers 503 (not ready, with the reason), and a submission that would go below it gets 507
            ``insufficient_storage``; 0 turns the check off (a write that finds the disk full still gets
            507, and a job that finds it full fails with ``insufficient_storage``).
        job_timeout_s: wall-clock limit of one job once it runs, seconds; checked at every stage boundary
            and by a watchdog that fails the job at the deadline.
        max_attempts: a job interrupted by crashes or restarts this many times is failed, not re-queued.
        lease_s: a running job's lease, seconds: its worker renews it every ``lease_s / 3`` seconds; when
            it expires (the process died), any server sharing the data dir puts the job back in the queue
            (at its start and then every second). A job left by a crash therefore runs again about
            ``lease_s`` after the crash.
        ttl_s: finished jobs and their artifacts are deleted this many seconds after they finish.
        sweep_interval_s: how often the expiry sweep runs, seconds.
        api_keys: bearer tokens accepted on ``/v1``; empty (the default) turns authentication off. Each
            key sees only its own jobs.
        sse_poll_s: the events stream re-reads the job at least this often (seconds), besides being woken
            on every change made in this process.
        sse_heartbeat_s: the events stream sends a comment line after this many quiet seconds.
        shutdown_grace_s: on SIGTERM/SIGINT (and any shutdown), how long running jobs may go on to their
            end, seconds; meanwhile no new job is taken and submissions get 503 ``shutting_down``. Jobs
            still running then are put back in the queue (not lost, and the attempt does not count).
        web_dir: folder of static files served at ``/``; the bundled ``meshforge/web`` by default.
        log_level: uvicorn and service log level.
        t2i_model: the text-to-image model of prompt jobs (a Hugging Face model id or a local diffusers
            pipeline folder; :mod:`meshforge.t2i`), loaded by each worker at its first prompt job.
        t2i_allow_non_commercial: allow a text-to-image model whose licence forbids or restricts commercial use.
        database_url: the job ledger: empty (the default) for SQLite in ``data_dir``; a ``postgresql://``
            URL (``user:password@host:port/database``) for a PostgreSQL ledger shared by every API server and
            worker (schema created and upgraded with Alembic at startup; needs the ``scale`` extra).
        storage_url: where job files (uploads, results, raw reconstructions) live: empty (the default) for
            ``data_dir/jobs``; ``s3://bucket/prefix`` for S3-compatible object storage (boto3; the endpoint
            from ``AWS_ENDPOINT_URL`` for MinIO and others, credentials from the usual ``AWS_*`` variables),
            with ``data_dir`` as a local working copy.
        broker_url: empty (the default): jobs run in this process's worker threads; an ``amqp://`` (RabbitMQ)
            or ``redis://`` URL: jobs are sent as Celery tasks to ``meshforge worker`` processes (needs a
            shared ``database_url`` and ``storage_url``).
        workers: in-process worker threads of ``meshforge serve``: unset for one per device (none when
            ``broker_url`` is set), ``0`` for an API-only server (jobs run in ``meshforge worker``
            processes, or in other servers sharing the ledger).
        queue: the broker queue jobs are sent to and ``meshforge worker`` takes them from; with
            ``weights_version`` set the queue is ``<queue>.<weights_version>``, so workers of two model
            versions run side by side and an API server routes to one of them (roll back by changing it).
        min_free_vram_bytes: a ``meshforge worker`` on a CUDA device takes a new job only while its
            device has at least this much free memory (0: always); it reports the figure in its heartbeat.
        worker_heartbeat_s: how often a ``meshforge worker`` writes its heartbeat row (free VRAM, backends,
            job counts) and looks for jobs whose lease expired; a worker unseen for three times this long is
            not counted as live in ``/readyz``.
        log_format: ``text`` (one human-readable line per event) or ``json`` (one JSON object per line:
            ``ts``, ``level``, ``logger``, ``message`` and the event's fields) for the service's job events,
            its access log and uvicorn's own lines.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = Path("meshforge-data")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    backend: str = "auto"
    backends: tuple[str, ...] = ("auto", "inflate", "triposr")
    weights: str | None = None
    weights_version: str = ""
    download_weights: bool = False
    devices: tuple[str, ...] = ("auto",)
    max_image_bytes: int = Field(20 * 1024 * 1024, gt=0)
    max_mesh_bytes: int = Field(128 * 1024 * 1024, gt=0)
    max_pixels: int = Field(40_000_000, gt=0)
    max_concurrent_decodes: int = Field(2, ge=1)
    max_resolution: int = Field(512, ge=16, le=1024)
    max_faces: int = Field(200_000, ge=4)
    max_texture_size: int = Field(4096, ge=16, le=8192)
    max_queue: int = Field(100, ge=1)
    min_free_bytes: int = Field(256 * 1024 * 1024, ge=0)
    job_timeout_s: float = Field(900.0, gt=0)
    max_attempts: int = Field(3, ge=1)
    lease_s: float = Field(30.0, ge=0.5)
    ttl_s: float = Field(7 * 24 * 3600.0, gt=0)
    sweep_interval_s: float = Field(60.0, gt=0)
    api_keys: tuple[str, ...] = Field((), repr=False)
    sse_poll_s: float = Field(1.0, gt=0)
    sse_heartbeat_s: float = Field(15.0, gt=0)
    shutdown_grace_s: float = Field(10.0, ge=0)
    web_dir: Path = DEFAULT_WEB_DIR
    log_level: str = "info"
    log_format: Literal["text", "json"] = "text"
    t2i_model: str = "black-forest-labs/FLUX.1-schnell"
    t2i_allow_non_commercial: bool = False
    workers: int | None = Field(None, ge=0)
    queue: str = Field("meshforge", pattern=r"^[A-Za-z0-9_.:-]{1,100}$")
    min_free_vram_bytes: int = Field(0, ge=0)
    worker_heartbeat_s: float = Field(2.0, gt=0)
    database_url: str = Field("", repr=False)
    storage_url: str = ""
    broker_url: str = Field("", repr=False)

    @field_validator("backends", "devices", "api_keys", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("backend", "log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value not in ("critical", "error", "warning", "info", "debug", "trace"):
            raise ValueError("must be one of critical, error, warning, info, debug, trace")
        return value

    @field_validator("devices")
    @classmethod
    def _devices(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("needs at least one device (or auto)")
        try:
            checked = tuple(check_device(d) for d in value)
        except InputError as exc:
            raise ValueError(str(exc)) from None
        if "auto" in checked and len(checked) > 1:
            raise ValueError("auto cannot be combined with other devices")
        return checked

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for key in value:
            if len(key) < 8:
                raise ValueError("every API key must have at least 8 characters")
        return value

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str) -> str:
        from .pg import is_postgres_url

        if value and not is_postgres_url(value):
            raise ValueError("must be a postgresql:// URL, or empty for the SQLite ledger in the data dir")
        return value

    @field_validator("storage_url")
    @classmethod
    def _storage(cls, value: str) -> str:
        if value and not (value.startswith("s3://") and len(value) > len("s3://") and value[5] != "/"):
            raise ValueError("must be an s3://bucket/prefix URL, or empty for the data dir")
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker(cls, value: str) -> str:
        if value and not value.startswith(("amqp://", "amqps://", "pyamqp://", "redis://", "rediss://")):
            raise ValueError("must be an amqp:// (RabbitMQ) or redis:// URL, or empty for in-process workers")
        return value

    @model_validator(mode="after")
    def _backend_allowed(self) -> Settings:
        from ..backends import REGISTRY

        for name in self.backends:
            if name != "auto" and name not in REGISTRY:
                raise ValueError(f"unknown backend {name!r} in backends (choices: auto, {', '.join(REGISTRY)})")
        if self.backend not in self.backends:
            raise ValueError(f"the default backend {self.backend!r} is not in backends ({', '.join(self.backends)})")
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``MESHFORGE_SERVICE_*`` variables, then ``overrides`` (None values skipped).

        Args:
            environ: the environment to read (``os.environ`` when None).
            **overrides: field values that win over the environment.

        Returns:
            Validated, frozen :class:`Settings`.

        Raises:
            SettingsError: an unknown ``MESHFORGE_SERVICE_*`` variable or an invalid value; one line naming
                the variable (or option) and the reason.
        """
        env = os.environ if environ is None else environ
        fields = set(cls.model_fields)
        values: dict[str, Any] = {}
        for key, raw in env.items():
            if not key.startswith(ENV_PREFIX):
                continue
            name = key[len(ENV_PREFIX) :].lower()
            if name not in fields:
                raise SettingsError(f"{key}: unknown setting (known: {', '.join(sorted(fields))})")
            values[name] = raw
        for name, value in overrides.items():
            if name not in fields:
                raise SettingsError(f"unknown setting {name!r}")
            if value is not None:
                values[name] = value
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err.get("loc", ())) or "settings"
            from_env = loc in values and overrides.get(loc) is None  # an option left unset does not count
            source = f"{ENV_PREFIX}{loc.upper()}" if from_env else loc
            raise SettingsError(f"{source}: {err.get('msg', 'invalid value')}") from None

    def resolved_devices(self) -> tuple[str, ...]:
        """The worker devices: ``auto`` becomes every CUDA device PyTorch sees (``cuda:0``…), else ``cpu``.

        PyTorch is imported only when it is installed and ``auto`` was asked for.
        """
        return resolve_devices(self.devices)

    def broker_queue(self) -> str:
        """The broker queue of this model version: ``queue``, or ``queue.weights_version`` when set."""
        return f"{self.queue}.{self.weights_version}" if self.weights_version else self.queue

    def in_process_workers(self) -> bool:
        """Whether ``meshforge serve`` runs jobs in its own worker threads (not with ``workers=0`` or a broker)."""
        return self.workers != 0 if self.workers is not None else not self.broker_url

    def auth_enabled(self) -> bool:
        """Whether ``/v1`` requires ``Authorization: Bearer <key>``."""
        return bool(self.api_keys)
