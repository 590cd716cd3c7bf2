"""Jobs on Celery (``MESHFORGE_SERVICE_BROKER_URL``): the API server sends one message per job, and
``meshforge worker`` processes — one per device, each building its backend once — run them.

The ledger stays the source of truth; the broker only carries work. A message names a job id, the message
schema (:data:`SCHEMA_VERSION`) and the model version it was sent for (``weights_version``), and goes to the
queue of that model version (:meth:`~.settings.Settings.broker_queue`). A worker:

- takes one message at a time (``worker_prefetch_multiplier=1``) and acknowledges it only when the job
  has ended (``acks_late``; ``reject_on_worker_lost``), so a worker that dies mid-job leaves its message to
  the broker, which hands it to another worker;
- runs the job through :func:`~.jobs.execute_job`, which claims it in the ledger under a lease renewed by
  heartbeats: a message for a job that another worker holds a live lease on (a redelivery after a crash,
  or a duplicate) is dropped, and so is one for a job that has already ended;
- every ``worker_heartbeat_s`` writes its heartbeat row (device, backends, free VRAM, counts) and puts
  back in the queue, with a new message, every running job whose lease expired (its worker died), so such
  a job runs again once — as the API servers do too;
- takes no new job while its CUDA device has less than ``min_free_vram_bytes`` free (the message goes back
  to the broker for a worker with room);
- puts a job that ran out of memory back in the queue with the step-down applied
  (:func:`~.options.degrade`, flagged ``degraded``) and sends its message again; a degraded job that runs
  out of memory again fails with ``out_of_memory`` (the dead-letter list).

Redis works as the broker too (``redis://``); there a message a dead worker held comes back after the
broker's visibility timeout, and the ledger's lease recovery re-sends the job meanwhile.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from .jobs import BackendPool, execute_job
from .logs import job_event
from .metrics import gpu_memory
from .problems import one_line
from .settings import Settings
from .storage import JobStore, WorkerRow, new_lease_owner

log = logging.getLogger("meshforge.service")

#: the version of the job message; a worker refuses (sends back) messages of another version
SCHEMA_VERSION = 1
#: the Celery task name of a job
TASK_NAME = "meshforge.run_job"


def celery_app(settings: Settings) -> Any:
    """The Celery app of these settings (broker ``broker_url``; no result backend: the ledger has results).

    Raises:
        ImportError: Celery is missing (the ``scale`` extra).
    """
    from celery import Celery

    app = Celery("meshforge", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.broker_queue(),
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        # the job runs in the consuming thread (solo pool): AMQP heartbeats would go unanswered during a
        # long job and the broker would drop the connection; a dead worker's socket closes anyway, and the
        # ledger's lease covers a silent one
        broker_heartbeat=0,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_enable_remote_control=False,
    )
    return app


class Broker:
    """The API side: sends job messages, and answers whether the broker can be reached."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = celery_app(settings)
        self._lock = threading.Lock()

    def send(self, job_id: str) -> None:
        """Send the message of a queued job (raises kombu's error when the broker cannot be reached)."""
        with self._lock:
            self.app.send_task(
                TASK_NAME,
                args=[job_id],
                kwargs={"schema": SCHEMA_VERSION, "model_version": self.settings.weights_version},
                queue=self.settings.broker_queue(),
                retry=True,
                retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
            )

    def ping(self) -> None:
        """Connect to the broker (raises when it cannot be reached)."""
        with self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)

    def queue_depth(self) -> int | None:
        """Messages waiting in this model version's queue (AMQP only; None when unknown)."""
        try:
            with self.app.connection_for_write() as conn, conn.channel() as ch:
                ok = ch.queue_declare(queue=self.settings.broker_queue(), passive=True)
                return int(ok.message_count)
        except Exception:
            return None


class WorkerContext:
    """Everything one ``meshforge worker`` process keeps between jobs: the ledger, the backends of its
    device (built once), its lease-owner name, counts, and the heartbeat thread."""

    def __init__(self, settings: Settings, device: str, send: Any) -> None:
        from .workers import _resolve

        self.settings = settings
        self.device = device
        self.send = send
        self.store = JobStore(settings.data_dir, database_url=settings.database_url, storage_url=settings.storage_url)
        self.pool = BackendPool(settings, device)
        self.name = new_lease_owner(f"worker-{device}")
        self.default_backend = _resolve(settings)
        self.started_at = time.time()
        self.current: str | None = None
        self.jobs_done = self.jobs_failed = self.dropped = 0
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._beat_loop, name="meshforge-worker-beat", daemon=True)

    def start(self) -> None:
        """Build the default backend, write the first heartbeat and start the heartbeat thread."""
        self.pool.get(self.default_backend)
        self.beat()
        self._thread.start()

    def stop(self) -> None:
        """Stop the heartbeat thread and remove this worker's row."""
        self.stopping.set()
        self._thread.join(5)
        try:
            self.store.worker_gone(self.name)
        except Exception:  # pragma: no cover - best effort at exit
            pass

    def free_vram(self) -> tuple[int | None, int | None]:
        """``(free, total)`` bytes of this worker's CUDA device; ``(None, None)`` on the CPU."""
        for g in gpu_memory():
            if g["device"] == self.device:
                return int(g["free_bytes"]), int(g["total_bytes"])
        return None, None

    def has_room(self) -> bool:
        """Whether this worker may take a new job (free VRAM at least ``min_free_vram_bytes``)."""
        free, _ = self.free_vram()
        return free is None or free >= self.settings.min_free_vram_bytes

    def beat(self) -> None:
        """Write the heartbeat row."""
        free, total = self.free_vram()
        self.store.worker_beat(
            WorkerRow(
                name=self.name,
                host=socket.gethostname(),
                device=self.device,
                queue=self.settings.broker_queue(),
                backends=self.pool.loaded(),
                free_vram_bytes=free,
                total_vram_bytes=total,
                accepting=free is None or free >= self.settings.min_free_vram_bytes,
                current_job=self.current,
                jobs_done=self.jobs_done,
                jobs_failed=self.jobs_failed,
                redeliveries_dropped=self.dropped,
                started_at=self.started_at,
                last_seen=time.time(),
            )
        )

    def recover(self) -> list[str]:
        """Re-queue jobs whose lease expired (see :meth:`~.storage.JobStore.recover`) and send their messages."""
        requeued, failed = self.store.recover(self.settings.max_attempts, self.settings.ttl_s)
        for job_id in requeued:
            job_event("job.requeued", job_id, reason="lease_expired", by=self.name)
            self.send(job_id)
        for job_id in failed:
            job_event("job.finished", job_id, state="failed", code="interrupted", run_s=None)
        return requeued

    def _beat_loop(self) -> None:
        while not self.stopping.wait(self.settings.worker_heartbeat_s):
            try:
                self.beat()
                self.recover()
            except Exception as exc:  # the ledger or broker is away: try again at the next beat
                log.warning("worker %s: heartbeat failed: %s", self.name, one_line(exc))
        self.store.close_thread()

    def run(self, job_id: str, schema: int, model_version: str) -> str:
        """Run the job of one message; returns what happened (a job state, ``dropped``, ``missing``).

        Raises:
            celery.exceptions.Reject: (requeue) the message is not for this worker: another message
                schema or model version, or no room on the device now.
        """
        from celery.exceptions import Reject

        if schema != SCHEMA_VERSION or (model_version or "") != self.settings.weights_version:
            log.warning(
                "worker %s: message for job %s has schema %s / model version %r, this worker serves %s / %r: sent back",
                self.name,
                job_id,
                schema,
                model_version,
                SCHEMA_VERSION,
                self.settings.weights_version,
            )
            time.sleep(1.0)
            raise Reject("not this worker's message schema or model version", requeue=True)
        job = self.store.get(job_id)
        if job is None:
            return "missing"
        if job.state == "running" and job.worker != self.name and (job.lease_expires or 0) > time.time():
            self.dropped += 1
            job_event("job.redelivery_dropped", job_id, worker=self.name, holder=job.worker)
            return "dropped"
        if job.state != "queued":
            return "skipped"
        if not self.has_room():
            time.sleep(1.0)
            raise Reject("not enough free VRAM", requeue=True)
        self.current = job_id
        try:
            outcome = execute_job(
                job_id,
                self.settings,
                store=self.store,
                backends=self.pool,
                worker=self.name,
                should_stop=self.stopping.is_set,
            )
        finally:
            self.current = None
        if outcome.state == "queued" and outcome.oom_retried:  # re-queued degraded: its message, once more
            self.send(job_id)
        if outcome.state == "succeeded":
            self.jobs_done += 1
        elif outcome.state in ("failed", "canceled"):
            self.jobs_failed += 1
        if self.store.artifacts is not None and outcome.state not in ("skipped",):
            # the bucket has the files; this machine's working copy goes
            from .artifacts import remove_local

            remove_local(self.store.job_dir(job_id))
            if job.parent_id:
                remove_local(self.store.job_dir(job.parent_id))
        return outcome.state


#: the worker process's context (set by :func:`worker_main` before Celery starts consuming)
CONTEXT: WorkerContext | None = None


def register_task(app: Any) -> Any:
    """Register the job task on ``app``; returns it."""

    from celery.exceptions import Reject

    @app.task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
    def run_job(job_id: str, schema: int = 0, model_version: str = "") -> str:
        assert CONTEXT is not None, "the job task runs only in meshforge worker"
        try:
            return CONTEXT.run(job_id, schema, model_version)
        except Reject:
            raise
        except Exception as exc:
            # the ledger or the object store failed (a job's own failure is recorded by execute_job): the
            # message goes back to the broker rather than being lost; the ledger decides what runs next
            log.warning("worker %s: job %s: %s; message sent back", CONTEXT.name, job_id, one_line(exc))
            time.sleep(1.0)
            raise Reject(one_line(exc), requeue=True) from None

    return run_job


def worker_main(settings: Settings, device: str) -> int:
    """Run one worker for ``device`` in this process until SIGTERM/SIGINT (Celery's warm shutdown: the
    running job finishes first; a second signal stops at once and the job's message goes back to the
    broker).

    Returns:
        The exit status.
    """
    global CONTEXT
    app = celery_app(settings)
    register_task(app)
    broker = Broker(settings)
    CONTEXT = WorkerContext(settings, device, broker.send)
    CONTEXT.start()
    log.info("meshforge worker %s on %s, queue %s", CONTEXT.name, device, settings.broker_queue())
    from ..mesh.uv import start_worker

    start_worker()  # the unwrap child process, started from the main thread (see meshforge serve)
    try:
        app.worker_main(
            [
                "worker",
                "--pool=solo",
                "--concurrency=1",
                f"--queues={settings.broker_queue()}",
                f"--hostname=meshforge-{device.replace(':', '')}-{os.getpid()}@{socket.gethostname()}",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                f"--loglevel={settings.log_level.upper() if settings.log_level != 'trace' else 'DEBUG'}",
            ]
        )
    finally:
        CONTEXT.stop()
        CONTEXT.store.close()
    return 0
