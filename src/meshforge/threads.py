"""Process-wide worker thread pools: created on first use, forgotten in a forked child.

A forked child (the service's workers, a multiprocessing start) inherits the parent's pool object but none
of its threads, and maybe a lock held at the fork: :class:`LazyThreadPool` registers an ``os.register_at_fork``
hook that drops both, so the child makes its own pool on first use.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

#: threads of a small per-process pool: at most four, at most the CPU count
SMALL_POOL_THREADS = max(1, min(4, os.cpu_count() or 1))


class LazyThreadPool:
    """A :class:`concurrent.futures.ThreadPoolExecutor` made on the first :meth:`get` (long-lived, so its
    threads' allocations reuse their malloc arenas instead of each job's new thread leaving one behind).

    Args:
        threads: ``max_workers`` of the executor.
        name: ``thread_name_prefix`` of its threads.
    """

    def __init__(self, threads: int, name: str) -> None:
        self.threads = int(threads)
        self.name = name
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget)

    def get(self) -> ThreadPoolExecutor:
        """The executor, created on first use (and again in a forked child)."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix=self.name)
            return self._pool

    def _forget(self) -> None:
        self._pool, self._lock = None, threading.Lock()
