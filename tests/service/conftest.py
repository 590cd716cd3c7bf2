"""Fixtures for the service tests: the real app in process (Starlette's TestClient, lifespan included) and
the real server as a subprocess (``meshforge serve``, run as ``python -m meshforge.cli serve``) on a free loopback port.

Every wait is bounded; every server started here is stopped (SIGTERM, then SIGKILL) by its fixture.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from meshforge.service import jobs
from meshforge.service.app import create_app
from meshforge.service.settings import Settings

from ..conftest import shared_dir

#: the small settings every image test uses (fast, still textured)
SMALL = {"resolution": "64", "faces": "2000", "texture_size": "256"}
#: even smaller, for tests that only exercise the service
TINY = {"resolution": "32", "faces": "500", "texture_size": "64"}
TERMINAL = ("succeeded", "failed", "canceled")


def image_bytes(name: str = "triposr__chair.png") -> bytes:
    return (shared_dir() / "data" / "images" / name).read_bytes()


@pytest.fixture(scope="session")
def chair() -> bytes:
    return image_bytes()


def make_settings(tmp: Path, **overrides: Any) -> Settings:
    """Settings for a test app: its own data dir, one CPU worker, the inflate backend."""
    values: dict[str, Any] = {
        "data_dir": tmp / "data",
        "devices": ("cpu",),
        "backend": "inflate",
        "sweep_interval_s": 60.0,
        "sse_poll_s": 0.5,
        "shutdown_grace_s": 2.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def client_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., TestClient]]:
    """``client_factory(test_stage_delay_s=0, **settings)`` → a started TestClient (jobs pause
    ``test_stage_delay_s`` at every stage boundary); every one is shut down after the test."""
    stack: list[TestClient] = []

    def factory(test_stage_delay_s: float = 0.0, **overrides: Any) -> TestClient:
        monkeypatch.setattr(jobs, "TEST_STAGE_DELAY_S", test_stage_delay_s)
        client = TestClient(create_app(make_settings(tmp_path, **overrides)))
        client.__enter__()
        stack.append(client)
        return client

    yield factory
    for client in reversed(stack):
        client.__exit__(None, None, None)


@pytest.fixture
def client(client_factory: Callable[..., TestClient]) -> TestClient:
    return client_factory()


def submit(
    client: httpx.Client | TestClient,
    data: bytes,
    options: dict[str, str] | None = None,
    *,
    name: str = "chair.png",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return client.post(
        "/v1/jobs", files={"file": (name, data, "application/octet-stream")}, data=options or {}, headers=headers
    )


def wait_for(
    client: httpx.Client | TestClient,
    job_id: str,
    states: tuple[str, ...] = TERMINAL,
    *,
    timeout: float = 60.0,
    where: Callable[[dict[str, Any]], bool] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Poll a job until it is in one of ``states`` (and ``where`` holds); fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < end:
        r = client.get(f"/v1/jobs/{job_id}", headers=headers)
        assert r.status_code == 200, r.text
        job = r.json()
        if job["state"] in states and (where is None or where(job)):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not reach {states} in {timeout} s: {job}")


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is RFC 9457 problem JSON with this status and code, and no traceback."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["status"] == status and body["code"] == code, body
    assert body["type"] == f"urn:meshforge:problem:{code}"
    assert body["title"] and body["detail"] and "\n" not in body["detail"]
    assert "Traceback" not in r.text
    return body


def read_events(lines: Iterator[str]) -> list[tuple[str, dict[str, Any]]]:
    """Parse a Server-Sent Events stream into ``[(event name, data JSON)]`` until it ends."""
    events: list[tuple[str, dict[str, Any]]] = []
    name, data = "message", ""
    for line in lines:
        if line == "":
            if data:
                events.append((name, json.loads(data)))
            name, data = "message", ""
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
    return events


# -- the real server as a subprocess ------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``meshforge serve`` on 127.0.0.1 (stdout/stderr in ``log``)."""

    def __init__(
        self,
        data_dir: Path,
        log: Path,
        env: dict[str, str] | None = None,
        stage_delay_s: float | None = None,
        log_level: str = "warning",
        unwrap_delay_s: float = 0.0,
    ) -> None:
        self.data_dir = data_dir
        self.log = log
        self.env = env or {}
        self.stage_delay_s = stage_delay_s
        self.unwrap_delay_s = unwrap_delay_s
        self.log_level = log_level
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESHFORGE_SERVICE_")}
        env.update(self.env)
        if self.stage_delay_s is None and not self.unwrap_delay_s:
            cmd = [sys.executable, "-m", "meshforge.cli", "serve"]
        else:  # the test launcher: the same command with a pause at every stage boundary / in the unwrap
            launcher = str(Path(__file__).with_name("slow_serve.py"))
            cmd = [sys.executable, launcher, str(self.stage_delay_s or 0.0), str(self.unwrap_delay_s)]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        cmd += [
            "--data-dir",
            str(self.data_dir),
            "--backend",
            "inflate",
            "--devices",
            "cpu",
            "--log-level",
            self.log_level,
        ]
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.kill()
        raise AssertionError(f"server not ready in {timeout} s:\n{self.log.read_text()}")

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, **kw)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (graceful), SIGKILL after ``timeout``; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``server_factory(data_dir=None, stage_delay_s=None, log_level="warning", **env)`` → a started server
    (with a pause of ``stage_delay_s`` at every stage boundary when given); all are stopped after the test."""
    servers: list[Server] = []

    def factory(
        data_dir: Path | None = None, stage_delay_s: float | None = None, log_level: str = "warning", **env: str
    ) -> Server:
        log = tmp_path / f"server{len(servers)}.log"
        server = Server(data_dir or tmp_path / "data", log, env, stage_delay_s, log_level)
        servers.append(server)
        return server.start()

    yield factory
    for server in servers:
        server.stop()
