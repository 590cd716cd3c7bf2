"""Shared by the service benchmarks: start the real ``meshforge serve`` on a free loopback port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_cmd(data_dir: Path, port: int, log_level: str = "warning") -> list[str]:
    """``meshforge serve`` with the weightless backend on one CPU worker."""
    cmd = [sys.executable, "-m", "meshforge.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    return cmd + ["--data-dir", str(data_dir), "--backend", "inflate", "--devices", "cpu", "--log-level", log_level]


def server_env(**settings: object) -> dict[str, str]:
    """This environment without any ``MESHFORGE_SERVICE_*`` variable, plus ``settings`` as such variables
    (``lease_s=2`` → ``MESHFORGE_SERVICE_LEASE_S=2``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHFORGE_SERVICE_")}
    env.update({f"MESHFORGE_SERVICE_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def start_server(
    data_dir: Path, log: Path, *, log_level: str = "warning", timeout: float = 60.0, **settings: object
) -> tuple[subprocess.Popen[bytes], str]:
    """Start the server (output in ``log``) and wait until ``/readyz`` answers 200; ``(process, url)``.

    Raises:
        SystemExit: the server exited, or was not ready within ``timeout`` seconds.
    """
    port = free_port()
    with log.open("wb") as fh:
        cmd = serve_cmd(data_dir, port, log_level)
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=server_env(**settings))
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server not ready in {timeout:g} s")


def write_results(out: Path, summary: dict[str, object], markdown: str, problems: list[str]) -> int:
    """Write ``out`` as ``.json`` (the summary) and ``.md`` (the write-up), print the write-up and each
    problem; the exit status: 1 when there is any problem, else 0."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown)
    print(markdown)
    for p in problems:
        print(f"FAILED: {p}", file=sys.stderr)
    return 1 if problems else 0
