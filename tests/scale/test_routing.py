"""Routing by free VRAM: a worker whose device is short of free memory takes no job (its message goes back
to the broker) and says so in its heartbeat; ``/readyz`` is not ready while no live worker takes jobs."""

from __future__ import annotations

from pathlib import Path

import pytest
from celery.exceptions import Reject
from fastapi.testclient import TestClient

from meshforge.service import tasks
from meshforge.service.app import create_app

from ..service.conftest import TINY, image_bytes, make_settings, submit

GIB = 1 << 30


def test_a_worker_short_of_vram_takes_no_job_and_readyz_says_so(
    tmp_path: Path, pg_url: str, rabbitmq_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(
        tmp_path, database_url=pg_url, broker_url=rabbitmq_url, min_free_vram_bytes=2 * GIB, queue="routing"
    )
    free = {"bytes": 1 * GIB}  # what the device reports (torch.cuda.mem_get_info on a GPU machine)
    monkeypatch.setattr(
        tasks, "gpu_memory", lambda: [{"device": "cuda:0", "free_bytes": free["bytes"], "total_bytes": 80 * GIB}]
    )
    monkeypatch.setattr(tasks.time, "sleep", lambda s: None)
    ctx = tasks.WorkerContext(settings, "cuda:0", send=lambda job_id: None)
    with TestClient(create_app(settings)) as client:
        job_id = submit(client, image_bytes(), TINY).json()["id"]
        ctx.beat()
        ready = client.get("/readyz")
        assert ready.status_code == 503
        [row] = ready.json()["remote_workers"]
        assert row["accepting"] is False and row["free_vram_bytes"] == GIB and row["total_vram_bytes"] == 80 * GIB
        assert any("no live meshforge worker is taking jobs" in r for r in ready.json()["reasons"])
        with pytest.raises(Reject) as exc:
            ctx.run(job_id, tasks.SCHEMA_VERSION, "")
        assert exc.value.requeue is True
        assert client.get(f"/v1/jobs/{job_id}").json()["state"] == "queued"  # untouched
        free["bytes"] = 4 * GIB  # room again
        ctx.beat()
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["remote_workers"][0]["accepting"] is True
        assert "meshforge_worker_vram_free_bytes" in client.get("/metrics").text
        # a message of another schema or model version is sent back, the job untouched
        with pytest.raises(Reject):
            ctx.run(job_id, tasks.SCHEMA_VERSION + 1, "")
        with pytest.raises(Reject):
            ctx.run(job_id, tasks.SCHEMA_VERSION, "v9")
        assert client.get(f"/v1/jobs/{job_id}").json()["state"] == "queued"
    ctx.store.close()


def test_a_ledger_failure_sends_the_message_back_instead_of_losing_it(
    tmp_path: Path, pg_url: str, postgres_server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    settings = make_settings(tmp_path, database_url=pg_url, broker_url="amqp://127.0.0.1:9//", queue="ledgerdown")
    monkeypatch.setattr(tasks.time, "sleep", lambda s: None)
    task = tasks.register_task(tasks.celery_app(settings))
    monkeypatch.setattr(tasks, "CONTEXT", tasks.WorkerContext(settings, "cpu", send=lambda job_id: None))
    assert task.run("0" * 32, tasks.SCHEMA_VERSION, "") == "missing"  # the ledger answers
    name = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:  # the ledger goes away
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
    with pytest.raises(Reject) as exc:
        task.run("0" * 32, tasks.SCHEMA_VERSION, "")
    assert exc.value.requeue is True
