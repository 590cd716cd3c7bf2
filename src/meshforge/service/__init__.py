"""The HTTP job service (``meshforge serve``): FastAPI routes over a SQLite job ledger, with one worker
thread per device.

Layout: :mod:`~.settings` (environment, validated at startup), :mod:`~.schemas` (response models),
:mod:`~.routes` (thin handlers), :mod:`~.manager` (submissions, views, artifacts, deletion),
:mod:`~.backends` (which backends can run), :mod:`~.jobs`
(:func:`execute_job`, a plain function of a job id), :mod:`~.workers` (threads), :mod:`~.storage`
(ledger and artifact folders), :mod:`~.problems` (RFC 9457 errors), :mod:`~.metrics` (Prometheus),
:mod:`~.app` (:func:`create_app`), :mod:`~.entry` (:func:`serve_main`).

Names are imported lazily so ``import meshforge.service`` works without the ``serve`` extra.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Settings", "create_app", "execute_job", "serve_main"]


def __getattr__(name: str) -> Any:
    if name == "Settings":
        from .settings import Settings

        return Settings
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "execute_job":
        from .jobs import execute_job

        return execute_job
    if name == "serve_main":
        from .entry import serve_main

        return serve_main
    raise AttributeError(name)
