"""Change notifications for the events stream: any thread says "job X changed", the event loop wakes the
streams following X. A stream also re-reads its job every ``sse_poll_s`` seconds, so changes made by
another process sharing the ledger are seen too."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager


class ChangeHub:
    """Wakes the asyncio listeners of a job when :meth:`notify` is called from any thread."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subs: dict[str, set[asyncio.Event]] = {}

    def bind(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Deliver notifications on ``loop`` (None: drop them)."""
        self._loop = loop

    def notify(self, job_id: str) -> None:
        """Thread-safe; cheap when nobody follows the job."""
        loop = self._loop
        if loop is None or job_id not in self._subs:
            return
        try:
            loop.call_soon_threadsafe(self._fire, job_id)
        except RuntimeError:  # the loop is closed (shutdown)
            pass

    def _fire(self, job_id: str) -> None:
        for event in self._subs.get(job_id, ()):
            event.set()

    @contextmanager
    def subscribe(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever the job changes (call and use on the event loop)."""
        event = asyncio.Event()
        self._subs.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            subs = self._subs.get(job_id)
            if subs is not None:
                subs.discard(event)
                if not subs:
                    self._subs.pop(job_id, None)
