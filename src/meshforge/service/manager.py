"""The service behind the routes: submissions (checks, idempotency, cache), views of jobs, artifacts,
readiness. Route handlers stay thin and call one method here; every refusal is a
:class:`~meshforge.service.problems.ProblemError` with a stable code.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..config import InputConfig
from ..errors import InputError
from ..export import safe_stem
from ..io.images import probe_image
from .backends import BackendUnavailable, backend_statuses
from .events import ChangeHub
from .jobs import (
    CUTOUT_PNG,
    INPUT_DIR,
    PICTURE_PNG,
    PREVIEW_PNG,
    RAW_FILE,
    RESULT_FILES,
    RESULT_GLB,
    JobOutcome,
    write_atomic,
)
from .logs import job_event
from .metrics import ServiceMetrics, gpu_memory
from .options import (
    fingerprint,
    normalize_export_options,
    normalize_generate_options,
    normalize_optimize_options,
    public_options,
    request_hash,
)
from .problems import STORAGE_FULL, ProblemError, one_line
from .schemas import (
    BackendInfo,
    BackendList,
    ExportSummary,
    GpuMemory,
    Job,
    JobError,
    JobInput,
    JobLinks,
    JobList,
    Progress,
    Readiness,
    RemoteWorkerInfo,
    Timings,
    WorkerInfo,
)
from .settings import Settings
from .storage import CreateOutcome, JobRow, JobStore, NewJob, decode_cursor, encode_cursor, new_job_id
from .workers import WorkerPool

log = logging.getLogger("meshforge.service")

IMAGE_TYPES: dict[str, tuple[str, str]] = {
    "PNG": ("png", "image/png"),
    "JPEG": ("jpg", "image/jpeg"),
    "WEBP": ("webp", "image/webp"),
    "AVIF": ("avif", "image/avif"),
    "GIF": ("gif", "image/gif"),
    "BMP": ("bmp", "image/bmp"),
    "DIB": ("bmp", "image/bmp"),
    "TIFF": ("tif", "image/tiff"),
    "TGA": ("tga", "image/x-tga"),
    "PPM": ("ppm", "image/x-portable-anymap"),
    "ICO": ("ico", "image/vnd.microsoft.icon"),
    "JPEG2000": ("jp2", "image/jp2"),
    "QOI": ("qoi", "image/qoi"),
}
MESH_TYPES: dict[str, str] = {
    "glb": "model/gltf-binary",
    "gltf": "model/gltf+json",
    "obj": "model/obj",
    "ply": "application/octet-stream",
    "stl": "model/stl",
}
RESULT_TYPES: dict[str, tuple[str, str]] = {
    "glb": ("glb", "model/gltf-binary"),
    "obj": ("zip", "application/zip"),
    "ply": ("ply", "application/octet-stream"),
    "stl": ("stl", "model/stl"),
}


@dataclass(frozen=True)
class Upload:
    """An uploaded file as the route received it."""

    data: bytes
    filename: str


@dataclass(frozen=True)
class FileAnswer:
    """A file to stream back."""

    path: Path
    filename: str
    media_type: str


def _iso(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, tz=UTC) if ts is not None else None


def _error(job: JobRow) -> JobError | None:
    return JobError(code=job.error_code, message=job.error_message or "") if job.error_code else None


def _links(job: JobRow) -> JobLinks:
    base = f"/v1/jobs/{job.id}"
    done = job.state == "succeeded"
    return JobLinks(
        job=base,
        events=f"{base}/events",
        cancel=f"{base}/cancel",
        input=f"{base}/input",
        result=f"{base}/result?format=glb" if done else None,
        preview=f"{base}/preview.png" if done else None,
        cutout=f"{base}/cutout" if done and job.kind == "generate" else None,
        exports=f"{base}/exports" if done and job.kind == "generate" else None,
        picture=f"{base}/picture" if job.options.get("prompt") else None,
    )


def detect_mesh_format(data: bytes, filename: str) -> str:
    """The mesh format of an upload: its file extension when it has one, else its content.

    Raises:
        ProblemError: 415 when the format is not one of glb, gltf, obj, ply, stl or cannot be told.
    """
    suffix = Path(filename).suffix.lower().lstrip(".")
    if suffix:
        if suffix not in MESH_TYPES:
            raise ProblemError(
                415,
                "unsupported_media_type",
                f"{filename}: .{suffix} meshes are not supported (choices: {', '.join(MESH_TYPES)})",
            )
        return suffix
    head = data[:512].lstrip()
    if data[:4] == b"glTF":
        return "glb"
    if head[:3] == b"ply":
        return "ply"
    if head[:1] == b"{":
        return "gltf"
    if len(data) >= 84 and len(data) == 84 + 50 * int.from_bytes(data[80:84], "little"):
        return "stl"
    if head[:5].lower() == b"solid":
        return "stl"
    if any(line.strip().startswith((b"v ", b"f ", b"o ", b"mtllib")) for line in head.splitlines()):
        return "obj"
    raise ProblemError(
        415,
        "unsupported_media_type",
        f"{filename or 'upload'}: cannot tell the mesh format; name it .glb/.gltf/.obj/.ply/.stl",
    )


class JobManager:
    """Owns the ledger, the workers and the metrics of one app.

    Build with :meth:`start` (opens the ledger, re-queues running jobs whose lease expired, starts the
    workers) and end with :meth:`shutdown` (or :meth:`drain` first, on SIGTERM).
    """

    def __init__(self, settings: Settings, hub: ChangeHub) -> None:
        self.settings = settings
        self.hub = hub
        self.store = JobStore(
            settings.data_dir,
            notify=hub.notify,
            database_url=settings.database_url,
            storage_url=settings.storage_url,
        )
        self.pool = WorkerPool(settings, self.store, on_outcome=self._on_outcome)
        scaled = bool(settings.broker_url) or not settings.in_process_workers()
        self.metrics = ServiceMetrics(self.store, self.pool.status, self.remote_workers if scaled else None)
        self._mean_run_s = 5.0
        self.stopping = False
        #: the job-message sender when jobs run in ``meshforge worker`` processes (``broker_url``)
        self.broker: Any = None
        self._resend = False  # a message could not be sent: send every queued job's again at the next tick
        if settings.broker_url:
            from .tasks import Broker

            self.broker = Broker(settings)

    @classmethod
    def start(cls, settings: Settings, hub: ChangeHub) -> JobManager:
        """Open the ledger under ``settings.data_dir``, re-queue jobs whose lease expired, start the workers.

        Jobs another live process is running (their lease is valid) are left alone.
        """
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        manager = cls(settings, hub)
        manager.recover()
        manager.store.remove_orphans()
        manager.pool.start()
        if manager.broker is not None:
            # a server killed between queueing a job and sending its message left it without one: send
            # every queued job's (a worker drops a message whose job is no longer queued)
            manager._resend = True
            manager.resend_queued()
        return manager

    def dispatch(self, job_id: str) -> None:
        """Get a queued job run: send its message (``broker_url``), or wake the in-process workers."""
        if self.broker is None:
            self.pool.wake()
            return
        try:
            self.broker.send(job_id)
        except Exception as exc:  # the ledger has the job: it is sent again once the broker is back
            log.warning("job %s: cannot send its message to the broker (%s); will retry", job_id, one_line(exc))
            self._resend = True

    def resend_queued(self) -> int:
        """After a failed send (or at startup): send the message of every queued job again.

        Returns:
            The number of messages sent.
        """
        if self.broker is None or not self._resend:
            return 0
        self._resend = False
        ids = self.store.queued_ids()
        for n, job_id in enumerate(ids):
            try:
                self.broker.send(job_id)
            except Exception as exc:
                log.warning("cannot send queued jobs to the broker (%s); will retry", one_line(exc))
                self._resend = True
                return n
        return len(ids)

    def remote_workers(self) -> list[Any]:
        """The ``meshforge worker`` processes seen in their last three heartbeat periods (ledger rows)."""
        return self.store.workers(seen_after=time.time() - 3 * self.settings.worker_heartbeat_s)

    def recover(self) -> list[str]:
        """Re-queue running jobs whose lease expired (their process died); fail those started too often.

        Returns:
            The re-queued job ids.
        """
        requeued, failed = self.store.recover(self.settings.max_attempts, self.settings.ttl_s)
        for job_id in requeued:
            job_event("job.requeued", job_id, reason="lease_expired")
            if self.broker is not None:
                self.dispatch(job_id)
        for job_id in failed:
            job_event("job.finished", job_id, state="failed", code="interrupted", run_s=None)
        if requeued or failed:
            log.warning(
                "recovered %d job(s) whose lease expired; %d failed after too many attempts",
                len(requeued),
                len(failed),
            )
            self.pool.wake()
        return requeued

    def drain(self, grace_s: float) -> list[str]:
        """Stop taking jobs, let the running ones finish for up to ``grace_s`` seconds, then put those
        still running back in the queue. Submissions get 503 ``shutting_down`` from now on.

        Returns:
            The ids of the jobs put back in the queue.
        """
        self.stopping = True
        self.pool.close()
        if self.pool.wait_idle(grace_s):
            return []
        requeued = self.pool.interrupt()
        for job_id in requeued:
            job_event("job.requeued", job_id, reason="shutdown")
        return requeued

    def shutdown(self) -> None:
        """Drain (see :meth:`drain`, ``shutdown_grace_s``) unless already drained, then stop the workers."""
        if not self.stopping:
            self.drain(self.settings.shutdown_grace_s)
        self.pool.interrupt()
        self.pool.join(5.0)
        self.hub.bind(None)

    def _on_outcome(self, outcome: JobOutcome) -> None:
        self.metrics.observe(outcome)
        run_s = outcome.timings.get("run_s")
        if outcome.state == "succeeded" and run_s is not None:
            self._mean_run_s = 0.8 * self._mean_run_s + 0.2 * float(run_s)

    # -- submission ---------------------------------------------------------------------------------
    def submit(
        self,
        kind: str,
        upload: Upload,
        options: dict[str, Any],
        *,
        owner: str,
        idempotency_key: str | None,
    ) -> tuple[Job, str]:
        """Check and queue a job (or answer with an equivalent one).

        Args:
            kind: ``"generate"`` (a picture) or ``"optimize"`` (a mesh).
            upload: the uploaded file.
            options: the raw options (generate: resolution, faces, texture_size, no_texture,
                foreground_ratio, background, backend; optimize: faces, texture_size, preset).
            owner: the API key's owner id (``""`` without authentication).
            idempotency_key: the ``Idempotency-Key`` header, if any.

        Returns:
            ``(job, how)``, ``how`` being ``created``, ``replayed`` or ``cached``.

        Raises:
            ProblemError: 413 ``payload_too_large``; 415 ``unsupported_media_type``; 422 ``invalid_image``,
                ``invalid_mesh``, ``invalid_options``, ``backend_unavailable``, ``idempotency_key_mismatch``;
                429 ``queue_full`` with ``Retry-After``; 503 ``shutting_down`` with ``Retry-After`` while the
                server drains; 507 ``insufficient_storage`` when storing the upload would leave less than
                ``min_free_bytes`` free (a write that finds the disk full raises ``OSError``/``sqlite3.Error``,
                which the app answers with 507 too; nothing of the upload is left behind either way).
        """
        s = self.settings
        self._check_running()
        stem = safe_stem(Path(upload.filename or "").stem, default="image" if kind == "generate" else "mesh")[:100]
        limit = s.max_image_bytes if kind == "generate" else s.max_mesh_bytes
        if len(upload.data) > limit:
            self.metrics.submitted.labels(kind, "rejected").inc()
            raise ProblemError(
                413, "payload_too_large", f"{stem}: {len(upload.data)} bytes is more than the limit of {limit} bytes"
            )
        if not upload.data:
            self.metrics.submitted.labels(kind, "rejected").inc()
            raise ProblemError(
                422, "invalid_image" if kind == "generate" else "invalid_options", f"{stem}: empty upload"
            )
        norm = self._normalize(kind, options)
        if kind == "generate":
            ext, media_type, sha = self._check_image(upload.data, stem, kind)
        else:
            ext = detect_mesh_format(upload.data, upload.filename or "")
            self._check_mesh(upload.data, ext, f"{stem}.{ext}", kind)
            media_type, sha = MESH_TYPES[ext], hashlib.sha256(upload.data).hexdigest()
        return self._queue(kind, upload.data, stem, ext, media_type, sha, norm, owner, idempotency_key)

    def _check_running(self) -> None:
        """503 ``shutting_down`` (with ``Retry-After``) while the server drains."""
        if self.stopping:
            retry = max(1, math.ceil(self.settings.shutdown_grace_s))
            raise ProblemError(
                503,
                "shutting_down",
                f"this server is shutting down and takes no new jobs; retry in {retry} s",
                headers={"Retry-After": str(retry)},
            )

    def _normalize(self, kind: str, options: dict[str, Any]) -> dict[str, Any]:
        """The stored options of a new generate or optimize job, or 422 ``invalid_options`` /
        ``backend_unavailable``."""
        try:
            if kind == "generate":
                return normalize_generate_options(self.settings, **options)
            return normalize_optimize_options(self.settings, **options)
        except InputError as exc:
            self.metrics.submitted.labels(kind, "rejected").inc()
            code = "backend_unavailable" if isinstance(exc, BackendUnavailable) else "invalid_options"
            raise ProblemError(422, code, str(exc)) from None

    def _queue(
        self,
        kind: str,
        data: bytes,
        stem: str,
        ext: str,
        media_type: str,
        sha: str,
        norm: dict[str, Any],
        owner: str,
        idempotency_key: str | None,
    ) -> tuple[Job, str]:
        """Store the input as ``input/<stem>.<ext>`` and create the job (or answer with an equivalent one);
        nothing is left behind when it is refused."""
        s = self.settings
        if self.store.free_bytes() - len(data) < s.min_free_bytes:
            self.metrics.submitted.labels(kind, "rejected").inc()
            raise ProblemError(507, "insufficient_storage", STORAGE_FULL)
        job_id = new_job_id()
        folder = self.store.job_dir(job_id)
        (folder / INPUT_DIR).mkdir(parents=True)
        input_file = f"{INPUT_DIR}/{stem}.{ext}"
        try:
            (folder / input_file).write_bytes(data)
            if self.store.artifacts is not None:  # workers on other machines read it from the object store
                self.store.artifacts.put_file(job_id, input_file, folder / input_file)
            new = NewJob(
                id=job_id,
                kind=kind,
                owner=owner,
                idempotency_key=idempotency_key,
                request_hash=request_hash(kind, sha, norm),
                fingerprint=fingerprint(kind, sha, norm, s),
                input_name=f"{stem}.{ext}",
                input_file=input_file,
                input_sha256=sha,
                input_bytes=len(data),
                input_media_type=media_type,
                options=norm,
                backend=norm.get("backend"),
            )
            outcome = self.store.create(new, max_queue=s.max_queue, ttl_s=s.ttl_s)
        except BaseException:
            self.store.remove_files(job_id)
            raise
        if outcome.how != "created":
            self.store.remove_files(job_id)
        self._refuse(outcome, kind, idempotency_key)
        assert outcome.job is not None
        self.metrics.submitted.labels(kind, outcome.how).inc()
        job_event("job.submitted", outcome.job.id, kind=kind, how=outcome.how, input_bytes=len(data))
        if outcome.how == "created":
            self.dispatch(outcome.job.id)
        return self.view(outcome.job, cached=outcome.how == "cached"), outcome.how

    def submit_prompt(
        self, prompt: str, seed: int | None, options: dict[str, Any], *, owner: str, idempotency_key: str | None
    ) -> tuple[Job, str]:
        """Check and queue a prompt job: a generate job whose input is the prompt (stored as
        ``input/<stem>.txt``, UTF-8; the stem made from the prompt) and whose worker first makes the picture
        with the server's text-to-image model (``settings.t2i_model``).

        Args:
            prompt: the user's prompt (:func:`meshforge.t2i.check_prompt`).
            seed: the text-to-image seed (None: 0).
            options, owner, idempotency_key: see :meth:`submit` (generate options).

        Returns:
            ``(job, how)`` as :meth:`submit`; the same prompt, seed, options and model is answered from the
            cache.

        Raises:
            ProblemError: 422 ``invalid_prompt`` (empty, over-long), ``invalid_options``,
                ``backend_unavailable``; 429, 503, 507 as :meth:`submit`.
        """
        from ..t2i import T2IConfig, check_prompt, prompt_stem

        self._check_running()
        try:
            text = check_prompt(prompt)
        except InputError as exc:
            self.metrics.submitted.labels("generate", "rejected").inc()
            raise ProblemError(422, "invalid_prompt", str(exc)) from None
        try:
            T2IConfig(model=self.settings.t2i_model, seed=seed or 0).validate()
        except InputError as exc:
            self.metrics.submitted.labels("generate", "rejected").inc()
            raise ProblemError(422, "invalid_options", str(exc).replace("--seed", "seed")) from None
        norm = self._normalize("generate", options)
        norm.update(prompt=True, t2i={"model": self.settings.t2i_model, "seed": seed or 0})
        data = text.encode("utf-8")
        sha = hashlib.sha256(data).hexdigest()
        return self._queue(
            "generate", data, prompt_stem(text), "txt", "text/plain; charset=utf-8", sha, norm, owner, idempotency_key
        )

    def submit_export(
        self, parent_id: str, options: dict[str, Any], *, owner: str, idempotency_key: str | None
    ) -> tuple[Job, str]:
        """Queue an export: the raw of the succeeded generate job ``parent_id`` finished again with other
        options (an ``export`` job: same states, leases, progress, cancel, delete, expiry and idempotency
        as the others; it needs no backend). An identical export of the same parent answers ``cached``.

        Args:
            parent_id: the generate job.
            options: ``faces``, ``texture_size``, ``preset``, ``no_texture`` (see
                :func:`~meshforge.service.options.normalize_export_options`; unset ones are the parent's).
            owner, idempotency_key: as for :meth:`submit`.

        Returns:
            ``(job, how)``, ``how`` being ``created``, ``replayed`` or ``cached``.

        Raises:
            ProblemError: 404 ``not_found``; 409 ``job_not_finished`` (the parent has not succeeded),
                ``no_raw`` (not a generate job, or a job made by a version that kept no raw); 422
                ``invalid_options``, ``idempotency_key_mismatch``; 429 ``queue_full``; 503 ``shutting_down``.
        """
        s = self.settings
        kind = "export"
        if self.stopping:
            retry = max(1, math.ceil(s.shutdown_grace_s))
            raise ProblemError(
                503,
                "shutting_down",
                f"this server is shutting down and takes no new jobs; retry in {retry} s",
                headers={"Retry-After": str(retry)},
            )
        parent = self._succeeded(parent_id, owner)
        raw_path = self.store.job_dir(parent.id) / RAW_FILE
        if parent.kind != "generate":
            raise ProblemError(
                409,
                "no_raw",
                f"job {parent.id} is an {parent.kind} job: only generate jobs keep a raw to re-export "
                + (
                    "(submit the mesh again with other options)" if parent.kind == "optimize" else "(export its parent)"
                ),
            )
        try:
            norm = normalize_export_options(s, parent.options, **options)
        except InputError as exc:
            self.metrics.submitted.labels(kind, "rejected").inc()
            raise ProblemError(422, "invalid_options", str(exc)) from None
        try:
            data = (self.store.local_file(parent.id, RAW_FILE) or raw_path).read_bytes()
        except FileNotFoundError:
            raise ProblemError(
                409,
                "no_raw",
                f"job {parent.id} has no raw to re-export (made by an older version): submit the picture again",
            ) from None
        sha = hashlib.sha256(data).hexdigest()
        job_id = new_job_id()
        folder = self.store.job_dir(job_id)
        folder.mkdir(parents=True)
        try:
            new = NewJob(
                id=job_id,
                kind=kind,
                owner=parent.owner,
                idempotency_key=idempotency_key,
                request_hash=request_hash(kind, f"{parent.id}:{sha}", norm),
                fingerprint=fingerprint(kind, f"{parent.id}:{sha}", norm, s),
                input_name=f"{Path(parent.input_name).stem}.mfraw",
                input_file=RAW_FILE,
                input_sha256=sha,
                input_bytes=len(data),
                input_media_type="application/octet-stream",
                options=norm,
                backend=None,
                parent_id=parent.id,
            )
            outcome = self.store.create(new, max_queue=s.max_queue, ttl_s=s.ttl_s)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        if outcome.how != "created":
            shutil.rmtree(folder, ignore_errors=True)
        if outcome.how == "parent_gone":
            raise ProblemError(404, "not_found", f"no job {parent_id!r} (it was deleted)")
        self._refuse(outcome, kind, idempotency_key)
        assert outcome.job is not None
        self.metrics.submitted.labels(kind, outcome.how).inc()
        job_event("job.submitted", outcome.job.id, kind=kind, how=outcome.how, parent=parent.id)
        if outcome.how == "created":
            self.dispatch(outcome.job.id)
        return self.view(outcome.job, cached=outcome.how == "cached"), outcome.how

    def _check_image(self, data: bytes, stem: str, kind: str) -> tuple[str, str, str]:
        """Check the picture's header and container (format, size, pixel count; see
        :func:`~meshforge.io.images.probe_image`) without decoding its pixels, which the worker does, a
        bounded number at a time; returns (ext, media type, sha256)."""
        s = self.settings
        try:
            header = probe_image(data, InputConfig(max_pixels=s.max_pixels, max_bytes=s.max_image_bytes), name=stem)
        except InputError as exc:
            self.metrics.submitted.labels(kind, "rejected").inc()
            message = str(exc)
            if "not supported" in message or "not in a supported format" in message:
                raise ProblemError(415, "unsupported_media_type", message) from None
            raise ProblemError(422, "invalid_image", message) from None
        ext, media_type = IMAGE_TYPES.get(header.format, ("img", "application/octet-stream"))
        return ext, media_type, hashlib.sha256(data).hexdigest()

    def _check_mesh(self, data: bytes, ext: str, name: str, kind: str) -> None:
        """Read the mesh once (so an unreadable one is refused now, not after queueing).

        Raises:
            ProblemError: 422 ``invalid_mesh``, one line starting with the file's name (corrupt or truncated
                file, no triangles, external files a single upload cannot carry, …).
        """
        from ..io.meshes import load_mesh

        try:
            load_mesh(data, fmt=ext, max_bytes=self.settings.max_mesh_bytes, name=name)
        except InputError as exc:
            self.metrics.submitted.labels(kind, "rejected").inc()
            raise ProblemError(422, "invalid_mesh", str(exc)) from None

    def _refuse(self, outcome: CreateOutcome, kind: str, idempotency_key: str | None) -> None:
        """Raise the problem a refused :meth:`JobStore.create` answers with: 429 ``queue_full`` (with
        ``Retry-After``) or 422 ``idempotency_key_mismatch``; return for a created, cached or replayed job."""
        if outcome.how == "queue_full":
            self.metrics.submitted.labels(kind, "rejected").inc()
            retry = self.retry_after()
            raise ProblemError(
                429,
                "queue_full",
                f"{outcome.queue_depth} jobs are waiting, the limit is {self.settings.max_queue}; retry in {retry} s",
                headers={"Retry-After": str(retry)},
                queue_depth=outcome.queue_depth,
            )
        if outcome.how == "key_mismatch":
            assert outcome.job is not None
            self.metrics.submitted.labels(kind, "rejected").inc()
            raise ProblemError(
                422,
                "idempotency_key_mismatch",
                f"Idempotency-Key {idempotency_key!r} was used for a different request (job {outcome.job.id})",
                job_id=outcome.job.id,
            )

    def retry_after(self) -> int:
        """Seconds until the queue has room again (a worker takes the next job): the recent mean job time
        divided by the number of workers, 1 to 3600."""
        workers = max(1, len(self.pool.workers))
        return int(min(3600, max(1, math.ceil(self._mean_run_s / workers))))

    # -- reading ------------------------------------------------------------------------------------
    def view(self, job: JobRow, *, cached: bool = False, with_report: bool = True) -> Job:
        """The API's view of a stored job."""
        error = _error(job)
        exports = [
            ExportSummary(
                id=e.id,
                state=e.state,  # type: ignore[arg-type]
                options=public_options(e.kind, e.options),
                created_at=_iso(e.created_at),  # type: ignore[arg-type]
                error=_error(e),
                links=_links(e),
            )
            for e in (self.store.exports(job.id) if job.kind == "generate" else ())
        ]
        return Job(
            id=job.id,
            kind=job.kind,  # type: ignore[arg-type]
            parent=job.parent_id,
            state=job.state,  # type: ignore[arg-type]
            cached=cached,
            degraded=job.degraded,
            cancel_requested=job.cancel_requested,
            attempts=job.attempts,
            backend=job.backend,
            options=public_options(job.kind, job.options),
            effective_options=public_options(job.kind, job.effective_options) if job.effective_options else None,
            input=JobInput(
                name=job.input_name, sha256=job.input_sha256, bytes=job.input_bytes, media_type=job.input_media_type
            ),
            progress=Progress(stage=job.stage, percent=job.percent, queue_position=self.store.queue_position(job)),
            created_at=_iso(job.created_at),  # type: ignore[arg-type]
            started_at=_iso(job.started_at),
            finished_at=_iso(job.finished_at),
            expires_at=_iso(job.expires_at),
            timings=Timings(**job.timings),
            error=error,
            warnings=[str(w) for w in (job.report or {}).get("warnings") or ()],
            report=job.report if with_report else None,
            exports=exports,
            links=_links(job),
        )

    def get_row(self, job_id: str, owner: str) -> JobRow:
        """The stored job, or 404 ``not_found``."""
        job = self.store.get(job_id, self._owner(owner)) if job_id.isalnum() and len(job_id) <= 64 else None
        if job is None:
            raise ProblemError(404, "not_found", f"no job {job_id!r} (it may have expired)")
        return job

    def get(self, job_id: str, owner: str) -> Job:
        """A job's view, or 404 ``not_found``."""
        return self.view(self.get_row(job_id, owner))

    def list_jobs(self, owner: str, states: list[str] | None, limit: int, cursor: str | None) -> JobList:
        """A page of jobs, newest first (reports left out).

        Raises:
            ProblemError: 422 ``invalid_cursor``.
        """
        before = None
        if cursor:
            try:
                before = decode_cursor(cursor)
            except ValueError:
                raise ProblemError(422, "invalid_cursor", "cursor: not a cursor this server issued") from None
        if states and "dead" in states:  # the dead-letter list: jobs that failed (their last error kept)
            states = sorted({"failed" if st == "dead" else st for st in states})
        rows, nxt = self.store.list_jobs(owner=self._owner(owner), states=states, limit=limit, before_seq=before)
        return JobList(
            items=[self.view(r, with_report=False) for r in rows],
            next_cursor=encode_cursor(nxt) if nxt is not None else None,
        )

    def cancel(self, job_id: str, owner: str) -> Job:
        """Cancel a queued job now, a running one at its next stage boundary.

        Raises:
            ProblemError: 404 ``not_found``; 409 ``not_cancelable`` when it already succeeded or failed.
        """
        job = self.get_row(job_id, owner)
        if job.state in ("succeeded", "failed"):
            raise ProblemError(409, "not_cancelable", f"job {job_id} already {job.state}", state=job.state)
        after = self.store.cancel(job_id, self._owner(owner), self.settings.ttl_s)
        if after is None:  # pragma: no cover - expired in between
            raise ProblemError(404, "not_found", f"no job {job_id!r}")
        if job.state == "queued" and after.state == "canceled":  # a running one is logged by its worker
            job_event("job.finished", job_id, kind=job.kind, state="canceled", code="canceled", run_s=None)
        return self.view(after)

    def retry(self, job_id: str, owner: str) -> Job:
        """Put a failed (dead-letter) or canceled job back in the queue, as new: its attempts, error and
        degraded flag are cleared and it runs with the options it was submitted with.

        Raises:
            ProblemError: 404 ``not_found``; 409 ``not_retryable`` when it is queued, running or succeeded;
                503 ``shutting_down``.
        """
        job = self.get_row(job_id, owner)
        if self.stopping:
            raise ProblemError(503, "shutting_down", "this server is shutting down; retry on another server")
        if job.state not in ("failed", "canceled"):
            raise ProblemError(
                409, "not_retryable", f"job {job_id} is {job.state}: only failed or canceled jobs can be retried"
            )
        after = self.store.retry(job.id, self._owner(owner))
        if after is None:  # pragma: no cover - deleted in between
            raise ProblemError(404, "not_found", f"no job {job_id!r}")
        if after.state == "queued":
            job_event("job.retried", job.id, kind=job.kind, previous=job.error_code)
            self.dispatch(job.id)
        return self.view(after)

    def delete(self, job_id: str, owner: str) -> None:
        """Delete a job in any state: its ledger row and its folder (upload, result, every artifact).

        A queued job is never started; a running one is dropped by its worker at the next stage boundary,
        which then removes anything it wrote meanwhile. Followers of its events get an ``error`` event.

        Raises:
            ProblemError: 404 ``not_found`` (unknown, expired, someone else's, or already deleted).
        """
        job = self.get_row(job_id, owner)
        if not self.store.delete(job.id, self._owner(owner)):
            raise ProblemError(404, "not_found", f"no job {job_id!r} (it may have expired)")
        log.info("job %s deleted (it was %s)", job.id, job.state)

    def backends(self) -> BackendList:
        """The enabled backends, each with whether a job asking for it can run now."""
        return BackendList(
            default=self.settings.backend,
            items=[BackendInfo(**vars(b)) for b in backend_statuses(self.settings)],
        )

    def _owner(self, owner: str) -> str | None:
        return owner if self.settings.auth_enabled() else None

    # -- artifacts ----------------------------------------------------------------------------------
    def _succeeded(self, job_id: str, owner: str) -> JobRow:
        job = self.get_row(job_id, owner)
        if job.state != "succeeded":
            raise ProblemError(
                409,
                "job_not_finished",
                f"job {job_id} is {job.state}" + (f": {job.error_message}" if job.error_message else ""),
                state=job.state,
            )
        return job

    def result(self, job_id: str, owner: str, fmt: str) -> FileAnswer:
        """The asset file in ``fmt`` (glb, obj as a zip, ply, stl), as the job wrote it when it ended.

        Jobs of versions that kept a pickled asset (``asset.pkl``, never read) instead of every format
        still serve their GLB and the formats already made; another format answers 404 ``artifact_missing``.

        Raises:
            ProblemError: 404 ``not_found`` / ``artifact_missing``; 409 ``job_not_finished``.
        """
        job = self._succeeded(job_id, owner)
        ext, media_type = RESULT_TYPES[fmt]
        stem = safe_stem(Path(job.input_name).stem)
        path = self.store.local_file(job.id, RESULT_FILES[fmt])
        if path is None:
            if fmt != "glb" and self.store.local_file(job.id, RESULT_GLB) is not None:
                raise ProblemError(
                    404,
                    "artifact_missing",
                    f"job {job.id} was made by an older version that kept no {fmt.upper()} file: download "
                    "format=glb, or submit the input again",
                )
            raise ProblemError(404, "artifact_missing", f"job {job.id}: its files are gone")
        return FileAnswer(path, f"{stem}.{ext}", media_type)

    def result_url(self, job_id: str, owner: str, fmt: str, expires_s: int = 3600) -> str | None:
        """A presigned URL of the asset file in ``fmt`` in the object store (valid ``expires_s`` seconds),
        or None when the job files are kept only in the data dir (no ``storage_url``).

        Raises:
            ProblemError: 404 ``not_found`` / ``artifact_missing``; 409 ``job_not_finished``.
        """
        store = self.store.artifacts
        if store is None:
            return None
        job = self._succeeded(job_id, owner)
        ext, media_type = RESULT_TYPES[fmt]
        if not store.exists(job.id, RESULT_FILES[fmt]):
            raise ProblemError(404, "artifact_missing", f"job {job.id}: its {fmt.upper()} file is gone")
        name = f"{safe_stem(Path(job.input_name).stem)}.{ext}"
        return store.presign(job.id, RESULT_FILES[fmt], filename=name, media_type=media_type, expires_s=expires_s)

    def preview(self, job_id: str, owner: str) -> FileAnswer:
        """A PNG sheet of rendered views of the asset (unlit and lit), rendered from the job's GLB
        (:func:`~meshforge.io.meshes.load_mesh`) on first request."""
        job = self._succeeded(job_id, owner)
        path = self.store.job_dir(job.id) / PREVIEW_PNG
        if not path.is_file():
            from PIL import Image as PILImage

            from ..eval.diagnostics import preview_sheet
            from ..io.meshes import load_mesh

            glb = self.result(job_id, owner, "glb").path
            sheet = preview_sheet(load_mesh(glb, fmt="glb"), size=256)
            buf = io.BytesIO()
            PILImage.fromarray(sheet).save(buf, format="PNG", compress_level=6)
            write_atomic(path, buf.getvalue())
        return FileAnswer(path, f"{safe_stem(Path(job.input_name).stem)}.preview.png", "image/png")

    def cutout(self, job_id: str, owner: str) -> FileAnswer:
        """The prepared picture the backend saw (square RGBA PNG, alpha = the cut-out object mask).

        Raises:
            ProblemError: 404 ``not_found``, or ``artifact_missing`` (an optimize job, or a job run by a
                version that did not keep it); 409 ``job_not_finished``.
        """
        job = self._succeeded(job_id, owner)
        path = self.store.local_file(job.id, CUTOUT_PNG)
        if path is None:
            why = "optimize jobs have no cut-out picture" if job.kind == "optimize" else "its cut-out picture is gone"
            raise ProblemError(404, "artifact_missing", f"job {job.id}: {why}")
        return FileAnswer(path, f"{safe_stem(Path(job.input_name).stem)}.cutout.png", "image/png")

    def picture(self, job_id: str, owner: str) -> FileAnswer:
        """A prompt job's generated picture (PNG), in any state once its text-to-image stage made it.

        Raises:
            ProblemError: 404 ``not_found``, or ``artifact_missing`` (not a prompt job, or not made yet).
        """
        job = self.get_row(job_id, owner)
        path = self.store.job_dir(job.id) / PICTURE_PNG
        if not path.is_file():
            why = "it is not a prompt job" if not job.options.get("prompt") else "its picture is not made yet"
            raise ProblemError(404, "artifact_missing", f"job {job.id}: {why}")
        return FileAnswer(path, f"{safe_stem(Path(job.input_name).stem)}.picture.png", "image/png")

    def input(self, job_id: str, owner: str) -> FileAnswer:
        """The uploaded file, as stored."""
        job = self.get_row(job_id, owner)
        path = self.store.local_file(job.parent_id or job.id, job.input_file)
        if path is None:
            raise ProblemError(404, "artifact_missing", f"job {job.id}: its input is gone")
        return FileAnswer(path, job.input_name, job.input_media_type)

    # -- operations ---------------------------------------------------------------------------------
    def readiness(self) -> Readiness:
        """Workers, queue, free disk space and GPU memory; ``ready`` when every worker is alive with its
        backend built and the data dir's filesystem has at least ``min_free_bytes`` free (``reasons``
        says what is wrong otherwise)."""
        workers = [WorkerInfo(**vars(w)) for w in self.pool.status()]
        reasons = []
        checks: dict[str, bool] = {}
        if self.stopping:
            reasons.append("the service is shutting down")
        if self.settings.in_process_workers() and (
            not workers or not all(w.alive and w.backend_loaded for w in workers)
        ):
            reasons.append("a worker is not running or has not built its backend")
        try:
            counts = self.store.counts()
            checks["ledger"] = True
        except Exception as exc:
            log.warning("readiness: the job ledger cannot be reached: %s", one_line(exc))
            counts, checks["ledger"] = dict.fromkeys(("queued", "running"), 0), False
            reasons.append(f"the job ledger ({self.store.engine}) cannot be reached")
        for what, ping in (("broker", self.broker), ("store", self.store.artifacts)):
            if ping is None:
                continue
            try:
                ping.ping()
                checks[what] = True
            except Exception as exc:
                log.warning("readiness: the %s cannot be reached: %s", what, one_line(exc))
                checks[what] = False
                reasons.append(
                    "the broker cannot be reached" if what == "broker" else "the object store cannot be reached"
                )
        remote: list[RemoteWorkerInfo] = []
        if checks.get("ledger") and (self.broker is not None or not self.settings.in_process_workers()):
            remote = [RemoteWorkerInfo(**vars(w)) for w in self.remote_workers()]
        if self.broker is not None and not any(w.accepting for w in remote):
            reasons.append("no live meshforge worker is taking jobs (none started, or all short of free VRAM)")
        free = self.store.free_bytes()
        if free < self.settings.min_free_bytes:
            reasons.append(
                f"only {free / 2**20:.1f} MiB free on the data dir's disk, below min_free_bytes "
                f"({self.settings.min_free_bytes / 2**20:.1f} MiB): free some space"
            )
        return Readiness(
            ready=not reasons,
            reasons=reasons,
            workers=workers,
            queue_depth=counts["queued"],
            running=counts["running"],
            checks=checks,
            remote_workers=remote,
            disk_free_bytes=free,
            gpus=[GpuMemory(**g) for g in gpu_memory()],
        )

    def watchdog(self, now: float | None = None) -> list[str]:
        """Re-queue jobs whose lease expired (see :meth:`recover`) and fail running jobs past their deadline
        (``timeout``; their worker drops them at its next stage). Returns the ids of the failed jobs."""
        if not self.stopping:
            self.recover()
            self.resend_queued()  # after a failed send: once the broker is back
        out = []
        for job in self.store.overdue(now):
            ok = self.store.finish(
                job.id,
                job.attempts,
                "failed",
                ttl_s=self.settings.ttl_s,
                error_code="timeout",
                error_message=one_line(
                    f"the job ran longer than the limit of {self.settings.job_timeout_s:g} s (at stage {job.stage})"
                ),
                timings={"queued_s": round((job.started_at or job.created_at) - job.created_at, 4)},
            )
            if ok:
                self.metrics.finished.labels(job.kind, "failed", "timeout").inc()
                job_event("job.finished", job.id, kind=job.kind, state="failed", code="timeout", run_s=None)
                out.append(job.id)
        return out

    def sweep(self, now: float | None = None) -> list[str]:
        """Delete expired jobs and their files."""
        removed = self.store.expire(time.time() if now is None else now)
        if removed:
            log.info("expired %d job(s)", len(removed))
        return removed
