"""In-process workers: one thread per device, each building its backends once and running jobs off the
event loop by calling :func:`~meshforge.service.jobs.execute_job`.

Workers take jobs from the ledger (oldest first) under a lease (see :mod:`~meshforge.service.storage`),
so several workers — or several processes sharing the data dir — never run the same job twice at once. A
worker sleeps until it is woken by a submission, or for at most a second (so jobs queued by another
process are seen too).

Stopping has two steps: :meth:`WorkerPool.close` (take no new job; the running ones go on) and
:meth:`WorkerPool.interrupt` (put the running jobs back in the queue now), so a shutdown can drain.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .jobs import BackendPool, JobOutcome, execute_job
from .pg import ledger_errors
from .problems import one_line
from .settings import Settings
from .storage import JobRow, JobStore, new_lease_owner

log = logging.getLogger("meshforge.service")


@dataclass(frozen=True)
class WorkerStatus:
    """A worker's state for ``/readyz``."""

    name: str
    device: str
    alive: bool
    backend: str
    backend_loaded: bool
    load_error: str | None
    current_job: str | None
    jobs_done: int


class Worker:
    """One device's worker thread.

    Args:
        name: the worker's name in ``/readyz`` (the device and an index); its lease owner name in the ledger
            adds the host, the process id and a random part (:func:`~.storage.new_lease_owner`).
        device: ``"cpu"`` or ``"cuda:N"``.
        settings: the service settings.
        store: the shared ledger.
        on_outcome: called (in the worker thread) after each job with its :class:`JobOutcome`.
    """

    def __init__(
        self,
        name: str,
        device: str,
        settings: Settings,
        store: JobStore,
        on_outcome: Callable[[JobOutcome], None] | None = None,
    ) -> None:
        self.name = name
        self.device = device
        self.settings = settings
        self.store = store
        self.on_outcome = on_outcome
        self.pool = BackendPool(settings, device)
        self.default_backend = _resolve(settings)
        self.lease_owner = new_lease_owner(name)
        self.current: JobRow | None = None
        self.backend_loaded = False
        self.load_error: str | None = None
        self.jobs_done = 0
        self._wake = threading.Event()
        self._closing = threading.Event()  # take no new job
        self._interrupt = threading.Event()  # put the running job back in the queue at its next stage
        self._thread = threading.Thread(target=self._main, name=f"meshforge-worker-{name}", daemon=True)

    def start(self) -> None:
        """Start the thread: it builds the default backend, then runs queued jobs until stopped."""
        self._thread.start()

    def wake(self) -> None:
        """Look at the queue now."""
        self._wake.set()

    def close(self) -> None:
        """Take no new job; a running job goes on, then the thread ends."""
        self._closing.set()
        self._wake.set()

    def interrupt(self) -> str | None:
        """Put the running job (if any) back in the queue now and end the thread.

        The ledger is changed at once (the job is queued for any server); the thread itself drops the job
        at its next stage boundary without writing to it again.

        Returns:
            The id of the job put back, or None.
        """
        self.close()
        self._interrupt.set()
        job = self.current
        if job is not None and self.store.requeue(job.id, job.attempts, self.lease_owner):
            return job.id
        return None

    def join(self, timeout: float | None) -> bool:
        """Wait for the thread; True when it has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def status(self) -> WorkerStatus:
        """A snapshot for ``/readyz`` and the metrics."""
        return WorkerStatus(
            name=self.name,
            device=self.device,
            alive=self._thread.is_alive(),
            backend=self.default_backend,
            backend_loaded=self.backend_loaded,
            load_error=self.load_error,
            current_job=self.current.id if self.current is not None else None,
            jobs_done=self.jobs_done,
        )

    def _main(self) -> None:
        try:
            self.pool.get(self.default_backend)
            self.backend_loaded = True
        except Exception as exc:  # jobs for this backend will fail with backend_error; others still run
            self.load_error = one_line(f"{type(exc).__name__}: {exc}")
            log.error("worker %s: cannot build the %s backend: %s", self.name, self.settings.backend, self.load_error)
        while not self._closing.is_set():
            self._wake.clear()
            try:
                job = self.store.claim(self.lease_owner, self.settings.job_timeout_s, lease_s=self.settings.lease_s)
            except ledger_errors() as exc:  # a locked or unavailable ledger: try again shortly
                log.warning("worker %s: ledger error: %s", self.name, exc)
                self._closing.wait(1.0)
                continue
            if job is None:
                self._wake.wait(1.0)
                continue
            self.current = job
            try:
                outcome = execute_job(
                    job.id,
                    self.settings,
                    store=self.store,
                    backends=self.pool,
                    worker=self.lease_owner,
                    should_stop=self._interrupt.is_set,
                )
            except Exception:  # execute_job records a job's failures itself; this is a ledger failure
                log.exception("worker %s: job %s could not be run", self.name, job.id)
                time.sleep(0.5)
                continue
            finally:
                self.current = None
            self.jobs_done += 1
            if self.on_outcome is not None:
                try:
                    self.on_outcome(outcome)
                except Exception:  # pragma: no cover - metrics must never stop a worker
                    log.exception("worker %s: outcome hook failed", self.name)


def _resolve(settings: Settings) -> str:
    from ..backends import resolve_name

    try:
        return resolve_name(settings.backend, settings.weights)[0]
    except Exception:
        return settings.backend


class WorkerPool:
    """One :class:`Worker` per device.

    Args:
        settings: the service settings (``devices`` decides the workers).
        store: the shared ledger.
        on_outcome: see :class:`Worker`.
    """

    def __init__(
        self, settings: Settings, store: JobStore, on_outcome: Callable[[JobOutcome], None] | None = None
    ) -> None:
        devices = settings.resolved_devices() if settings.in_process_workers() else ()
        self.workers = [
            Worker(f"{device}#{i}", device, settings, store, on_outcome) for i, device in enumerate(devices)
        ]

    def start(self) -> None:
        """Start every worker."""
        for w in self.workers:
            w.start()

    def wake(self) -> None:
        """Tell every worker to look at the queue now (a job was queued)."""
        for w in self.workers:
            w.wake()

    def close(self) -> None:
        """Every worker takes no new job (running jobs go on)."""
        for w in self.workers:
            w.close()

    def busy(self) -> bool:
        """Whether a worker is running a job."""
        return any(w.current is not None for w in self.workers)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds for the running jobs to end; True when none runs."""
        end = time.monotonic() + timeout_s
        while self.busy() and time.monotonic() < end:
            time.sleep(0.05)
        return not self.busy()

    def interrupt(self) -> list[str]:
        """Put every running job back in the queue now; returns their ids."""
        return [job_id for w in self.workers if (job_id := w.interrupt()) is not None]

    def join(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds in all for the threads to end; True when all have."""
        end = time.monotonic() + timeout_s
        return all(w.join(max(0.0, end - time.monotonic())) for w in self.workers)

    def status(self) -> list[WorkerStatus]:
        """Every worker's snapshot."""
        return [w.status() for w in self.workers]
