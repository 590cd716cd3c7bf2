"""Prometheus metrics (text exposition format 0.0.4), one registry per app.

Counters and histograms are updated as jobs are submitted and finish; the gauges (jobs by state, queue
depth, workers, GPU memory) are read from the ledger and the devices at scrape time.

=========================================  =========  ============================================
name                                       type       labels / meaning
=========================================  =========  ============================================
meshforge_jobs                             gauge      ``state``: jobs in the ledger
meshforge_queue_depth                      gauge      queued jobs
meshforge_workers                          gauge      ``status`` = alive | busy | backend_loaded
meshforge_gpu_memory_free_bytes            gauge      ``device`` (only with torch + CUDA)
meshforge_gpu_memory_total_bytes           gauge      ``device`` (only with torch + CUDA)
meshforge_jobs_submitted_total             counter    ``kind``, ``outcome`` = created | cached | replayed | rejected
meshforge_jobs_finished_total              counter    ``kind``, ``state``, ``code``
meshforge_oom_retries_total                counter    jobs retried with reduced settings
meshforge_stage_duration_seconds           histogram  ``kind``, ``stage``: pipeline stage wall time
meshforge_job_run_seconds                  histogram  ``kind``: start → finish wall time
meshforge_job_queue_wait_seconds           histogram  ``kind``: submission → start
meshforge_job_overhead_seconds             histogram  ``kind``: run time minus pipeline time
=========================================  =========  ============================================
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .jobs import JobOutcome
from .storage import JobStore

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_OVERHEAD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


def gpu_memory() -> list[dict[str, Any]]:
    """Free and total memory of every CUDA device, when PyTorch is already imported and sees CUDA.

    Returns:
        ``[{"device": "cuda:N", "free_bytes": int, "total_bytes": int}]`` (empty otherwise). PyTorch is
        never imported here: a service whose backends do not use it reports no GPUs.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return []
    out: list[dict[str, Any]] = []
    try:
        if not torch.cuda.is_available():
            return []
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            out.append({"device": f"cuda:{i}", "free_bytes": int(free), "total_bytes": int(total)})
    except Exception:  # pragma: no cover - a broken driver must not break /metrics
        return out
    return out


class _LiveCollector(Collector):
    def __init__(
        self, store: JobStore, workers: Callable[[], list[Any]], remote: Callable[[], list[Any]] | None = None
    ) -> None:
        self.store = store
        self.workers = workers
        self.remote = remote

    def collect(self) -> Iterator[Metric]:
        """The gauges read at scrape time."""
        counts = self.store.counts()
        jobs = GaugeMetricFamily("meshforge_jobs", "Jobs in the ledger by state.", labels=["state"])
        for state, n in counts.items():
            jobs.add_metric([state], n)
        yield jobs
        yield GaugeMetricFamily("meshforge_queue_depth", "Jobs waiting to run.", value=counts["queued"])
        ws = self.workers()
        workers = GaugeMetricFamily("meshforge_workers", "Worker threads by status.", labels=["status"])
        workers.add_metric(["alive"], sum(1 for w in ws if w.alive))
        workers.add_metric(["busy"], sum(1 for w in ws if w.current_job))
        workers.add_metric(["backend_loaded"], sum(1 for w in ws if w.backend_loaded))
        yield workers
        if self.remote is not None:
            yield from _remote_metrics(self.remote())
        gpus = gpu_memory()
        if gpus:
            free = GaugeMetricFamily("meshforge_gpu_memory_free_bytes", "Free CUDA memory.", labels=["device"])
            total = GaugeMetricFamily("meshforge_gpu_memory_total_bytes", "Total CUDA memory.", labels=["device"])
            for g in gpus:
                free.add_metric([g["device"]], g["free_bytes"])
                total.add_metric([g["device"]], g["total_bytes"])
            yield free
            yield total


def _remote_metrics(rows: list[Any]) -> Iterator[Metric]:
    """Per-worker gauges of the live ``meshforge worker`` processes (their heartbeat rows)."""
    labels = ["worker", "device"]
    live = GaugeMetricFamily("meshforge_remote_workers", "Live meshforge worker processes.", value=len(rows))
    busy = GaugeMetricFamily("meshforge_worker_busy", "Jobs the worker is running now (0 or 1).", labels=labels)
    jobs = GaugeMetricFamily("meshforge_worker_jobs", "Jobs the worker ended, by result.", labels=[*labels, "result"])
    dropped = GaugeMetricFamily(
        "meshforge_worker_redeliveries_dropped",
        "Messages dropped because another worker held a live lease on their job.",
        labels=labels,
    )
    accepting = GaugeMetricFamily(
        "meshforge_worker_accepting",
        "1 while the worker takes new jobs (free VRAM above the threshold).",
        labels=labels,
    )
    vram = GaugeMetricFamily(
        "meshforge_worker_vram_free_bytes", "Free memory of the worker's CUDA device.", labels=labels
    )
    for w in rows:
        key = [w.name, w.device]
        busy.add_metric(key, 1 if w.current_job else 0)
        jobs.add_metric([*key, "succeeded"], w.jobs_done)
        jobs.add_metric([*key, "failed"], w.jobs_failed)
        dropped.add_metric(key, w.redeliveries_dropped)
        accepting.add_metric(key, 1 if w.accepting else 0)
        if w.free_vram_bytes is not None:
            vram.add_metric(key, w.free_vram_bytes)
    yield from (live, busy, jobs, dropped, accepting, vram)


class ServiceMetrics:
    """The app's metrics.

    Args:
        store: the ledger (read at scrape time).
        workers: returns the workers' statuses (read at scrape time).
    """

    def __init__(
        self, store: JobStore, workers: Callable[[], list[Any]], remote: Callable[[], list[Any]] | None = None
    ) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.submitted = Counter(
            "meshforge_jobs_submitted", "Job submissions by outcome.", ["kind", "outcome"], registry=r
        )
        self.finished = Counter(
            "meshforge_jobs_finished", "Jobs that reached a terminal state.", ["kind", "state", "code"], registry=r
        )
        self.oom_retries = Counter("meshforge_oom_retries", "Jobs retried with reduced settings.", registry=r)
        self.stage_seconds = Histogram(
            "meshforge_stage_duration_seconds",
            "Pipeline stage wall time.",
            ["kind", "stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.run_seconds = Histogram(
            "meshforge_job_run_seconds",
            "Job wall time from start to finish.",
            ["kind"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "meshforge_job_queue_wait_seconds",
            "Time from submission to start.",
            ["kind"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "meshforge_job_overhead_seconds",
            "Job run time minus pipeline time (the service's own cost).",
            ["kind"],
            buckets=_OVERHEAD_BUCKETS,
            registry=r,
        )
        r.register(_LiveCollector(store, workers, remote))

    def observe(self, outcome: JobOutcome) -> None:
        """Record a finished job (called by the workers)."""
        if outcome.state not in ("succeeded", "failed", "canceled"):
            return
        kind = outcome.kind or "generate"
        self.finished.labels(kind, outcome.state, outcome.error_code or "").inc()
        if outcome.oom_retried:
            self.oom_retries.inc()
        t = outcome.timings
        if t.get("queued_s") is not None:
            self.queue_wait.labels(kind).observe(float(t["queued_s"]))
        if t.get("run_s") is not None:
            self.run_seconds.labels(kind).observe(float(t["run_s"]))
        if t.get("overhead_s") is not None:
            self.overhead.labels(kind).observe(max(0.0, float(t["overhead_s"])))
        for stage in outcome.report.get("stages", []):
            self.stage_seconds.labels(kind, str(stage["name"])).observe(float(stage["seconds"]))

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)
