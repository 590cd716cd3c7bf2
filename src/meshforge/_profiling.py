"""Per-stage wall time and peak resident memory.

On Linux the process's peak RSS (``VmHWM`` in ``/proc/self/status``) is reset before each stage by
writing ``5`` to ``/proc/self/clear_refs`` (see proc(5)), so each stage reports its own peak — memory of
native libraries included, which tracemalloc would miss. Elsewhere the lifetime peak from
``resource.getrusage`` is reported instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .types import Report, StageRecord

_PROC = sys.platform.startswith("linux")


def _reset_peak() -> bool:
    if not _PROC:
        return False
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """The process's peak resident set size in MiB since the last reset (or since start)."""
    if _PROC:
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024.0
        except OSError:
            pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0
    except (ImportError, OSError):  # pragma: no cover
        return 0.0


@contextmanager
def stage(report: Report, name: str) -> Iterator[dict[str, Any]]:
    """Time a stage and record its peak memory; the yielded dict collects the stage's counts."""
    _reset_peak()
    counts: dict[str, Any] = {}
    start = time.perf_counter()
    try:
        yield counts
    finally:
        report.stages.append(StageRecord(name, time.perf_counter() - start, peak_rss_mb(), counts))
