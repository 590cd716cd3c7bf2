"""``meshforge serve`` / ``python -m meshforge.service``: run the HTTP service with uvicorn.

This module imports neither FastAPI nor uvicorn at import time, so the CLI can add the ``serve`` command
cheaply; :func:`serve_main` says what to install when the ``serve`` extra is missing.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import MeshforgeError, require


def serve_main(
    host: str | None = None,
    port: int | None = None,
    data_dir: str | Path | None = None,
    *,
    backend: str | None = None,
    weights: str | None = None,
    devices: str | None = None,
    api_keys: str | None = None,
    log_level: str | None = None,
    **settings: Any,
) -> int:
    """Run the service in the foreground until SIGINT/SIGTERM.

    Arguments left as None come from the environment (``MESHFORGE_SERVICE_*``, see
    :class:`~meshforge.service.settings.Settings`), then the defaults (``127.0.0.1:8000``, data in
    ``./meshforge-data``).

    Args:
        host: interface to bind (``0.0.0.0`` to listen on every interface).
        port: TCP port.
        data_dir: the service's data folder (job ledger and artifacts).
        backend: default backend for generate jobs (``auto``, ``inflate``, ``triposr``).
        weights: weights location for backends that need them.
        devices: ``auto`` or a comma-separated list (``cpu``, ``cuda:0,cuda:1``): one worker per device.
        api_keys: comma-separated bearer tokens; authentication is off when empty.
        log_level: uvicorn log level.
        **settings: any other :class:`~meshforge.service.settings.Settings` field.

    The port is bound before the ledger is opened, so a second server on a busy port changes nothing.
    SIGTERM or SIGINT drains (see ``shutdown_grace_s``): no new jobs, running jobs finish or go back to
    the queue, exit status 0.

    Returns:
        The process exit status: 0 after a clean shutdown, 2 for invalid settings, 1 when the service
        cannot start (missing dependency, a data dir it cannot write in, port in use); each with one
        ``error:`` line on stderr, no traceback.
    """
    try:
        require("fastapi", "meshforge serve", "serve")
        require("uvicorn", "meshforge serve", "serve")
        require("python_multipart", "meshforge serve (file uploads)", "serve")
        require("prometheus_client", "meshforge serve (metrics)", "serve")
        from .app import create_app
        from .settings import Settings

        cfg = Settings.from_env(
            host=host,
            port=port,
            data_dir=data_dir,
            backend=backend,
            weights=weights,
            devices=devices,
            api_keys=api_keys,
            log_level=log_level,
            **settings,
        )
    except MeshforgeError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2 if not isinstance(exc, ImportError) else 1
    from .storage import DataDirError, check_data_dir

    try:
        check_data_dir(cfg.data_dir)
    except DataDirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    import logging

    import uvicorn

    from .logs import configure

    uvicorn_log_config = configure(cfg.log_format, cfg.log_level)  # our lines on stderr, beside uvicorn's
    # bind before anything else: a second server on a busy port must not open the ledger at all
    try:
        sock = _bind(cfg.host, cfg.port)
    except OSError as exc:
        print(f"error: cannot serve on {cfg.host}:{cfg.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    app = create_app(cfg)
    config = uvicorn.Config(
        app,
        host=cfg.host,
        port=cfg.port,
        log_level=cfg.log_level,
        timeout_graceful_shutdown=5,
        access_log=False,  # the service's own access log (meshforge.service.access) has one line per request
        log_config=uvicorn_log_config if uvicorn_log_config is not None else uvicorn.config.LOGGING_CONFIG,
    )
    server = _draining_server(config, app, cfg.shutdown_grace_s)
    from ..mesh.uv import start_worker

    # the unwrap worker is a fresh process (close_fds, parent-death signal): it never holds the listening
    # socket and dies with this server; started from the main thread, which lives as long as the server
    start_worker()
    try:
        with sock:
            host, port = sock.getsockname()[:2]
            logging.getLogger("meshforge.service").info("listening on http://%s:%d", host, port)
            server.run(sockets=[sock])
    except SystemExit:  # uvicorn exits(1) when the app cannot start
        return 1
    return 0 if server.started else 1


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv6 when ``host`` has a colon).

    Raises:
        OSError: the address is in use or cannot be bound.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _draining_server(config: Any, app: Any, grace_s: float) -> Any:
    """A ``uvicorn.Server`` whose first SIGTERM/SIGINT drains before it stops.

    Draining (:meth:`~meshforge.service.manager.JobManager.drain`, in a thread): the server keeps answering
    (``/readyz`` says 503, submissions get 503 ``shutting_down`` with ``Retry-After``, jobs can still be
    followed and downloaded), takes no new job, lets the running jobs finish for up to ``grace_s``
    seconds and puts those still running back in the queue; then uvicorn stops as usual and the process
    exits with status 0. A second signal stops at once (the running jobs are put back in the queue).
    """
    import threading

    import uvicorn

    class DrainingServer(uvicorn.Server):
        draining: threading.Thread | None = None

        def handle_exit(self, sig: int, frame: Any) -> None:
            # not recorded in _captured_signals: uvicorn would re-raise it after the shutdown and the
            # process would end by the signal instead of exiting 0
            manager = getattr(app.state, "manager", None)
            if self.draining is None and manager is not None and not self.should_exit:
                self.draining = threading.Thread(target=self._drain, args=(manager,), daemon=True)
                self.draining.start()
            elif self.should_exit:
                self.force_exit = True
            else:
                self.should_exit = True

        def _drain(self, manager: Any) -> None:
            try:
                manager.drain(grace_s)
            finally:
                self.should_exit = True

    return DrainingServer(config)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``serve`` options to a parser (used by ``meshforge serve`` and ``python -m meshforge.service``)."""
    parser.add_argument("--host", default=None, help="interface to bind (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=None, help="TCP port (default 8000)")
    parser.add_argument(
        "--data-dir", default=None, metavar="DIR", help="job ledger and artifacts (default ./meshforge-data)"
    )
    parser.add_argument("--backend", default=None, help="default backend for generate jobs (default auto)")
    parser.add_argument("--weights", default=None, help="weights folder or hub id for backends that need them")
    parser.add_argument("--devices", default=None, help="auto, cpu, or e.g. cuda:0,cuda:1 (one worker each)")
    parser.add_argument("--log-level", default=None, choices=("critical", "error", "warning", "info", "debug"))
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="0: API only, jobs run in `meshforge worker` processes (default: one worker thread per device, "
        "none with a broker)",
    )
    parser.epilog = (
        "Every setting can also come from MESHFORGE_SERVICE_<NAME> environment variables, e.g. "
        "MESHFORGE_SERVICE_API_KEYS (comma-separated bearer tokens), MESHFORGE_SERVICE_MAX_QUEUE, "
        "MESHFORGE_SERVICE_JOB_TIMEOUT_S, MESHFORGE_SERVICE_TTL_S."
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Call :func:`serve_main` with parsed :func:`add_arguments` options."""
    return serve_main(
        args.host,
        args.port,
        args.data_dir,
        backend=args.backend,
        weights=args.weights,
        devices=args.devices,
        log_level=args.log_level,
        workers=args.workers,
    )


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``meshforge worker`` options to a parser."""
    parser.add_argument(
        "--devices", default=None, help="cpu, cuda:0, or e.g. cuda:0,cuda:1 (one worker process each; default auto)"
    )
    parser.add_argument(
        "--data-dir", default=None, metavar="DIR", help="local working copies of job files (default ./meshforge-data)"
    )
    parser.add_argument("--backend", default=None, help="default backend for generate jobs (default auto)")
    parser.add_argument("--weights", default=None, help="weights folder or hub id for backends that need them")
    parser.add_argument("--log-level", default=None, choices=("critical", "error", "warning", "info", "debug"))
    parser.epilog = (
        "Needs MESHFORGE_SERVICE_BROKER_URL (amqp:// or redis://), MESHFORGE_SERVICE_DATABASE_URL "
        "(postgresql://) and MESHFORGE_SERVICE_STORAGE_URL (s3://bucket/prefix) shared with the API servers; "
        "every other MESHFORGE_SERVICE_* setting applies too."
    )


def worker_main(
    devices: str | None = None,
    data_dir: str | Path | None = None,
    *,
    backend: str | None = None,
    weights: str | None = None,
    log_level: str | None = None,
) -> int:
    """``meshforge worker``: run jobs from the broker, one process per device (see :mod:`.tasks`).

    With one device the worker runs in this process; with several, one child process per device, and this
    process waits for them (SIGTERM/SIGINT is passed on: each finishes its running job, then exits).

    Returns:
        The exit status: 0 after a clean shutdown, 2 for invalid settings (a missing broker URL among them),
        1 when a dependency is missing or the ledger, broker or object store cannot be reached; each with one
        ``error:`` line on stderr.
    """
    try:
        require("celery", "meshforge worker", "scale")
        from .settings import Settings

        cfg = Settings.from_env(
            data_dir=data_dir, backend=backend, weights=weights, devices=devices, log_level=log_level
        )
    except MeshforgeError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2 if not isinstance(exc, ImportError) else 1
    if not cfg.broker_url:
        print(
            "error: meshforge worker needs MESHFORGE_SERVICE_BROKER_URL (amqp://… or redis://…); "
            "without a broker, meshforge serve runs the jobs itself",
            file=sys.stderr,
        )
        return 2
    resolved = cfg.resolved_devices()
    if len(resolved) > 1:
        return _worker_children(resolved, sys.argv[1:] if sys.argv else [])
    from .logs import configure
    from .storage import DataDirError, check_data_dir

    try:
        check_data_dir(cfg.data_dir)
    except DataDirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    configure(cfg.log_format, cfg.log_level)
    from .tasks import worker_main as run_worker

    try:
        return run_worker(cfg, resolved[0])
    except Exception as exc:
        from .problems import one_line

        print(f"error: the worker cannot start: {one_line(f'{type(exc).__name__}: {exc}')}", file=sys.stderr)
        return 1


def _worker_children(devices: Sequence[str], argv: Sequence[str]) -> int:
    """One ``meshforge worker --devices <d>`` child per device; waits for all, passing SIGTERM/SIGINT on."""
    import signal
    import subprocess

    base = [sys.executable, "-m", "meshforge.cli", "worker"]
    rest: list[str] = []
    skip = False
    for a in argv[argv.index("worker") + 1 :] if "worker" in argv else []:
        if skip:
            skip = False
            continue
        if a == "--devices":
            skip = True
            continue
        if a.startswith("--devices="):
            continue
        rest.append(a)
    children = [subprocess.Popen([*base, "--devices", d, *rest]) for d in devices]

    def forward(sig: int, _frame: Any) -> None:
        for c in children:
            if c.poll() is None:
                c.send_signal(sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [c.wait() for c in children]
    return max(codes, default=0)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m meshforge.service [options]``."""
    parser = argparse.ArgumentParser(prog="python -m meshforge.service", description="Run the meshforge HTTP service.")
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))
