"""The HTTP API through the real app in process (TestClient runs the lifespan: ledger, worker thread,
housekeeping), with real pipeline runs of the inflate backend at tiny settings."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import pytest

import meshforge.pipeline as pipeline
from meshforge.service.jobs import execute_job, is_out_of_memory
from meshforge.service.options import normalize_generate_options
from meshforge.service.settings import Settings, SettingsError
from meshforge.service.storage import JobStore, NewJob, new_job_id

from .conftest import TINY, assert_problem, make_settings, read_events, submit, wait_for


# -- the main path -----------------------------------------------------------------------------------
def test_generate_job_end_to_end_with_every_download(client, chair):
    r = submit(client, chair, TINY, name="my chair.png")
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["state"] in ("queued", "running") and job["kind"] == "generate" and not job["cached"]
    assert job["input"]["name"] == "my_chair.png" and job["input"]["media_type"] == "image/png"
    assert job["options"] == {
        "resolution": 32,
        "faces": 500,
        "texture_size": 64,
        "textures": True,
        "foreground_ratio": 0.85,
        "background": "auto",
        "backend": "inflate",
        "backend_requested": "inflate",
    }

    done = wait_for(client, job["id"])
    assert done["state"] == "succeeded", done
    assert done["progress"] == {"stage": "export", "percent": 100.0, "queue_position": None}
    assert done["attempts"] == 1 and not done["degraded"] and done["error"] is None
    t = done["timings"]
    assert t["run_s"] >= t["pipeline_s"] > 0 and t["overhead_s"] == pytest.approx(
        t["run_s"] - t["pipeline_s"], abs=2e-4
    )
    stages = [s["name"] for s in done["report"]["stages"]]
    assert stages == ["load", "prepare", "reconstruct", "extract", "clean", "decimate", "unwrap", "bake", "raw"]
    assert done["links"]["result"] == f"/v1/jobs/{job['id']}/result?format=glb"

    glb = client.get(done["links"]["result"])
    assert glb.status_code == 200 and glb.headers["content-type"] == "model/gltf-binary"
    assert glb.content[:4] == b"glTF" and 'filename="my_chair.glb"' in glb.headers["content-disposition"]
    assert len(glb.content) == t["result_bytes"]
    obj = client.get(f"/v1/jobs/{job['id']}/result", params={"format": "obj"})
    assert obj.status_code == 200 and obj.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(obj.content)).namelist()
    assert {"my_chair.obj", "my_chair.mtl"} <= set(names) and any(n.endswith(".png") for n in names)
    ply = client.get(f"/v1/jobs/{job['id']}/result", params={"format": "ply"})
    assert ply.status_code == 200 and ply.content.startswith(b"ply")
    stl = client.get(f"/v1/jobs/{job['id']}/result", params={"format": "stl"})
    n = int.from_bytes(stl.content[80:84], "little")
    assert stl.status_code == 200 and len(stl.content) == 84 + 50 * n and n > 0
    assert_problem(client.get(f"/v1/jobs/{job['id']}/result", params={"format": "usdz"}), 422, "invalid_options")

    preview = client.get(done["links"]["preview"])
    assert preview.status_code == 200 and preview.headers["content-type"] == "image/png"
    assert preview.content[:8] == b"\x89PNG\r\n\x1a\n"
    upload = client.get(done["links"]["input"])
    assert upload.status_code == 200 and upload.content == chair and upload.headers["content-type"] == "image/png"
    assert upload.headers["x-content-type-options"] == "nosniff"


def test_optimize_job(client, shared_assets, validate):
    data = (shared_assets / "spot.glb").read_bytes()
    r = submit(client, data, {"kind": "optimize", "faces": "500", "texture_size": "64"}, name="spot.glb")
    assert r.status_code == 202, r.text
    assert r.json()["options"] == {"faces": 500, "texture_size": 64, "preset": None}
    done = wait_for(client, r.json()["id"])
    assert done["state"] == "succeeded", done
    assert [s["name"] for s in done["report"]["stages"]] == ["load", "flatten", "clean", "decimate", "unwrap", "bake"]
    glb = client.get(done["links"]["result"]).content
    report = validate(glb)
    assert report["errors"] == 0 and report["warnings"] == 0, report["messages"]
    # presets resolve to their budgets; generate-only options are refused
    r = submit(client, data, {"kind": "optimize", "preset": "mobile"}, name="spot.glb")
    assert r.json()["options"] == {"faces": 5000, "texture_size": 512, "preset": "mobile"}
    client.post(f"/v1/jobs/{r.json()['id']}/cancel")
    assert_problem(
        submit(client, data, {"kind": "optimize", "resolution": "64"}, name="spot.glb"), 422, "invalid_options"
    )
    assert_problem(submit(client, data, {"kind": "optimize"}, name="spot.xyz"), 415, "unsupported_media_type")


# -- idempotency and the cache ------------------------------------------------------------------------
def test_idempotency_key_returns_the_same_job(client, chair):
    key = {"Idempotency-Key": "retry-me-1"}
    first = submit(client, chair, TINY, headers=key)
    again = submit(client, chair, TINY, headers=key)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    other = dict(TINY, faces="600")
    body = assert_problem(submit(client, chair, other, headers=key), 422, "idempotency_key_mismatch")
    assert body["job_id"] == first.json()["id"]
    wait_for(client, first.json()["id"])
    assert submit(client, chair, TINY, headers=key).json()["id"] == first.json()["id"]
    assert len(client.get("/v1/jobs").json()["items"]) == 1


def test_identical_request_is_answered_from_the_cache(client, chair):
    first = submit(client, chair, TINY)
    done = wait_for(client, first.json()["id"])
    assert done["state"] == "succeeded"
    hit = submit(client, chair, TINY, name="same bytes other name.png")
    assert hit.status_code == 200, hit.text
    assert hit.json()["cached"] is True and hit.json()["id"] == done["id"] and hit.json()["state"] == "succeeded"
    # "auto"-free: naming the default backend explicitly is the same request
    assert submit(client, chair, dict(TINY, backend="inflate")).json()["cached"] is True
    # other options, other bytes: new jobs
    assert submit(client, chair, dict(TINY, faces="501")).status_code == 202
    assert submit(client, chair + b"\0", TINY).status_code == 202
    metrics = client.get("/metrics").text
    assert 'meshforge_jobs_submitted_total{kind="generate",outcome="cached"} 2.0' in metrics


# -- refusals -----------------------------------------------------------------------------------------
def test_limits_and_refusals_are_problem_json(client_factory, chair):
    client = client_factory(max_image_bytes=50_000, max_mesh_bytes=60_000, max_texture_size=1024)
    body = assert_problem(submit(client, chair, TINY), 413, "payload_too_large")
    assert "50000" in body["detail"]
    assert_problem(submit(client, b"x" * (1 << 21), TINY), 413, "payload_too_large")  # over the body limit
    png_head = chair[:4000]
    small = _tiny_png()
    assert_problem(submit(client, b"just some text", TINY, name="notes.txt"), 415, "unsupported_media_type")
    body = assert_problem(submit(client, b"%PDF-1.4 ...", TINY, name="doc.pdf"), 415, "unsupported_media_type")
    assert "PDF files are not supported" in body["detail"]
    body = assert_problem(submit(client, png_head, TINY, name="cut.png"), 422, "invalid_image")
    assert body["detail"].startswith("cut: truncated or corrupt")
    assert_problem(client.post("/v1/jobs", json={"resolution": 64}), 415, "unsupported_media_type")
    assert_problem(client.post("/v1/jobs", data={"resolution": "64"}, files={"x": ("a", b"b")}), 422, "invalid_options")
    for bad, word in [
        ({"resolution": "8"}, "resolution"),
        ({"resolution": "lots"}, "resolution"),
        ({"texture_size": "2048"}, "texture_size must be at most 1024"),
        ({"foreground_ratio": "3"}, "foreground_ratio"),
        ({"background": "purple"}, "background"),
        ({"backend": "nerf"}, "backend 'nerf' is not enabled"),
        ({"preset": "mobile"}, "preset applies to optimize jobs only"),
        ({"kind": "sculpt"}, "kind"),
    ]:
        body = assert_problem(submit(client, small, bad), 422, "invalid_options")
        assert word in body["detail"], (bad, body)
    assert_problem(submit(client, small, TINY, headers={"Idempotency-Key": ""}), 422, "invalid_options")
    assert client.get("/v1/jobs").json()["items"] == []  # nothing was queued


def test_queue_full_answers_429_with_retry_after(client_factory, chair):
    client = client_factory(max_queue=1, test_stage_delay_s=0.3)
    answers = []
    for i in range(4):
        r = submit(client, chair, dict(TINY, faces=str(500 + i)))
        answers.append(r)
        if r.status_code == 429:
            break
    assert [a.status_code for a in answers[:-1]] == [202] * (len(answers) - 1)
    body = assert_problem(answers[-1], 429, "queue_full")
    assert int(answers[-1].headers["retry-after"]) >= 1 and body["queue_depth"] == 1
    for a in answers[:-1]:
        client.post(f"/v1/jobs/{a.json()['id']}/cancel")


# -- cancellation, time limit, out of memory -----------------------------------------------------------
def test_cancel_queued_job_at_once_and_running_job_at_a_stage_boundary(client_factory, chair):
    client = client_factory(test_stage_delay_s=0.3)
    a = submit(client, chair, TINY).json()
    wait_for(client, a["id"], ("running",), where=lambda j: j["progress"]["stage"] is not None)
    b = submit(client, chair, dict(TINY, faces="501")).json()
    assert b["state"] == "queued" and b["progress"]["queue_position"] == 1

    r = client.post(f"/v1/jobs/{b['id']}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "canceled"
    assert r.json()["error"]["code"] == "canceled"

    r = client.post(f"/v1/jobs/{a['id']}/cancel")
    assert r.status_code == 202 and r.json()["state"] == "running" and r.json()["cancel_requested"]
    done = wait_for(client, a["id"], timeout=10)
    assert done["state"] == "canceled" and done["error"]["code"] == "canceled"
    assert "canceled while running" in done["error"]["message"]
    assert client.post(f"/v1/jobs/{a['id']}/cancel").status_code == 200  # a no-op now
    assert_problem(client.get(f"/v1/jobs/{a['id']}/result"), 409, "job_not_finished")

    c = submit(client, chair, dict(TINY, no_texture="true")).json()
    assert wait_for(client, c["id"])["state"] == "succeeded"
    assert_problem(client.post(f"/v1/jobs/{c['id']}/cancel"), 409, "not_cancelable")
    assert_problem(client.post("/v1/jobs/0123456789abcdef/cancel"), 404, "not_found")


def test_job_time_limit(client_factory, chair):
    client = client_factory(job_timeout_s=0.5, test_stage_delay_s=0.25)
    job = submit(client, chair, TINY).json()
    done = wait_for(client, job["id"], timeout=10)
    assert done["state"] == "failed" and done["error"]["code"] == "timeout", done
    assert "limit of 0.5 s" in done["error"]["message"]


def test_out_of_memory_is_retried_once_with_reduced_settings(client_factory, chair, monkeypatch):
    real = pipeline.generate
    asked: list[tuple[int, int]] = []

    def generate_oom_above_32(image, backend, config=None, **kw):
        asked.append((config.extract.resolution, config.bake.texture_size))
        if config.extract.resolution > 32:
            raise MemoryError()
        return real(image, backend, config, **kw)

    monkeypatch.setattr(pipeline, "generate", generate_oom_above_32)
    client = client_factory()
    job = submit(client, chair, {"resolution": "64", "faces": "500", "texture_size": "128"}).json()
    done = wait_for(client, job["id"])
    assert done["state"] == "succeeded" and done["degraded"] is True, done
    assert asked == [(64, 128), (32, 64)]
    assert done["effective_options"]["resolution"] == 32 and done["effective_options"]["texture_size"] == 64
    assert any("ran out of memory" in w for w in done["report"]["warnings"])
    assert "meshforge_oom_retries_total 1.0" in client.get("/metrics").text
    # a degraded result does not answer the full-quality request
    assert submit(client, chair, {"resolution": "64", "faces": "500", "texture_size": "128"}).status_code == 202


def test_out_of_memory_twice_fails_the_job(client_factory, chair, monkeypatch):
    class OutOfMemoryError(RuntimeError):  # what torch.cuda raises, by name
        pass

    def always_oom(*args, **kw):
        raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(pipeline, "generate", always_oom)
    client = client_factory()
    done = wait_for(client, submit(client, chair, TINY).json()["id"])
    assert done["state"] == "failed" and done["degraded"] and done["error"]["code"] == "out_of_memory", done
    assert is_out_of_memory(MemoryError()) and not is_out_of_memory(ValueError("bad"))


# -- listing, events, metrics, health, auth ----------------------------------------------------------
def test_list_pages_and_filters(client, chair):
    ids = [submit(client, chair, dict(TINY, faces=str(500 + i), no_texture="true")).json()["id"] for i in range(5)]
    for job_id in ids:
        wait_for(client, job_id)
    seen, cursor, pages = [], None, 0
    while pages < 10:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/jobs", params=params).json()
        assert all(item["report"] is None for item in page["items"])
        seen += [item["id"] for item in page["items"]]
        cursor, pages = page["next_cursor"], pages + 1
        if cursor is None:
            break
    assert seen == ids[::-1] and pages == 3
    assert len(client.get("/v1/jobs", params={"state": "succeeded"}).json()["items"]) == 5
    both = client.get("/v1/jobs", params=[("state", "queued"), ("state", "running")]).json()
    assert both["items"] == [] and both["next_cursor"] is None
    assert_problem(client.get("/v1/jobs", params={"cursor": "garbage!"}), 422, "invalid_cursor")
    assert_problem(client.get("/v1/jobs", params={"state": "sleeping"}), 422, "invalid_options")
    assert_problem(client.get("/v1/jobs", params={"limit": 0}), 422, "invalid_options")


def test_events_stream_follows_a_job_to_the_end(client_factory, chair):
    client = client_factory(test_stage_delay_s=0.05)
    job = submit(client, chair, TINY).json()
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = read_events(r.iter_lines())
    names = [name for name, _ in events]
    assert names[-1] == "done" and set(names[:-1]) == {"progress"}, names
    final = events[-1][1]
    assert final["state"] == "succeeded" and final["id"] == job["id"] and final["report"]
    stages = [data["progress"]["stage"] for _, data in events if data["state"] == "running"]
    order = ["prepare", "reconstruct", "extract", "clean", "decimate", "unwrap", "bake", "export"]
    assert [s for s in order if s in stages] == [s for s in dict.fromkeys(stages) if s], stages
    assert len(set(stages)) >= 6, stages  # the stream saw (nearly) every stage
    percents = [data["progress"]["percent"] for _, data in events]
    assert percents == sorted(percents) and percents[-1] == 100.0
    # a finished job: one event, then the stream ends
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as r:
        assert [n for n, _ in read_events(r.iter_lines())] == ["done"]
    assert_problem(client.get("/v1/jobs/0123456789abcdef/events"), 404, "not_found")


def test_metrics_are_prometheus_text(client, chair):
    from prometheus_client.parser import text_string_to_metric_families

    wait_for(client, submit(client, chair, TINY).json()["id"])
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    jobs = {s.labels["state"]: s.value for s in families["meshforge_jobs"].samples}
    assert jobs == {"queued": 0, "running": 0, "succeeded": 1, "failed": 0, "canceled": 0}
    assert families["meshforge_queue_depth"].samples[0].value == 0
    stage_counts = {
        s.labels["stage"]: s.value
        for s in families["meshforge_stage_duration_seconds"].samples
        if s.name.endswith("_count")
    }
    assert stage_counts == {
        s: 1.0 for s in ("load", "prepare", "reconstruct", "extract", "clean", "decimate", "unwrap", "bake", "raw")
    }
    assert any(
        s.name == "meshforge_job_overhead_seconds_count" and s.value == 1
        for s in families["meshforge_job_overhead_seconds"].samples
    )
    finished = families["meshforge_jobs_finished"].samples
    assert any(s.labels == {"kind": "generate", "state": "succeeded", "code": ""} and s.value == 1 for s in finished)


def test_health_openapi_and_unknown_paths(client):
    assert client.get("/livez").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["ready"] and body["queue_depth"] == 0 and body["gpus"] == []
    assert body["workers"][0]["alive"] and body["workers"][0]["backend"] == "inflate"
    spec = client.get("/openapi.json").json()
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events", "/v1/jobs/{job_id}/cancel"} <= set(
        spec["paths"]
    )
    assert {"/v1/jobs/{job_id}/result", "/v1/jobs/{job_id}/preview.png", "/v1/jobs/{job_id}/input"} <= set(
        spec["paths"]
    )
    assert {"/livez", "/readyz", "/metrics"} <= set(spec["paths"])
    post = spec["paths"]["/v1/jobs"]["post"]
    assert {"202", "200", "413", "415", "422", "429"} <= set(post["responses"])
    form = post["requestBody"]["content"]["multipart/form-data"]["schema"]
    props = (
        spec["components"]["schemas"][form["$ref"].rsplit("/", 1)[1]]["properties"]
        if "$ref" in form
        else form["properties"]
    )
    assert {
        "file",
        "kind",
        "resolution",
        "faces",
        "texture_size",
        "no_texture",
        "foreground_ratio",
        "background",
        "backend",
        "preset",
    } <= set(props)
    assert "Problem" in spec["components"]["schemas"]
    assert_problem(client.get("/no/such/page"), 404, "not_found")
    assert_problem(client.delete("/v1/jobs"), 405, "method_not_allowed")
    assert_problem(client.get("/v1/jobs/0123456789abcdef"), 404, "not_found")
    assert_problem(client.get("/v1/jobs/../../etc/passwd"), 404, "not_found")


def test_minimal_page_without_web_folder(client_factory, tmp_path):
    client = client_factory(web_dir=tmp_path / "no-web-here")
    r = client.get("/")
    assert r.status_code == 200 and "meshforge" in r.text and "/docs" in r.text


def test_api_keys(client_factory, chair):
    client = client_factory(api_keys=("first-key-123", "second-key-456"))
    assert client.get("/livez").status_code == 200
    r = client.get("/v1/jobs")
    assert_problem(r, 401, "unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert_problem(client.get("/v1/jobs", headers={"Authorization": "Bearer wrong-key-000"}), 401, "unauthorized")
    first = {"Authorization": "Bearer first-key-123"}
    second = {"Authorization": "Bearer second-key-456"}
    job = submit(client, chair, TINY, headers=first)
    assert job.status_code == 202
    job_id = job.json()["id"]
    assert client.get(f"/v1/jobs/{job_id}", headers=first).status_code == 200
    assert_problem(client.get(f"/v1/jobs/{job_id}", headers=second), 404, "not_found")
    assert client.get("/v1/jobs", headers=second).json()["items"] == []
    # the cache is per key: the second key's identical request is a new job
    wait_for(client, job_id, headers=first)
    assert submit(client, chair, TINY, headers=second).status_code == 202
    assert submit(client, chair, TINY, headers=first).json()["cached"] is True


# -- housekeeping and recovery -------------------------------------------------------------------------
def test_finished_jobs_expire_with_their_files(client_factory, chair, tmp_path):
    client = client_factory(ttl_s=0.5, sweep_interval_s=0.2)
    job = wait_for(client, submit(client, chair, dict(TINY, no_texture="true")).json()["id"])
    folder = tmp_path / "data" / "jobs" / job["id"]
    assert (folder / "result.glb").is_file()
    end = time.monotonic() + 10
    while time.monotonic() < end and client.get(f"/v1/jobs/{job['id']}").status_code == 200:
        time.sleep(0.1)
    assert_problem(client.get(f"/v1/jobs/{job['id']}"), 404, "not_found")
    assert not folder.exists()


def _queue_directly(settings: Settings, data: bytes, **options) -> tuple[JobStore, str]:
    """Put a generate job in the ledger without the HTTP layer (as another process could)."""
    store = JobStore(settings.data_dir)
    job_id = new_job_id()
    (store.job_dir(job_id) / "input").mkdir(parents=True)
    (store.job_dir(job_id) / "input" / "chair.png").write_bytes(data)
    norm = normalize_generate_options(settings, **options)
    new = NewJob(
        id=job_id,
        kind="generate",
        owner="",
        idempotency_key=None,
        request_hash=job_id,
        fingerprint=job_id,
        input_name="chair.png",
        input_file="input/chair.png",
        input_sha256="0" * 64,
        input_bytes=len(data),
        input_media_type="image/png",
        options=norm,
        backend=norm["backend"],
    )
    assert store.create(new, max_queue=10, ttl_s=60).how == "created"
    return store, job_id


def test_jobs_left_running_by_a_crash_run_again_at_startup(client_factory, chair, tmp_path):
    settings = make_settings(tmp_path)
    store, crashed = _queue_directly(settings, chair, resolution=32, faces=500, texture_size=64)
    _, worn_out = _queue_directly(settings, chair, resolution=32, faces=501, texture_size=64)
    _, canceled = _queue_directly(settings, chair, resolution=32, faces=502, texture_size=64)
    for _ in range(3):
        assert store.claim("gone#0", 60.0, lease_s=0.0) is not None  # its process died: the lease expired
    store._conn().execute("UPDATE jobs SET attempts=3 WHERE id=?", (worn_out,))
    store.cancel(canceled, None, 60.0)  # asked while it ran; the crash came before its next stage
    store.close()

    client = client_factory()
    done = wait_for(client, crashed)
    assert done["state"] == "succeeded" and done["attempts"] == 2, done
    failed = client.get(f"/v1/jobs/{worn_out}").json()
    assert failed["state"] == "failed" and failed["error"]["code"] == "interrupted"
    assert client.get(f"/v1/jobs/{canceled}").json()["state"] == "canceled"


def test_execute_job_is_a_plain_function_of_the_job_id(chair, tmp_path, validate):
    settings = make_settings(tmp_path)
    store, job_id = _queue_directly(settings, chair, resolution=32, faces=500, texture_size=64)
    store.close()
    outcome = execute_job(job_id, settings)
    assert outcome.state == "succeeded", outcome
    assert execute_job(job_id, settings).state == "skipped"  # at most one run per claim
    assert execute_job("f" * 32, settings).state == "missing"
    store = JobStore(settings.data_dir)
    row = store.get(job_id)
    assert row is not None and row.state == "succeeded" and row.report and row.timings["pipeline_s"] > 0
    glb = (store.job_dir(job_id) / "result.glb").read_bytes()
    store.close()
    report = validate(glb)
    assert report["errors"] == 0 and report["warnings"] == 0, report["messages"]


def test_settings_come_from_the_environment_and_are_checked():
    env = {
        "MESHFORGE_SERVICE_DATA_DIR": "/tmp/x",
        "MESHFORGE_SERVICE_API_KEYS": "aaaaaaaa, bbbbbbbb",
        "MESHFORGE_SERVICE_MAX_QUEUE": "7",
        "MESHFORGE_SERVICE_DEVICES": "cuda:0,cuda:1",
        "OTHER": "ignored",
    }
    s = Settings.from_env(env, max_queue=9)
    assert s.data_dir == Path("/tmp/x") and s.api_keys == ("aaaaaaaa", "bbbbbbbb") and s.max_queue == 9
    assert s.resolved_devices() == ("cuda:0", "cuda:1") and "aaaaaaaa" not in repr(s)
    with pytest.raises(SettingsError, match="MESHFORGE_SERVICE_MAX_QEUE: unknown setting"):
        Settings.from_env({"MESHFORGE_SERVICE_MAX_QEUE": "3"})
    with pytest.raises(SettingsError, match="MESHFORGE_SERVICE_PORT"):
        Settings.from_env({"MESHFORGE_SERVICE_PORT": "http"})
    with pytest.raises(SettingsError, match="api_keys"):
        Settings.from_env({}, api_keys="short")
    with pytest.raises(SettingsError, match="default backend"):
        Settings.from_env({}, backend="triposr", backends="inflate")
    with pytest.raises(SettingsError, match="unknown device"):
        Settings.from_env({}, devices="tpu")


def _tiny_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGBA", (8, 8), (200, 10, 10, 255)).save(buf, format="PNG")
    return buf.getvalue()


def test_static_web_folder_is_served_with_its_npm_vendor_files(client_factory, tmp_path):
    web = tmp_path / "web"
    (web / "node_modules" / "three" / "build").mkdir(parents=True)
    (web / "index.html").write_text("<!doctype html><title>studio</title>")
    (web / "node_modules" / "three" / "build" / "three.module.js").write_text("export const REVISION = '1';")
    client = client_factory(web_dir=web)
    assert "studio" in client.get("/").text
    js = client.get("/vendor/three/build/three.module.js")
    assert js.status_code == 200 and "REVISION" in js.text
    assert client.get("/v1/jobs").status_code == 200  # the API wins over the static mount
    assert_problem(client.get("/missing.js"), 404, "not_found")
