"""The ledger is the source of truth: a job submitted while the broker is down is queued anyway (202), and
its message is sent once the broker is back."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from meshforge.service.app import create_app

from ..service.conftest import TINY, image_bytes, make_settings, submit
from .servers import free_port, rabbitmq_server


def test_a_job_submitted_while_the_broker_is_down_is_sent_when_it_is_back(tmp_path: Path, pg_url: str) -> None:
    port = free_port()
    broker = f"amqp://guest:guest@127.0.0.1:{port}//"
    settings = make_settings(tmp_path, database_url=pg_url, broker_url=broker, queue="outage", sweep_interval_s=0.5)
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["broker"] is False
        assert "the broker cannot be reached" in ready.json()["reasons"]
        r = submit(client, image_bytes(), TINY)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert client.get(f"/v1/jobs/{job_id}").json()["state"] == "queued"
        manager = client.app.state.manager  # type: ignore[attr-defined]
        with rabbitmq_server(port):
            end = time.monotonic() + 60
            while (manager.broker.queue_depth() or 0) < 1 and time.monotonic() < end:
                time.sleep(0.5)  # the housekeeping tick sends it again
            assert manager.broker.queue_depth() == 1
            assert client.get("/readyz").json()["checks"]["broker"] is True
