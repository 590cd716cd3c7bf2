"""Operations: structured job and access logs, the OpenAPI description of errors and authentication,
test-only knobs kept out of the settings, unreadable meshes refused at submit, no server paths in errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from meshforge.service.jobs import execute_job
from meshforge.service.settings import Settings, SettingsError
from meshforge.service.storage import JobStore, NewJob, new_job_id

from .conftest import TINY, assert_problem, make_settings, submit, wait_for


# -- test-only knobs ---------------------------------------------------------------------------------
def test_the_stage_delay_cannot_be_set_in_production(tmp_path):
    with pytest.raises(SettingsError, match="MESHFORGE_SERVICE_TEST_STAGE_DELAY_S: unknown setting"):
        Settings.from_env({"MESHFORGE_SERVICE_TEST_STAGE_DELAY_S": "0.4"})
    with pytest.raises(ValueError, match="test_stage_delay_s"):
        Settings(test_stage_delay_s=0.4)  # type: ignore[call-arg]
    env = {"MESHFORGE_SERVICE_TEST_STAGE_DELAY_S": "0.4", "PATH": "/usr/bin:/bin"}
    env.update({k: v for k, v in os.environ.items() if k == "PYTHONPATH"})
    r = subprocess.run(
        [sys.executable, "-m", "meshforge.cli", "serve", "--port", "0", "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "MESHFORGE_SERVICE_TEST_STAGE_DELAY_S: unknown setting" in r.stderr


# -- logs --------------------------------------------------------------------------------------------
def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    for rec in records:
        assert {"ts", "level", "logger", "message"} <= set(rec), rec
    return records


def test_json_logs_have_one_line_per_job_event_and_per_request(server_factory, tmp_path, chair):
    server = server_factory(stage_delay_s=0.2, log_level="info", MESHFORGE_SERVICE_LOG_FORMAT="json")
    with server.client() as http:
        done_id = http.post("/v1/jobs", files={"file": ("chair.png", chair)}, data=TINY).json()["id"]
        assert wait_for(http, done_id, timeout=60)["state"] == "succeeded"
        cancel_id = http.post("/v1/jobs", files={"file": ("chair.png", chair)}, data=dict(TINY, faces="600")).json()[
            "id"
        ]
        wait_for(http, cancel_id, ("running",), timeout=30, where=lambda j: j["progress"]["stage"] is not None)
        cancel = http.post(f"/v1/jobs/{cancel_id}/cancel")
        assert wait_for(http, cancel_id, timeout=60)["state"] == "canceled"
        assert http.get("/v1/jobs/0123456789abcdef").status_code == 404
    assert server.stop() == 0
    records = _json_lines(server.log.read_text())

    def events(job_id: str) -> list[dict[str, Any]]:
        return [r for r in records if r.get("job_id") == job_id and str(r.get("event", "")).startswith("job.")]

    ok = events(done_id)
    assert [r["event"] for r in ok] == ["job.submitted", "job.started", "job.finished"], ok
    assert ok[0]["kind"] == "generate" and ok[0]["how"] == "created"
    assert ok[1]["attempt"] == 1 and ok[1]["worker"].startswith("cpu#0@") and ok[1]["queued_s"] >= 0
    assert ok[2]["state"] == "succeeded" and ok[2]["code"] is None and ok[2]["run_s"] > 0
    assert ok[0]["ts"] <= ok[1]["ts"] <= ok[2]["ts"]
    canceled = events(cancel_id)
    assert [r["event"] for r in canceled][-1] == "job.finished"
    assert canceled[-1]["state"] == "canceled" and canceled[-1]["code"] == "canceled"

    access = [r for r in records if r.get("event") == "http.request"]
    assert {"method", "path", "status", "duration_ms", "client"} <= set(access[0])
    seen = {(r["method"], r["path"], r["status"]) for r in access}
    assert ("POST", "/v1/jobs", 202) in seen and ("GET", f"/v1/jobs/{done_id}", 200) in seen
    assert ("POST", f"/v1/jobs/{cancel_id}/cancel", cancel.status_code) in seen and (
        "GET",
        "/v1/jobs/0123456789abcdef",
        404,
    ) in seen


# -- OpenAPI -----------------------------------------------------------------------------------------
def _responses(spec: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    return [
        (path, method, code, resp)
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        for code, resp in op.get("responses", {}).items()
    ]


def test_openapi_declares_problem_json_errors_and_bearer_auth_only_with_keys(client_factory):
    spec = client_factory().get("/openapi.json").json()
    errors = [(p, m, c, r) for p, m, c, r in _responses(spec) if c[0] in "45" and not p.startswith("/readyz")]
    assert len(errors) > 10
    for path, method, code, resp in errors:
        assert set(resp["content"]) == {"application/problem+json"}, (path, method, code, resp)
        assert resp["content"]["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}
    post = spec["paths"]["/v1/jobs"]["post"]["responses"]
    assert {"413", "415", "422", "429", "503"} <= set(post)
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert "securitySchemes" not in spec["components"]
    assert all("security" not in op for ops in spec["paths"].values() for op in ops.values())

    keyed = client_factory(api_keys=("first-key-123",)).get("/openapi.json").json()
    schemes = keyed["components"]["securitySchemes"]
    assert list(schemes.values()) == [
        {"type": "http", "scheme": "bearer", "description": schemes[next(iter(schemes))]["description"]}
    ]
    name = next(iter(schemes))
    assert keyed["paths"]["/v1/jobs"]["post"]["security"] == [{name: []}]
    assert "security" not in keyed["paths"]["/livez"]["get"]


# -- optimize uploads --------------------------------------------------------------------------------
def _truncated_obj() -> bytes:
    lines = [f"v {i} {i % 3} {i % 5}" for i in range(200)] + [f"f {i} {i + 1} {i + 2}" for i in range(1, 198)]
    text = "\n".join(lines).encode()
    return text[: len(text) // 3]  # cut in the vertex list: no faces left


def _truncated_ply() -> bytes:
    import trimesh

    ply = trimesh.creation.icosphere(subdivisions=2).export(file_type="ply")
    return bytes(ply[: len(ply) * 2 // 3])


@pytest.mark.parametrize(
    ("name", "make", "says"),
    [
        ("broken.glb", lambda spot: spot[:40] + b"\xff" * 300, "GLB"),
        ("truncated.glb", lambda spot: spot[: len(spot) // 2], "truncated GLB"),
        ("cut.obj", lambda spot: _truncated_obj(), "no triangles"),
        ("cut.ply", lambda spot: _truncated_ply(), "PLY"),
    ],
)
def test_unreadable_meshes_are_refused_at_submit(client, shared_assets, tmp_path, name, make, says):
    data = make((shared_assets / "spot.glb").read_bytes())
    r = submit(client, data, {"kind": "optimize", "faces": "500"}, name=name)
    body = assert_problem(r, 422, "invalid_mesh")
    assert body["detail"].startswith(f"{name}: ") and says in body["detail"], body
    assert str(tmp_path) not in r.text
    assert client.get("/v1/jobs").json()["items"] == []  # nothing queued, nothing kept
    assert list((tmp_path / "data" / "jobs").iterdir()) == []


def test_error_texts_show_no_server_paths(client_factory, tmp_path, chair):
    # an optimize job whose stored upload is gone when a worker runs it (as another process would)
    settings = make_settings(tmp_path)
    store = JobStore(settings.data_dir)
    job_id = new_job_id()
    options = {"faces": 500, "texture_size": 64, "preset": None}
    new = NewJob(
        id=job_id,
        kind="optimize",
        owner="",
        idempotency_key=None,
        request_hash=job_id,
        fingerprint=job_id,
        input_name="gone.glb",
        input_file="input/gone.glb",
        input_sha256="0" * 64,
        input_bytes=1,
        input_media_type="model/gltf-binary",
        options=options,
        backend=None,
    )
    assert store.create(new, max_queue=10, ttl_s=60).how == "created"
    assert execute_job(job_id, settings, store=store).state == "failed"
    store.close()

    client = client_factory()
    ok = wait_for(client, submit(client, chair, TINY, name="chair.png").json()["id"])
    assert ok["state"] == "succeeded" and ok["report"]["info"]["input"]["source"] == "chair.png"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["error"]["message"].startswith("gone.glb: "), job["error"]
    bodies = [
        client.get(f"/v1/jobs/{job_id}").text,
        client.get(f"/v1/jobs/{job_id}/result").text,
        client.get(f"/v1/jobs/{job_id}/preview.png").text,
        client.get("/v1/jobs", params={"state": "failed"}).text,
        client.get(f"/v1/jobs/{ok['id']}").text,
    ]
    for text in bodies:
        assert str(tmp_path) not in text and str(tmp_path.resolve()) not in text, text
