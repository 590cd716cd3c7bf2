"""Job lifecycle across processes: leases (two servers on one data dir), recovery of expired leases only,
and the SIGTERM drain, with real ``meshforge serve`` processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any

from meshforge.service.storage import JobStore

from .conftest import TINY, assert_problem, wait_for


def test_a_second_start_does_not_touch_the_running_job(server_factory, tmp_path, chair):
    data_dir = tmp_path / "data"
    first = server_factory(data_dir, stage_delay_s=1.5)
    with first.client() as http:
        job_id = http.post("/v1/jobs", files={"file": ("chair.png", chair)}, data=TINY).json()["id"]
        wait_for(http, job_id, ("running",), timeout=30, where=lambda j: j["progress"]["stage"] is not None)

        # a second start on the same port fails (port in use), one on another port runs beside the first
        again = subprocess.Popen(
            [sys.executable, "-m", "meshforge.cli", "serve", "--port", str(first.port)]
            + ["--data-dir", str(data_dir), "--backend", "inflate", "--devices", "cpu"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        second = server_factory(data_dir)
        _, err = again.communicate(timeout=60)
        assert again.returncode == 1 and "Traceback" not in err, err
        assert f"127.0.0.1:{first.port}" in err and "in use" in err, err
        with second.client() as other:
            running = other.get(f"/v1/jobs/{job_id}").json()
            assert running["state"] == "running" and running["attempts"] == 1, running

        done = wait_for(http, job_id, timeout=60)
        assert done["state"] == "succeeded" and done["attempts"] == 1, done


def _job_events(log_text: str) -> list[dict[str, Any]]:
    """The job events of a server's JSON log."""
    records = [json.loads(line) for line in log_text.splitlines() if line.startswith("{")]
    return [r for r in records if str(r.get("event", "")).startswith("job.")]


def test_two_servers_on_one_data_dir_run_every_job_exactly_once(server_factory, tmp_path, chair):
    data_dir = tmp_path / "data"
    # a short lease: both servers renew theirs and look for expired ones every second while jobs run
    env = {"MESHFORGE_SERVICE_LOG_FORMAT": "json", "MESHFORGE_SERVICE_LEASE_S": "1"}
    first = server_factory(data_dir, stage_delay_s=0.1, log_level="info", **env)
    ids: list[str] = []
    with first.client() as a:
        for i in range(4):
            r = a.post("/v1/jobs", files={"file": ("chair.png", chair)}, data=dict(TINY, faces=str(500 + i)))
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        wait_for(a, ids[0], ("running",), timeout=30)
        second = server_factory(data_dir, stage_delay_s=0.1, log_level="info", **env)  # starts mid-job
        with second.client() as b:
            for i in range(4, 8):
                r = b.post("/v1/jobs", files={"file": ("chair.png", chair)}, data=dict(TINY, faces=str(500 + i)))
                assert r.status_code == 202, r.text
                ids.append(r.json()["id"])
            jobs = [wait_for(b, job_id, timeout=120) for job_id in ids]
    assert [j["state"] for j in jobs] == ["succeeded"] * len(ids), jobs
    assert [j["attempts"] for j in jobs] == [1] * len(ids)
    assert first.stop() == 0 and second.stop() == 0

    # the evidence: each job was started once and finished once, by one of the two processes
    logs = [_job_events(server.log.read_text()) for server in (first, second)]
    started = [(n, r["job_id"], r["worker"]) for n, log in enumerate(logs) for r in log if r["event"] == "job.started"]
    assert sorted(job_id for _, job_id, _ in started) == sorted(ids), started
    finished = [r["job_id"] for log in logs for r in log if r["event"] == "job.finished"]
    assert sorted(finished) == sorted(ids)
    assert not [r for log in logs for r in log if r["event"] in ("job.requeued", "job.abandoned")]
    assert {n for n, _, _ in started} == {0, 1}  # both servers ran jobs
    for n, _, worker in started:  # each under its own lease owner (its own process id)
        assert f":{[first, second][n].proc.pid}:" in worker  # type: ignore[union-attr]


def test_a_live_server_reruns_the_job_of_a_dead_one_once_its_lease_expires(server_factory, tmp_path, chair):
    data_dir = tmp_path / "data"
    doomed = server_factory(data_dir, stage_delay_s=0.5, MESHFORGE_SERVICE_LEASE_S="1.5")
    survivor = server_factory(data_dir)
    with doomed.client() as http:
        job_id = http.post("/v1/jobs", files={"file": ("chair.png", chair)}, data=TINY).json()["id"]
        running = wait_for(http, job_id, ("running",), timeout=30, where=lambda j: j["progress"]["stage"] is not None)
    assert running["attempts"] == 1
    doomed.kill()  # SIGKILL: its lease is no longer renewed
    with survivor.client() as http:
        done = wait_for(http, job_id, timeout=60)
    assert done["state"] == "succeeded" and done["attempts"] == 2, done


def test_a_worker_that_lost_its_lease_stops_the_job(client_factory, chair, tmp_path):
    client = client_factory(test_stage_delay_s=0.5, lease_s=0.6)
    job_id = client.post("/v1/jobs", files={"file": ("chair.png", chair)}, data=TINY).json()["id"]
    wait_for(client, job_id, ("running",), timeout=30, where=lambda j: j["progress"]["stage"] is not None)
    # another process, whose clock runs ahead, finds the lease expired, re-queues the job and claims it
    store = JobStore(tmp_path / "data")
    assert store.recover(3, 60.0, now=time.time() + 60) == ([job_id], [])
    taken = store.claim("elsewhere#0@other:1:x", 600.0, lease_s=600.0, job_id=job_id)
    assert taken is not None and taken.attempts == 2
    # this server's worker notices (lease renewal or stage boundary) and drops the job
    end = time.monotonic() + 20
    while client.get("/readyz").json()["workers"][0]["current_job"] is not None and time.monotonic() < end:
        time.sleep(0.05)
    assert client.get("/readyz").json()["workers"][0]["current_job"] is None
    time.sleep(1.0)
    row = store.get(job_id)
    assert row is not None and row.state == "running" and row.worker == "elsewhere#0@other:1:x" and row.attempts == 2
    assert not (store.job_dir(job_id) / "result.glb").exists()
    store.close()


# -- SIGTERM drains ------------------------------------------------------------------------------------
def test_sigterm_lets_the_running_job_finish_and_refuses_new_ones(server_factory, tmp_path, chair):
    data_dir = tmp_path / "data"
    server = server_factory(data_dir, stage_delay_s=0.4, MESHFORGE_SERVICE_SHUTDOWN_GRACE_S="60")
    with server.client() as http:
        job_id = http.post("/v1/jobs", files={"file": ("chair.png", chair)}, data=TINY).json()["id"]
        queued_id = http.post("/v1/jobs", files={"file": ("chair.png", chair)}, data=dict(TINY, faces="600")).json()[
            "id"
        ]
        wait_for(http, job_id, ("running",), timeout=30, where=lambda j: j["progress"]["stage"] is not None)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + 10
        while http.get("/readyz").status_code == 200 and time.monotonic() < end:
            time.sleep(0.05)
        assert http.get("/readyz").status_code == 503  # draining: load balancers stop sending work
        r = http.post("/v1/jobs", files={"file": ("chair.png", chair)}, data=dict(TINY, faces="700"))
        body = assert_problem(r, 503, "shutting_down")
        assert int(r.headers["retry-after"]) >= 1 and "shutting down" in body["detail"]
        assert http.get(f"/v1/jobs/{job_id}").json()["state"] == "running"  # still answering while it drains
    assert server.proc.wait(60) == 0
    store = JobStore(data_dir)
    done, waiting = store.get(job_id), store.get(queued_id)
    store.close()
    assert done is not None and done.state == "succeeded" and done.attempts == 1
    assert waiting is not None and waiting.state == "queued" and waiting.attempts == 0  # not started, not lost
    assert len(list((data_dir / "jobs").iterdir())) == 2  # the refused upload left nothing behind


def test_sigterm_requeues_a_job_that_outlasts_the_grace_period(server_factory, tmp_path, chair):
    data_dir = tmp_path / "data"
    slow = server_factory(data_dir, stage_delay_s=1.0, MESHFORGE_SERVICE_SHUTDOWN_GRACE_S="0.5")
    with slow.client() as http:
        job_id = http.post("/v1/jobs", files={"file": ("chair.png", chair)}, data=TINY).json()["id"]
        wait_for(http, job_id, ("running",), timeout=30, where=lambda j: j["progress"]["stage"] is not None)
    assert slow.stop() == 0
    store = JobStore(data_dir)
    row = store.get(job_id)
    store.close()
    assert row is not None and row.state == "queued" and row.attempts == 0, row  # back in the queue at once

    restarted = server_factory(data_dir)
    with restarted.client() as http:
        done = wait_for(http, job_id, timeout=60)
        assert done["state"] == "succeeded" and done["attempts"] == 1, done  # a graceful stop does not count


def test_a_ledger_from_before_leases_is_migrated_when_opened(tmp_path):
    import sqlite3

    from meshforge.service import storage

    old_schema = storage._SCHEMA.replace(",\n    lease_expires REAL", "")
    assert old_schema != storage._SCHEMA
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with sqlite3.connect(data_dir / "jobs.sqlite3") as db:
        db.executescript(old_schema)
        db.execute(
            "INSERT INTO jobs (id, kind, state, request_hash, fingerprint, input_name, input_file, input_sha256, "
            "input_bytes, input_media_type, options, created_at, attempts, worker) "
            "VALUES ('a1', 'generate', 'running', 'h', 'f', 'x.png', 'input/x.png', 's', 1, 'image/png', '{}', "
            "0, 1, 'w')"
        )
    store = JobStore(data_dir)
    columns = {r[1] for r in store._conn().execute("PRAGMA table_info(jobs)")}
    assert "lease_expires" in columns
    # a job left running by the old version has no lease: it is recovered like an expired one
    assert store.recover(3, 60.0) == (["a1"], [])
    row = store.get("a1")
    assert row is not None and row.state == "queued" and row.lease_expires is None
    JobStore(data_dir).close()  # opening again is a no-op
    store.close()
