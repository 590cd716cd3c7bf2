"""Jobs on Celery: ``meshforge serve --workers 0`` + ``meshforge worker`` processes, with a real RabbitMQ (and
Redis), PostgreSQL ledger and S3 (moto) bucket, all started by the session's fixtures."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import psycopg
import pytest

from ..service.conftest import TINY, image_bytes, submit
from .cluster import Cluster, wait_http


@pytest.fixture
def cluster(tmp_path: Path, rabbitmq_url: str, pg_url: str, s3_env: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, rabbitmq_url, pg_url, s3_env, lease_s="5", worker_heartbeat_s="0.5")
    try:
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()


def _rows(pg_url: str, sql: str) -> list[tuple]:
    with psycopg.connect(pg_url) as conn:
        return conn.execute(sql).fetchall()


def _objects(s3_url: str) -> list[str]:
    bucket, _, prefix = s3_url[len("s3://") :].partition("/")
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"][len(prefix) + 1 :] for p in pages for o in p.get("Contents", ()))


def test_worker_processes_run_the_jobs_of_an_api_only_server(cluster: Cluster, pg_url: str, s3_env: str) -> None:
    worker = cluster.worker()
    api = cluster.start_api()
    with cluster.client() as http:
        ready = http.get("/readyz").json()
        assert ready["ready"] and ready["workers"] == [], ready
        assert ready["checks"] == {"ledger": True, "broker": True, "store": True}
        [remote] = ready["remote_workers"]
        assert remote["device"] == "cpu" and remote["backends"] == ["inflate"] and remote["accepting"]
        ids = [submit(http, image_bytes(), dict(TINY, faces=str(400 + i))).json()["id"] for i in range(3)]
        done = [wait_http(http, i, ("succeeded", "failed"), 120) for i in ids]
        assert [d["state"] for d in done] == ["succeeded"] * 3, done
        assert all(http.get(f"/v1/jobs/{i}/result").content[:4] == b"glTF" for i in ids)
        metrics = http.get("/metrics").text
    # the worker process ran them (its lease-owner name), the API server (no worker threads) did not
    holders = {r[0].split("@")[0] for r in _rows(pg_url, "SELECT worker FROM jobs")}
    assert holders == {"worker-cpu"}
    assert f":{worker.pid}:" in _rows(pg_url, "SELECT worker FROM jobs")[0][0]
    assert f"jobs/{ids[0]}/result.glb" in _objects(s3_url=s3_env)
    assert 'meshforge_worker_jobs{device="cpu",result="succeeded"' in metrics
    assert "meshforge_remote_workers 1.0" in metrics
    assert api.proc is not None and api.proc.poll() is None


def test_a_killed_worker_job_is_redelivered_once_and_never_runs_twice_at_once(
    cluster: Cluster, pg_url: str, s3_env: str
) -> None:
    workers = [cluster.worker(stage_delay_s=0.5), cluster.worker(stage_delay_s=0.5)]
    cluster.start_api()
    with cluster.client() as http:
        end = time.monotonic() + 60
        while len(http.get("/readyz").json()["remote_workers"]) < 2 and time.monotonic() < end:
            time.sleep(0.2)
        time.sleep(2.0)  # each consumer starts just after its worker's first heartbeat
        job_id = submit(http, image_bytes(), TINY).json()["id"]
        wait_http(http, job_id, ("running",), 60)
        holder = _rows(pg_url, f"SELECT worker FROM jobs WHERE id='{job_id}'")[0][0]
        [first] = [w for w in workers if f":{w.pid}:" in holder]
        [second] = [w for w in workers if w is not first]
        first.kill()
        done = wait_http(http, job_id, ("succeeded", "failed"), 120)
        assert done["state"] == "succeeded" and done["attempts"] == 2, done
        assert http.get(f"/v1/jobs/{job_id}/result").content[:4] == b"glTF"
        final = _rows(pg_url, f"SELECT worker FROM jobs WHERE id='{job_id}'")[0][0]
        assert f":{second.pid}:" in final
        # the broker handed the message to the second worker at once, while the dead worker's lease was
        # live: it was dropped; the job ran again only after the lease expired and the ledger sent it again
        time.sleep(1.0)  # a heartbeat after the job
        [row] = [w for w in http.get("/readyz").json()["remote_workers"] if f":{second.pid}:" in w["name"]]
        assert row["redeliveries_dropped"] == 1 and row["jobs_done"] == 1, row
    assert _objects(s3_env).count(f"jobs/{job_id}/result.glb") == 1


def test_redis_broker(tmp_path: Path, redis_url: str, pg_url: str, s3_env: str) -> None:
    c = Cluster(tmp_path, redis_url, pg_url, s3_env)
    try:
        c.worker()
        c.start_api()
        with c.client() as http:
            assert http.get("/readyz").json()["checks"]["broker"] is True
            job = wait_http(http, submit(http, image_bytes(), TINY).json()["id"], ("succeeded", "failed"), 120)
            assert job["state"] == "succeeded", job
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()
