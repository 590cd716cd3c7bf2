"""A scale-out deployment on one machine, for tests and the benchmark: ``meshforge serve --workers 0``
(the API tier) and ``meshforge worker`` processes sharing a broker, a PostgreSQL ledger and a bucket."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ..service.conftest import Server

LAUNCHER = str(Path(__file__).with_name("worker_launcher.py"))


class Worker:
    """One ``meshforge worker --devices cpu`` process (through the test launcher), output in ``log``."""

    def __init__(self, data_dir: Path, log: Path, env: dict[str, str], *, stage_delay_s: float = 0.0) -> None:
        self.data_dir, self.log, self.env = data_dir, log, env
        self.stage_delay_s = stage_delay_s
        self.unwrap_delay_s = 0.0
        self.oom_above = 0
        self.fail = False
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESHFORGE_SERVICE_")}
        env.update(self.env)
        cmd = [sys.executable, LAUNCHER, str(self.stage_delay_s), str(self.unwrap_delay_s), str(self.oom_above)]
        cmd += ["1" if self.fail else "0", "--devices", "cpu", "--backend", "inflate", "--data-dir", str(self.data_dir)]
        cmd += ["--log-level", "warning"]
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL (a crash: no shutdown code runs)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (Celery's warm shutdown), SIGKILL after ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


class Cluster:
    """An API server and workers on one broker, ledger and bucket; every process stopped by :meth:`stop`."""

    def __init__(self, root: Path, broker_url: str, database_url: str, storage_url: str, **settings: str) -> None:
        self.root = root
        self.env = {
            "MESHFORGE_SERVICE_BROKER_URL": broker_url,
            "MESHFORGE_SERVICE_DATABASE_URL": database_url,
            "MESHFORGE_SERVICE_STORAGE_URL": storage_url,
            "MESHFORGE_SERVICE_QUEUE": f"q{root.name[-20:].replace('_', '')}{os.getpid()}",
            "MESHFORGE_SERVICE_MIN_FREE_BYTES": "0",
            **{f"MESHFORGE_SERVICE_{k.upper()}": v for k, v in settings.items()},
        }
        for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
            if key in os.environ:
                self.env[key] = os.environ[key]
        self.workers: list[Worker] = []
        self.api: Server | None = None

    def worker(self, **kw: float) -> Worker:
        """Start a worker (``stage_delay_s``, ``unwrap_delay_s``, ``oom_above``, ``fail`` as attributes)."""
        n = len(self.workers)
        w = Worker(self.root / f"worker{n}", self.root / f"worker{n}.log", self.env)
        for k, v in kw.items():
            setattr(w, k, v)
        self.workers.append(w)
        return w.start()

    def start_api(self, timeout: float = 60.0) -> Server:
        """Start (or restart) ``meshforge serve --workers 0``; ready once a worker's heartbeat is seen."""
        env = dict(self.env, MESHFORGE_SERVICE_WORKERS="0")
        self.api = Server(self.root / "api", self.root / "api.log", env)
        return self.api.start(timeout)

    def client(self) -> httpx.Client:
        assert self.api is not None
        return self.api.client()

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(self.root.glob("*.log"))
        )

    def stop(self) -> None:
        if self.api is not None:
            self.api.stop()
        for w in self.workers:
            w.stop()


def wait_http(client: httpx.Client, job_id: str, states: tuple[str, ...], timeout: float, **where: object) -> dict:
    """Poll ``GET /v1/jobs/{id}`` until its state is one of ``states`` (and fields equal ``where``)."""
    end = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < end:
        try:
            r = client.get(f"/v1/jobs/{job_id}")
        except httpx.TransportError:
            time.sleep(0.2)
            continue
        if r.status_code == 200:
            job = r.json()
            if job["state"] in states and all(job.get(k) == v for k, v in where.items()):
                return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not in {states} after {timeout} s: {job}")
