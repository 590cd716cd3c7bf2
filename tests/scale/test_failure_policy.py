"""Failure policy with remote workers: out of memory → retried degraded; a failing job → the dead-letter
list (``GET /v1/jobs?state=dead``) with its last error, and ``POST /v1/jobs/{id}/retry`` runs it again."""

from __future__ import annotations

from pathlib import Path

from ..service.conftest import assert_problem, image_bytes, submit
from .cluster import Cluster, wait_http

OPTS = {"resolution": "64", "faces": "400", "texture_size": "64"}


def test_oom_is_retried_degraded_and_failures_go_to_the_dead_letter_list(
    tmp_path: Path, rabbitmq_url: str, pg_url: str, s3_env: str
) -> None:
    c = Cluster(tmp_path, rabbitmq_url, pg_url, s3_env, worker_heartbeat_s="0.5")
    try:
        oom = c.worker(oom_above=32)  # the test backend runs out of memory above a 32³ grid
        c.start_api()
        with c.client() as http:
            job = wait_http(http, submit(http, image_bytes(), OPTS).json()["id"], ("succeeded", "failed"), 120)
            assert job["state"] == "succeeded" and job["degraded"] is True, job
            assert job["effective_options"]["resolution"] == 32 and job["options"]["resolution"] == 64
            assert "ran out of memory; retried once with reduced settings: resolution 64 → 32" in job["warnings"][0]
            # it went back to the queue (the attempt not counted) and ran again from its message
            assert job["attempts"] == 1
            assert "re-queued with reduced settings (resolution 64 → 32" in oom.log.read_text()
            assert_problem(http.post(f"/v1/jobs/{job['id']}/retry"), 409, "not_retryable")
            oom.stop()
            c.worker(fail=True)  # now every run fails
            bad = submit(http, image_bytes(), dict(OPTS, faces="300")).json()["id"]
            failed = wait_http(http, bad, ("succeeded", "failed"), 120)
            assert failed["state"] == "failed" and failed["error"]["code"] == "internal_error", failed
            dead = http.get("/v1/jobs", params={"state": "dead"}).json()["items"]
            assert [(d["id"], d["error"]["message"]) for d in dead] == [
                (bad, "internal error: RuntimeError: the test backend always fails")
            ]
            c.workers[-1].stop()
            c.worker()  # a healthy worker; the dead letter is retried
            r = http.post(f"/v1/jobs/{bad}/retry")
            assert r.status_code == 202 and r.json()["state"] == "queued" and r.json()["error"] is None, r.text
            again = wait_http(http, bad, ("succeeded", "failed"), 120)
            assert again["state"] == "succeeded" and again["attempts"] == 1 and not again["degraded"], again
            assert http.get("/v1/jobs", params={"state": "dead"}).json()["items"] == []
            assert http.get(f"/v1/jobs/{bad}/result").content[:4] == b"glTF"
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()
