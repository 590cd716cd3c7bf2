"""``meshforge worker`` and the scale-out settings refuse what cannot work with one clear line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MESHFORGE_SERVICE_")}
    return subprocess.run(
        [sys.executable, "-m", "meshforge.cli", *args], env={**clean, **env}, capture_output=True, text=True, timeout=60
    )


def _one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_worker_without_a_broker_says_what_to_set() -> None:
    r = _run("worker", "--devices", "cpu")
    assert r.returncode == 2
    assert "MESHFORGE_SERVICE_BROKER_URL" in _one_error_line(r)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("DATABASE_URL", "mysql://db/x", "must be a postgresql:// URL"),
        ("STORAGE_URL", "/var/lib/bucket", "must be an s3://bucket/prefix URL"),
        ("BROKER_URL", "http://rabbit", "must be an amqp:// (RabbitMQ) or redis:// URL"),
        ("WORKERS", "-1", "greater than or equal to 0"),
    ],
)
def test_bad_scale_settings_are_one_line_errors(name: str, value: str, says: str) -> None:
    for cmd in (["worker", "--devices", "cpu"], ["serve", "--port", "0"]):
        r = _run(*cmd, **{f"MESHFORGE_SERVICE_{name}": value})
        assert r.returncode == 2, r.stderr
        line = _one_error_line(r)
        assert f"MESHFORGE_SERVICE_{name}" in line and says in line, line


def test_worker_with_an_unreachable_ledger_exits_with_one_line(tmp_path) -> None:
    r = _run(
        "worker",
        "--devices",
        "cpu",
        "--data-dir",
        str(tmp_path),
        MESHFORGE_SERVICE_BROKER_URL="amqp://guest:guest@127.0.0.1:9//",
        MESHFORGE_SERVICE_DATABASE_URL="postgresql://nobody:secret@127.0.0.1:9/none",
    )
    assert r.returncode == 1
    line = _one_error_line(r)
    assert "the worker cannot start" in line and "secret" not in line
