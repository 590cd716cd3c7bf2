"""The real server: ``python -m meshforge.service`` (uvicorn) on 127.0.0.1 in a subprocess."""

from __future__ import annotations

import pytest

from ..conftest import shared_dir
from .conftest import SMALL, read_events, wait_for

IMAGES = sorted(p.name for p in (shared_dir() / "data" / "images").glob("*") if p.is_file())


def test_every_shared_image_becomes_a_valid_glb_over_http(server_factory, shared_images, validate):
    server = server_factory()
    with server.client() as http:
        ids = {}
        for name in IMAGES:
            data = (shared_images / name).read_bytes()
            r = http.post("/v1/jobs", files={"file": (name, data)}, data=SMALL)
            assert r.status_code == 202, r.text
            ids[name] = r.json()["id"]
        assert len(set(ids.values())) == len(IMAGES)

        # follow the last job over Server-Sent Events, the others by polling
        with http.stream("GET", f"/v1/jobs/{ids[IMAGES[-1]]}/events", timeout=60) as stream:
            events = read_events(stream.iter_lines())
        assert events[-1][0] == "done" and events[-1][1]["state"] == "succeeded", events[-1]

        for name, job_id in ids.items():
            job = wait_for(http, job_id, timeout=60)
            assert job["state"] == "succeeded", (name, job)
            glb = http.get(f"/v1/jobs/{job_id}/result")
            assert glb.status_code == 200 and glb.headers["content-type"] == "model/gltf-binary"
            report = validate(glb.content)
            assert report["errors"] == 0 and report["warnings"] == 0, (name, report["messages"])
            assert job["report"]["info"]["mesh"] and job["timings"]["overhead_s"] < 1.0
            assert http.get(f"/v1/jobs/{job_id}/input").content == (shared_images / name).read_bytes()

        listed = http.get("/v1/jobs", params={"state": "succeeded", "limit": 100}).json()["items"]
        assert sorted(j["id"] for j in listed) == sorted(ids.values())
        metrics = http.get("/metrics").text
        assert f'meshforge_jobs{{state="succeeded"}} {float(len(IMAGES))}' in metrics
    assert server.stop() == 0  # SIGTERM drains, then exits with status 0


def test_a_job_running_when_the_server_is_killed_finishes_after_restart(server_factory, tmp_path, chair, validate):
    data_dir = tmp_path / "data"
    slow = server_factory(data_dir, stage_delay_s=0.4, MESHFORGE_SERVICE_LEASE_S="1.5")
    with slow.client() as http:
        job_id = http.post("/v1/jobs", files={"file": ("chair.png", chair)}, data=SMALL).json()["id"]
        queued_id = http.post("/v1/jobs", files={"file": ("chair.png", chair)}, data=dict(SMALL, faces="1500")).json()[
            "id"
        ]
        running = wait_for(
            http, job_id, ("running",), timeout=30, where=lambda j: j["progress"]["stage"] == "reconstruct"
        )
        assert running["attempts"] == 1
    slow.kill()  # SIGKILL: no shutdown code runs; its lease expires 1.5 s after the last renewal

    restarted = server_factory(data_dir)
    with restarted.client() as http:
        done = wait_for(http, job_id, timeout=60)
        assert done["state"] == "succeeded" and done["attempts"] == 2, done
        report = validate(http.get(f"/v1/jobs/{job_id}/result").content)
        assert report["errors"] == 0 and report["warnings"] == 0, report["messages"]
        other = wait_for(http, queued_id, timeout=60)  # the queued one was not lost either
        assert other["state"] == "succeeded" and other["attempts"] == 1
        assert len(http.get("/v1/jobs").json()["items"]) == 2


@pytest.mark.parametrize("argv", [["--port", "http"], ["--devices", "tpu"]])
def test_bad_options_exit_with_status_2(argv, tmp_path):
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "meshforge.service", "--data-dir", str(tmp_path), *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r
    assert "Traceback" not in r.stderr
