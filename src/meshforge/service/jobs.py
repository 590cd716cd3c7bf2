"""Running one job: :func:`execute_job` is a plain function of a job id and the settings.

Everything a job needs is in the ledger row and the job's folder, so a distributed engine (a task queue
worker on another machine sharing the data dir) could call ``execute_job(job_id, settings)`` without any
change to the API. The in-process workers (:mod:`meshforge.service.workers`) call it too, passing the
backends they built once.

A job runs with the configuration stored in its ledger row when it was submitted (:mod:`meshforge.service.options`).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import _profiling
from ..backends import Backend, load_backend, resolve_name
from ..config import PipelineConfig
from ..devices import free_memory
from ..errors import BackendError, InputError, MeshforgeError, MissingDependency, StageError, is_out_of_memory
from ..export import export
from ..export._png import encode_png
from ..io.files import write_atomic
from ..raw import Raw, dumps_raw
from ..types import Asset, Image, Report
from .artifacts import publish
from .logs import job_event
from .options import degrade, job_config, optimize_base, pipeline_base, with_config
from .pg import ledger_errors
from .problems import hide_paths, one_line
from .settings import Settings
from .storage import TERMINAL, JobRow, JobStore, is_storage_full, new_lease_owner

log = logging.getLogger("meshforge.service")

#: seconds to pause at every stage boundary of every job, so tests can watch, cancel, drain or kill a
#: server mid-job. Not a setting: no variable or option reaches it; only Python code (the tests, or their
#: launcher ``tests/service/slow_serve.py`` for ``meshforge serve``) can change it. 0 in production.
TEST_STAGE_DELAY_S = 0.0

#: artifact file names inside a job's folder
RESULT_GLB = "result.glb"
#: the asset in every download format (``?format=``), all written when the job ends (GLB last)
RESULT_FILES: dict[str, str] = {
    "glb": RESULT_GLB,
    "obj": "result.obj.zip",
    "ply": "result.ply.ply",
    "stl": "result.stl.stl",
}
#: generate jobs: the raw reconstruction (:mod:`meshforge.raw`), the input of the job's exports
RAW_FILE = "raw.mfraw"
PREVIEW_PNG = "preview.png"
CUTOUT_PNG = "cutout.png"
INPUT_DIR = "input"
#: a prompt job's generated picture, in its input folder (kept when the job fails: it is the 3D stage's input)
PICTURE_PNG = f"{INPUT_DIR}/picture.png"
#: the share of a prompt job's progress the text-to-image stage takes (percent)
T2I_PERCENT = 30.0

#: the error message of a job failed with ``insufficient_storage``
STORAGE_FULL_MESSAGE = (
    "the server ran out of disk space while writing this job's files (they were removed); retry later"
)


# -- backends -----------------------------------------------------------------------------------------
class BackendPool:
    """Backends of one device, each built (weights loaded) once, on first use, then reused.

    Args:
        settings: weights location and whether downloads are allowed.
        device: ``"cpu"`` or ``"cuda:N"``.
    """

    def __init__(self, settings: Settings, device: str) -> None:
        self.settings = settings
        self.device = device
        self._built: dict[str, Backend] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> tuple[Backend, float]:
        """The backend registered as ``name`` (a concrete name, not ``auto``).

        Returns:
            ``(backend, seconds spent building it now)`` (0 when it was built before).

        Raises:
            BackendError, MissingDependency: it cannot be built.
        """
        with self._lock:
            backend = self._built.get(name)
            if backend is not None:
                return backend, 0.0
            start = time.perf_counter()
            backend = load_backend(
                name, weights=self.settings.weights, device=self.device, download=self.settings.download_weights
            )
            self._built[name] = backend
            return backend, time.perf_counter() - start

    def loaded(self) -> list[str]:
        """Names of the backends built so far."""
        with self._lock:
            return sorted(self._built)


_DECODE_SLOTS: dict[int, threading.BoundedSemaphore] = {}
_DECODE_SLOTS_LOCK = threading.Lock()


def decode_slots(limit: int) -> threading.BoundedSemaphore:
    """The process-wide semaphore with ``limit`` slots that a job holds while its picture is decoded
    (``Settings.max_concurrent_decodes``), shared by every worker thread of the process."""
    with _DECODE_SLOTS_LOCK:
        slots = _DECODE_SLOTS.get(limit)
        if slots is None:
            slots = _DECODE_SLOTS[limit] = threading.BoundedSemaphore(limit)
        return slots


_DEFAULT_POOLS: dict[tuple[str, str | None], BackendPool] = {}
_DEFAULT_POOLS_LOCK = threading.Lock()


def default_pool(settings: Settings) -> BackendPool:
    """The process-wide pool used when :func:`execute_job` is called without one (first device)."""
    device = settings.resolved_devices()[0]
    key = (device, settings.weights)
    with _DEFAULT_POOLS_LOCK:
        pool = _DEFAULT_POOLS.get(key)
        if pool is None:
            pool = _DEFAULT_POOLS[key] = BackendPool(settings, device)
        return pool


# -- running ------------------------------------------------------------------------------------------
@dataclass
class JobOutcome:
    """What :func:`execute_job` did.

    ``state`` is the job's new state (``succeeded``, ``failed``, ``canceled``, ``queued`` when it was put
    back because the worker is stopping) or ``"skipped"`` (not queued or not this worker's), ``"missing"``
    (no such job), ``"abandoned"`` (the job was taken away while it ran: timed out by the watchdog, or its
    lease was lost).
    """

    job_id: str
    state: str
    kind: str = ""
    error_code: str | None = None
    degraded: bool = False
    oom_retried: bool = False
    report: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)


class _Stop(Exception):
    """Raised from the progress callback to leave the pipeline at a stage boundary."""


class JobCanceled(_Stop):
    """A cancel was requested for the running job."""


class JobTimedOut(_Stop):
    """The job passed its deadline (``job_timeout_s`` after it started)."""


class JobInterrupted(_Stop):
    """The worker is stopping; the job goes back to the queue."""


class JobAbandoned(_Stop):
    """The job is no longer this attempt's (failed by the watchdog, or re-queued)."""


class JobRequeuedDegraded(Exception):
    """The job ran out of memory on a broker worker: it goes back to the queue with the step-down applied
    (any worker may run it, this one after freeing its memory); the message says what was reduced."""


def execute_job(
    job_id: str,
    settings: Settings,
    *,
    store: JobStore | None = None,
    backends: BackendPool | None = None,
    worker: str | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> JobOutcome:
    """Run one job to a terminal state (at least once: a job interrupted mid-way is run again).

    A ``queued`` job is claimed first (queued → running, under a lease of ``settings.lease_s`` seconds);
    a job already ``running`` is run only when its lease is held by ``worker``. While the job runs, a
    heartbeat thread renews the lease every ``lease_s / 3`` seconds; when the lease is lost (another
    process re-queued the job after it expired, or the watchdog failed it) the job stops at its next stage
    boundary and writes nothing more. The result is written to the job's folder (the asset in every
    format, :data:`RESULT_FILES`, and, for generate jobs, ``raw.mfraw``, the raw reconstruction its exports
    finish again, and ``cutout.png``, the prepared picture the backend saw) before the ledger says
    ``succeeded``; nothing is pickled. An ``export`` job finishes its parent's raw with its own options
    and no backend. A job deleted while it runs is dropped at its next stage
    boundary (``abandoned``) and whatever it wrote is removed. Failures are recorded with a stable
    code: ``invalid_input``, ``backend_error``, ``stage_failed``, ``missing_dependency``, ``out_of_memory``
    (after one retry with :func:`degrade`d settings, which marks the job ``degraded``), ``timeout``,
    ``insufficient_storage`` (a write found the disk full: ``ENOSPC``/``EDQUOT``, or SQLite's
    ``SQLITE_FULL``), ``internal_error``; a cancel request ends the job ``canceled`` at the next stage
    boundary. A failed or canceled job's partial files (everything in its folder but the input) are
    removed before the failure is recorded.

    Args:
        job_id: the job to run.
        settings: the service settings (data dir, limits, weights, lease time).
        store: an open ledger (one is opened on ``settings.data_dir`` and closed again when None).
        backends: built backends to use (a process-wide pool for the first device when None).
        worker: the lease owner recorded as the job's runner, unique per worker instance (a new one from
            :func:`~meshforge.service.storage.new_lease_owner` when None).
        should_stop: polled at stage boundaries; when it returns True the job is put back in the queue.

    Returns:
        A :class:`JobOutcome`. Never raises for a job's own failure.
    """
    own = store is None
    st = (
        store
        if store is not None
        else JobStore(settings.data_dir, database_url=settings.database_url, storage_url=settings.storage_url)
    )
    worker = worker or new_lease_owner("local")
    try:
        job = st.get(job_id)
        if job is None:
            return JobOutcome(job_id, "missing")
        if job.state == "queued":
            claimed = st.claim(worker, settings.job_timeout_s, lease_s=settings.lease_s, job_id=job_id)
            if claimed is None:
                return JobOutcome(job_id, "skipped", job.kind)
            job = claimed
        elif job.state != "running" or job.worker != worker:
            return JobOutcome(job_id, "skipped", job.kind)
        if st.artifacts is not None:  # the input is in the object store; this process may not have it yet
            st.local_file(job.parent_id or job.id, job.input_file)
        pool = backends if backends is not None else default_pool(settings)
        queued_s = round((job.started_at or job.created_at) - job.created_at, 4)
        job_event("job.started", job.id, kind=job.kind, attempt=job.attempts, worker=job.worker, queued_s=queued_s)
        with _Heartbeat(st, job, settings.lease_s) as lease:
            out = _Execution(job, settings, st, pool, should_stop, lease).run()
        if out.state in TERMINAL:
            job_event(
                "job.finished",
                job.id,
                kind=job.kind,
                state=out.state,
                code=out.error_code,
                run_s=out.timings.get("run_s"),
                degraded=out.degraded,
            )
        elif out.state == "queued":
            reason = "out_of_memory" if out.oom_retried else "shutdown"
            job_event("job.requeued", job.id, kind=job.kind, reason=reason, attempt=job.attempts)
        else:
            job_event("job.abandoned", job.id, kind=job.kind, attempt=job.attempts, worker=job.worker)
            if st.get(job_id) is None:
                # deleted while it ran: remove whatever this run wrote after the folder was deleted
                shutil.rmtree(st.job_dir(job_id), ignore_errors=True)
        return out
    finally:
        if own:
            st.close()


class _Heartbeat:
    """Renews a running job's lease every ``lease_s / 3`` seconds in a thread; ``lost`` once it cannot."""

    def __init__(self, store: JobStore, job: JobRow, lease_s: float) -> None:
        self.store = store
        self.job = job
        self.lease_s = lease_s
        self.lost = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"meshforge-lease-{job.id[:8]}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        job = self.job
        try:
            while not self._done.wait(self.lease_s / 3):
                try:
                    held = self.store.heartbeat(job.id, job.attempts, str(job.worker), self.lease_s)
                except ledger_errors() as exc:  # a busy ledger: try again at the next beat, within the lease
                    log.warning("job %s: lease renewal failed: %s", job.id, exc)
                    continue
                if not held:
                    self.lost = True
                    log.warning("job %s: lease lost (attempt %d, %s); stopping it", job.id, job.attempts, job.worker)
                    return
        finally:
            self.store.close_thread()


class _Execution:
    def __init__(
        self,
        job: JobRow,
        settings: Settings,
        store: JobStore,
        pool: BackendPool,
        should_stop: Callable[[], bool] | None,
        lease: _Heartbeat,
    ) -> None:
        self.job = job
        self.settings = settings
        self.store = store
        self.pool = pool
        self.should_stop = should_stop
        self.lease = lease
        self.attempt = job.attempts
        self.deadline = job.deadline or (time.time() + settings.job_timeout_s)
        self.backend_load_s = 0.0
        self.call_s = 0.0  # wall time inside the pipeline call (its stages plus its own untimed work)
        self.progress_s = 0.0  # time spent in the progress callback (ledger writes), test delays excluded
        self.cutout: Image | None = None  # generate: the prepared picture the backend saw
        self.raw: Raw | None = None  # export: the parent's raw reconstruction

    # the progress callback: a stage boundary is where a job may stop
    def checkpoint(self, stage: str, percent: float) -> None:
        """Record a stage boundary; raise a :class:`_Stop` when the job must stop here."""
        t0 = time.perf_counter()
        if self.lease.lost:
            raise JobAbandoned(stage)
        if self.should_stop is not None and self.should_stop():
            raise JobInterrupted(stage)
        if time.time() > self.deadline:
            raise JobTimedOut(stage)
        answer = self.store.progress(self.job.id, self.attempt, stage, percent)
        self.progress_s += time.perf_counter() - t0
        if answer is None:
            raise JobAbandoned(stage)
        if answer:
            raise JobCanceled(stage)
        if TEST_STAGE_DELAY_S > 0:
            time.sleep(TEST_STAGE_DELAY_S)

    def on_progress(self, stage: str, index: int, total: int) -> None:
        """The pipeline's progress callback: stage ``index`` of ``total`` maps to 0–95 %."""
        self.checkpoint(stage, round(95.0 * index / max(total, 1), 1))

    def run(self) -> JobOutcome:
        """Run the claimed job to a terminal state (see :func:`execute_job`)."""
        job, s = self.job, self.settings
        out = JobOutcome(job.id, "failed", job.kind)
        timings: dict[str, Any] = {"queued_s": round((job.started_at or job.created_at) - job.created_at, 4)}
        try:
            asset, report, raw = self._run_with_oom_retry(out)
            self.checkpoint("export", 97.0)
            raw_bytes = None
            if job.kind == "generate":  # the raw its exports finish: a report stage of its own (time, memory)
                with _profiling.stage(report, "raw") as c:
                    raw_bytes = dumps_raw(raw)  # samples the live field into the portable voxel volume
                    c.update(bytes=len(raw_bytes))
            t0 = time.perf_counter()
            files = {fmt: export(asset, fmt) for fmt in RESULT_FILES}
            if self.lease.lost:  # the job is someone else's now: leave its folder alone
                raise JobAbandoned("export")
            folder = self.store.job_dir(job.id)
            if raw_bytes is not None:
                write_atomic(folder / RAW_FILE, raw_bytes)
            if self.cutout is not None:
                write_atomic(folder / CUTOUT_PNG, encode_png(self.cutout.rgba))
            for fmt, name in RESULT_FILES.items():  # the GLB last: its presence means the job's files are complete
                if fmt != "glb":
                    write_atomic(folder / name, files[fmt])
            glb = files["glb"]
            write_atomic(folder / RESULT_GLB, glb)
            if self.store.artifacts is not None:  # the bucket holds the job's files; the GLB last, as here
                if self.lease.lost:
                    raise JobAbandoned("upload")
                names = [RAW_FILE, CUTOUT_PNG, *(n for f, n in RESULT_FILES.items() if f != "glb"), RESULT_GLB]
                publish(self.store.artifacts, job.id, folder, names)
            export_s = time.perf_counter() - t0
            finished = time.time()
            run_s = finished - (job.started_at or finished)
            pipeline_s = report.total_seconds
            timings.update(
                run_s=round(run_s, 4),
                pipeline_s=round(pipeline_s, 4),
                export_s=round(export_s, 4),
                backend_load_s=round(self.backend_load_s, 4),
                pipeline_call_s=round(self.call_s, 4),
                progress_s=round(self.progress_s, 4),
                overhead_s=round(run_s - pipeline_s, 4),
                result_bytes=len(glb),
            )
            rep = report.to_dict()
            source = rep.get("info", {}).get("input")
            if isinstance(source, dict) and "source" in source:  # the upload as the user named it, not its path
                source["source"] = job.input_name
            ok = self.store.finish(
                job.id, self.attempt, "succeeded", ttl_s=s.ttl_s, report=rep, timings=timings, finished_at=finished
            )
            out.state, out.report, out.timings = ("succeeded" if ok else "abandoned"), rep, timings
            return out
        except JobCanceled as exc:
            self._fail(out, timings, "canceled", "canceled", f"canceled while running (at stage {exc})")
        except JobTimedOut as exc:
            self._fail(
                out,
                timings,
                "failed",
                "timeout",
                f"the job ran longer than the limit of {s.job_timeout_s:g} s (at stage {exc})",
            )
        except JobAbandoned:
            out.state = "abandoned"
        except JobInterrupted:
            out.state = "queued" if self.store.requeue(job.id, self.attempt, job.worker) else "abandoned"
        except JobRequeuedDegraded as exc:
            self._remove_outputs()
            out.degraded = out.oom_retried = True
            out.state = "queued" if self.store.requeue(job.id, self.attempt, job.worker) else "abandoned"
            log.warning("job %s ran out of memory; re-queued with reduced settings (%s)", job.id, exc)
        except MissingDependency as exc:
            self._fail(out, timings, "failed", "missing_dependency", str(exc))
        except InputError as exc:
            self._fail(out, timings, "failed", "invalid_input", str(exc))
        except BackendError as exc:
            code = "out_of_memory" if is_out_of_memory(exc) else "backend_error"
            self._fail(out, timings, "failed", code, str(exc))
        except StageError as exc:
            self._fail(out, timings, "failed", "stage_failed", str(exc))
        except MeshforgeError as exc:
            self._fail(out, timings, "failed", "failed", str(exc))
        except Exception as exc:
            if self.store.get(job.id) is None:  # deleted while it ran (its folder went with it)
                out.state = "abandoned"
            elif is_storage_full(exc):
                log.warning("job %s: the data dir's disk is full: %s", job.id, one_line(exc))
                self._fail(out, timings, "failed", "insufficient_storage", STORAGE_FULL_MESSAGE)
            elif is_out_of_memory(exc):
                self._fail(out, timings, "failed", "out_of_memory", f"out of memory even with reduced settings ({exc})")
            else:
                log.exception("job %s: internal error", job.id)
                self._fail(out, timings, "failed", "internal_error", f"internal error: {type(exc).__name__}: {exc}")
        return out

    def _fail(self, out: JobOutcome, timings: dict[str, Any], state: str, code: str, message: str) -> None:
        self._remove_outputs()
        finished = time.time()
        timings["run_s"] = round(finished - (self.job.started_at or finished), 4)
        ok = self.store.finish(
            self.job.id,
            self.attempt,
            state,
            ttl_s=self.settings.ttl_s,
            error_code=code,
            error_message=one_line(self._public(message)),
            timings=timings,
            finished_at=finished,
        )
        out.state, out.error_code, out.timings = (state if ok else "abandoned"), code, timings

    def _remove_outputs(self) -> None:
        """Delete what this attempt wrote in the job's folder (all but the input), unless the job is no
        longer this attempt's (another attempt may be writing there). Done before the failure is recorded,
        so that on a full disk the ledger write has the room it needs."""
        current = self.store.get(self.job.id)
        if current is None or current.state != "running" or current.attempts != self.attempt:
            return
        try:
            removed = self.store.remove_outputs(self.job.id, keep=INPUT_DIR)
        except OSError as exc:  # pragma: no cover - best effort; the expiry sweep removes the folder later
            log.warning("job %s: cannot remove its partial files: %s", self.job.id, one_line(exc))
            return
        if removed:
            log.info("job %s: removed partial files %s", self.job.id, ", ".join(sorted(removed)))

    def _public(self, message: str) -> str:
        """The message as API users see it: no server path (the stored input becomes its uploaded name, the
        job's other files their names inside its folder, the data dir and weights folder their roles)."""
        job, store = self.job, self.store
        folder = store.job_dir(job.id)
        names = {
            str(store.input_path(job)): job.input_name,
            f"{folder}{os.sep}": "",
            str(folder): f"job {job.id}",
            str(store.data_dir): "the service's data folder",
        }
        if self.settings.weights and os.sep in self.settings.weights:
            names[self.settings.weights] = "the weights folder"
        return hide_paths(message, names)

    def _run_with_oom_retry(self, out: JobOutcome) -> tuple[Asset, Report, Raw]:
        options = self.job.effective_options or self.job.options
        cfg = self._config(options)
        try:
            asset, report, raw = self._run_once(cfg, options)
        except _Stop:
            raise
        except Exception as exc:
            if not is_out_of_memory(exc) or self.job.degraded:
                raise
            log.warning("job %s ran out of memory (%s); retrying with reduced settings", self.job.id, one_line(exc))
        else:
            if self.job.degraded:  # re-queued after running out of memory (broker workers): say so here too
                out.degraded = True
                _, changes = degrade(self.job.kind, self._config(self.job.options))  # what the step-down was
                report.warn(
                    "ran out of memory; retried once with reduced settings: " + (", ".join(changes) or "unchanged")
                )
                report.info["degraded"] = True
            return asset, report, raw
        free_memory()
        reduced, changes = degrade(self.job.kind, cfg)
        self.store.set_degraded(self.job.id, self.attempt, with_config(options, reduced))
        if self.settings.broker_url:  # back to the queue: the worker with the most room takes it
            raise JobRequeuedDegraded(", ".join(changes) or "unchanged")
        out.degraded = out.oom_retried = True
        asset, report, raw = self._run_once(reduced, options)
        report.warn("ran out of memory; retried once with reduced settings: " + (", ".join(changes) or "unchanged"))
        report.info["degraded"] = True
        return asset, report, raw

    def _config(self, options: dict[str, Any]) -> Any:
        """The job's configuration, rebuilt from its stored options (:func:`~meshforge.service.options.job_config`;
        a row of an earlier version applies its options to the server's base configuration, or for an export to
        its raw's configuration, as that version did)."""
        kind = self.job.kind
        if kind == "optimize":
            return job_config(kind, options, optimize_base(self.settings))
        if kind == "generate":
            return job_config(kind, options, pipeline_base(self.settings))
        from ..raw import load_raw

        self.raw = load_raw(self.store.input_path(self.job))
        base = PipelineConfig.from_dict(self.raw.config) if self.raw.config else PipelineConfig()
        return job_config(kind, options, base)

    def _run_once(self, cfg: Any, options: dict[str, Any]) -> tuple[Asset, Report, Raw]:
        path = self.store.input_path(self.job)
        if self.job.kind == "export":
            return self._export(cfg)
        if self.job.kind == "optimize":
            from ..optimize import optimize

            t0 = time.perf_counter()
            try:
                oresult = optimize(path, cfg, on_progress=self.on_progress)
            finally:
                self.call_s = time.perf_counter() - t0
            return oresult.asset, oresult.report, oresult.raw
        from ..pipeline import generate, run

        backend_name = options.get("backend") or self.job.backend
        if not backend_name:
            raise InputError("the generate job's stored options name no backend: submit it again")
        backend, load_s = self.pool.get(str(backend_name))
        self.backend_load_s += load_s
        t0 = time.perf_counter()
        try:
            if options.get("prompt"):
                report = Report()
                picture = self._text_to_image(path.read_text(encoding="utf-8"), options.get("t2i") or {}, report)
                result = run(picture, backend, cfg, on_progress=self._after_t2i, report=report)
            else:
                result = generate(
                    path,
                    backend,
                    cfg,
                    on_progress=self.on_progress,
                    decode_guard=decode_slots(self.settings.max_concurrent_decodes),
                )
        finally:
            self.call_s = time.perf_counter() - t0
        self.cutout = result.prepared
        note = options.get("backend_note")
        if note is None and "format" not in options and options.get("backend_requested") == "auto":
            note = resolve_name("auto", self.settings.weights)[1]  # a row of an earlier version kept no note
        if note:
            result.report.warn(note)
        return result.asset, result.report, result.raw

    def _text_to_image(self, prompt: str, t2i: dict[str, Any], report: Report) -> Image:
        """A prompt job's first stage: the server's text-to-image model (loaded once per process and device,
        :func:`meshforge.t2i.load_text_to_image`) makes the picture, with progress per sampling step (0 to
        :data:`T2I_PERCENT` %); the picture is kept as :data:`PICTURE_PNG`."""
        from ..t2i import T2IConfig, load_text_to_image, text_to_image_stage

        cfg = T2IConfig(
            model=self.settings.t2i_model,
            seed=int(t2i.get("seed") or 0),
            allow_non_commercial=self.settings.t2i_allow_non_commercial,
        )
        self.checkpoint("text_to_image", 0.0)
        started = time.perf_counter()
        model = load_text_to_image(cfg, self.pool.device)
        self.backend_load_s += max(0.0, min(model.load_seconds, time.perf_counter() - started))

        def step(i: int, n: int) -> None:
            self.checkpoint("text_to_image", round(T2I_PERCENT * i / max(n, 1), 1))

        picture = text_to_image_stage(model, prompt, cfg, report, on_step=step)
        write_atomic(self.store.job_dir(self.job.id) / PICTURE_PNG, encode_png(picture.rgba))
        return picture

    def _after_t2i(self, stage: str, index: int, total: int) -> None:
        """The picture → asset stages of a prompt job: :data:`T2I_PERCENT` to 95 %."""
        self.checkpoint(stage, round(T2I_PERCENT + (95.0 - T2I_PERCENT) * index / max(total, 1), 1))

    def _export(self, cfg: PipelineConfig) -> tuple[Asset, Report, Raw]:
        """An export job: the parent's raw (loaded by :meth:`_config`) finished with the job's configuration;
        no backend, no decode slot (:func:`meshforge.pipeline.finish` on the raw's voxel volume)."""
        from ..pipeline import finish

        report = Report()
        report.config = cfg.to_dict()
        report.info["source"] = {"raw": f"job {self.job.parent_id}"}
        t0 = time.perf_counter()
        try:
            assert self.raw is not None
            result = finish(self.raw, cfg, on_progress=self.on_progress, report=report)
        finally:
            self.call_s = time.perf_counter() - t0
        return result.asset, result.report, result.raw
