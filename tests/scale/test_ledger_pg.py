"""The job ledger on a real PostgreSQL server (``MESHFORGE_SERVICE_DATABASE_URL=postgresql://…``)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
from fastapi.testclient import TestClient

from meshforge.service.app import create_app
from meshforge.service.storage import JobStore, NewJob

from ..service.conftest import TINY, image_bytes, make_settings, submit, wait_for


def _new(i: int, **kw: object) -> NewJob:
    values: dict = dict(
        id=f"{i:032x}",
        kind="generate",
        owner="",
        idempotency_key=None,
        request_hash=f"r{i}",
        fingerprint=f"f{i}",
        input_name="a.png",
        input_file="input/a.png",
        input_sha256="0" * 64,
        input_bytes=1,
        input_media_type="image/png",
        options={"backend": "inflate"},
        backend="inflate",
    )
    values.update(kw)
    return NewJob(**values)  # type: ignore[arg-type]


def test_service_runs_a_job_with_its_ledger_in_postgres(tmp_path: Path, pg_url: str) -> None:
    settings = make_settings(tmp_path, database_url=pg_url)
    with TestClient(create_app(settings)) as client:
        r = submit(client, image_bytes(), TINY, headers={"Idempotency-Key": "k1"})
        assert r.status_code == 202, r.text
        job = wait_for(client, r.json()["id"], timeout=120)
        assert job["state"] == "succeeded", job
        assert submit(client, image_bytes(), TINY, headers={"Idempotency-Key": "k1"}).json()["id"] == job["id"]
        listed = client.get("/v1/jobs", params={"state": "succeeded"}).json()["items"]
        assert [j["id"] for j in listed] == [job["id"]]
        assert client.get(f"/v1/jobs/{job['id']}/result").content[:4] == b"glTF"
    assert not (settings.data_dir / "jobs.sqlite3").exists()  # no SQLite ledger was made
    with psycopg.connect(pg_url) as conn:
        state, attempts, report = conn.execute("SELECT state, attempts, report FROM jobs").fetchone()
        version = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    assert (state, attempts) == ("succeeded", 1)
    assert json.loads(report)["stages"]
    assert version == "0002_workers"  # the newest Alembic revision


_CLAIMER = textwrap.dedent(
    """
    import json, sys, time
    from meshforge.service.storage import JobStore
    store = JobStore(sys.argv[1], database_url=sys.argv[2])
    got = []
    while (job := store.claim(sys.argv[3], 60, lease_s=float(sys.argv[4]))) is not None:
        got.append(job.id)
    print(json.dumps(got))
    """
)


def _claimers(tmp_path: Path, pg_url: str, names: list[str], lease_s: float) -> list[list[str]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIMER, str(tmp_path / name), pg_url, name, str(lease_s)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    return [json.loads(p.communicate(timeout=60)[0]) for p in procs]


def test_claims_and_leases_hold_across_processes(tmp_path: Path, pg_url: str) -> None:
    store = JobStore(tmp_path / "main", database_url=pg_url)
    try:
        for i in range(40):
            assert store.create(_new(i), max_queue=100, ttl_s=60).how == "created"
        got = _claimers(tmp_path, pg_url, ["w1", "w2", "w3"], lease_s=30.0)
        claimed = [j for g in got for j in g]
        assert sorted(claimed) == sorted(f"{i:032x}" for i in range(40))  # every job once, by one process
        assert store.counts()["running"] == 40
        # the claimers exited without renewing their leases: nothing is taken back while they are valid ...
        assert store.recover(max_attempts=3, ttl_s=60) == ([], [])
        held = store.get(claimed[0])
        assert held is not None and store.heartbeat(held.id, held.attempts, str(held.worker), 300.0)
        # ... and once they expired, every job but the renewed one goes back to the queue
        requeued, failed = store.recover(max_attempts=3, ttl_s=60, now=time.time() + 60)
        assert sorted(requeued) == sorted(set(claimed) - {held.id}) and failed == []
        assert store.counts()["queued"] == 39
        again = store.claim("w4", 60, lease_s=30, job_id=requeued[0])
        assert again is not None and again.attempts == 2
        # the old lease holder's writes are refused
        assert store.finish(requeued[0], 1, "succeeded", ttl_s=60) is False
        assert store.finish(requeued[0], 2, "succeeded", ttl_s=60) is True
    finally:
        store.close()
