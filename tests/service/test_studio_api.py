"""What the web studio needs from the API, through the real app in process: which backends can run (and
refusing the others at submit), the job's warnings at the top level, the cut-out picture the backend saw,
and deleting a job with its files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from .conftest import TINY, assert_problem, read_events, submit, wait_for


def _no_weights(tmp_path: Path) -> str:
    """A weights folder with nothing in it: TripoSR cannot run, whatever the machine's Hugging Face cache holds."""
    folder = tmp_path / "empty-weights"
    folder.mkdir(exist_ok=True)
    return str(folder)


def test_backends_endpoint_says_which_backends_can_run(client_factory, tmp_path):
    client = client_factory(backend="auto", weights=_no_weights(tmp_path))
    r = client.get("/v1/backends")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["default"] == "auto"
    items = {b["name"]: b for b in body["items"]}
    assert list(items) == ["auto", "inflate", "triposr"]  # the server's enabled backends, in its order
    assert items["inflate"]["available"] and not items["inflate"]["needs_weights"]
    assert items["auto"]["available"] and items["auto"]["resolves_to"] == "inflate"
    assert "no model weights found" in items["auto"]["note"]
    assert not items["triposr"]["available"] and items["triposr"]["needs_weights"]
    assert "meshforge models pull triposr" in items["triposr"]["note"]
    assert "MESHFORGE_SERVICE_WEIGHTS" in items["triposr"]["note"]
    assert str(tmp_path) not in r.text  # no server path
    # a server that enables only some backends lists only those
    only = client_factory(backend="inflate", backends="inflate", data_dir=tmp_path / "other")
    assert [b["name"] for b in only.get("/v1/backends").json()["items"]] == ["inflate"]
    spec = client.get("/openapi.json").json()["paths"]
    assert "get" in spec["/v1/backends"] and "get" in spec["/v1/jobs/{job_id}/cutout"]
    assert "204" in spec["/v1/jobs/{job_id}"]["delete"]["responses"]


def test_a_backend_that_may_download_its_weights_is_accepted(client_factory, chair, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))  # nothing cached (no job runs here)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    client = client_factory(backend="inflate", download_weights=True)
    triposr = {b["name"]: b for b in client.get("/v1/backends").json()["items"]}["triposr"]
    assert triposr["available"] and "downloaded" in triposr["note"]
    # a local folder cannot be downloaded into, nor can anything be downloaded offline: refused
    folder = client_factory(backend="inflate", download_weights=True, weights=_no_weights(tmp_path), data_dir=tmp_path)
    assert_problem(submit(folder, chair, dict(TINY, backend="triposr")), 422, "backend_unavailable")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not {b["name"]: b for b in client.get("/v1/backends").json()["items"]}["triposr"]["available"]


def test_a_backend_without_weights_is_refused_at_submit(client_factory, chair, tmp_path):
    client = client_factory(backend="auto", weights=_no_weights(tmp_path))
    body = assert_problem(submit(client, chair, dict(TINY, backend="triposr")), 422, "backend_unavailable")
    assert "backend 'triposr' has no weights" in body["detail"]
    assert "meshforge models pull triposr" in body["detail"] and "MESHFORGE_SERVICE_WEIGHTS" in body["detail"]
    assert str(tmp_path) not in body["detail"]
    assert client.get("/v1/jobs").json()["items"] == []  # nothing was queued
    assert not any((tmp_path / "data" / "jobs").iterdir())  # and no upload was kept
    # the weightless backends are still accepted
    assert submit(client, chair, dict(TINY, backend="inflate")).status_code == 202


def test_warnings_are_a_top_level_list_of_the_job(client_factory, chair, tmp_path):
    client = client_factory(backend="auto", weights=_no_weights(tmp_path))
    job = submit(client, chair, TINY).json()
    assert job["warnings"] == []
    done = wait_for(client, job["id"])
    assert done["state"] == "succeeded", done
    assert done["warnings"] == done["report"]["warnings"]
    assert any("no model weights found" in w and "'inflate'" in w for w in done["warnings"]), done["warnings"]
    # the job list leaves reports out but keeps the warnings (the studio's warning badge)
    item = client.get("/v1/jobs").json()["items"][0]
    assert item["report"] is None and item["warnings"] == done["warnings"]


def _cutout(client, job_id: str) -> np.ndarray:
    r = client.get(f"/v1/jobs/{job_id}/cutout")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.headers["x-content-type-options"] == "nosniff"
    img = Image.open(io.BytesIO(r.content))
    assert img.mode == "RGBA"
    return np.asarray(img)


def _object_side(alpha: np.ndarray) -> int:
    ys, xs = np.nonzero(alpha > 127)
    return int(max(ys.max() - ys.min(), xs.max() - xs.min())) + 1


def test_cutout_is_the_prepared_picture_the_backend_saw(client, chair):
    big = wait_for(client, submit(client, chair, dict(TINY, foreground_ratio="0.9")).json()["id"])
    small = wait_for(client, submit(client, chair, dict(TINY, foreground_ratio="0.5")).json()["id"])
    assert big["state"] == small["state"] == "succeeded"
    assert big["links"]["cutout"] == f"/v1/jobs/{big['id']}/cutout"
    a, b = _cutout(client, big["id"]), _cutout(client, small["id"])
    assert a.shape == b.shape and a.shape[0] == a.shape[1]  # square, the backend's input size
    for rgba in (a, b):
        alpha = rgba[..., 3]
        assert alpha[0].max() == 0 and alpha[-1].max() == 0  # the background is cut away
        assert (alpha == 255).mean() > 0.05  # the chair is kept
    # the foreground ratio is the object's size in the frame
    side = a.shape[0]
    assert abs(_object_side(a[..., 3]) / side - 0.9) < 0.05
    assert abs(_object_side(b[..., 3]) / side - 0.5) < 0.05

    queued = submit(client, chair, dict(TINY, faces="777")).json()
    if queued["state"] != "succeeded":
        assert queued["links"].get("cutout") is None
    assert_problem(client.get("/v1/jobs/0123456789abcdef/cutout"), 404, "not_found")


def test_delete_a_finished_job_removes_its_row_and_files(client, chair, tmp_path):
    job = wait_for(client, submit(client, chair, TINY).json()["id"])
    folder = tmp_path / "data" / "jobs" / job["id"]
    assert (folder / "result.glb").is_file() and (folder / "cutout.png").is_file()
    r = client.delete(f"/v1/jobs/{job['id']}")
    assert r.status_code == 204 and r.content == b""
    assert not folder.exists()
    assert_problem(client.get(f"/v1/jobs/{job['id']}"), 404, "not_found")
    assert_problem(client.get(f"/v1/jobs/{job['id']}/result"), 404, "not_found")
    assert_problem(client.delete(f"/v1/jobs/{job['id']}"), 404, "not_found")
    assert client.get("/v1/jobs").json()["items"] == []
    # the same request again is new work, not a cache hit on the deleted job
    again = submit(client, chair, TINY)
    assert again.status_code == 202 and again.json()["id"] != job["id"]


def test_delete_a_running_job_cancels_it_and_removes_everything(client_factory, chair, tmp_path):
    client = client_factory(test_stage_delay_s=0.3)
    running = submit(client, chair, TINY).json()
    queued = submit(client, chair, dict(TINY, faces="501")).json()
    wait_for(client, running["id"], ("running",), where=lambda j: j["progress"]["stage"] is not None)
    jobs = tmp_path / "data" / "jobs"
    with client.stream("GET", f"/v1/jobs/{running['id']}/events") as events:
        assert client.delete(f"/v1/jobs/{running['id']}").status_code == 204
        assert client.delete(f"/v1/jobs/{queued['id']}").status_code == 204
        names = [name for name, _ in read_events(events.iter_lines())]
    assert names[-1] == "error"  # a follower learns the job is gone, and the stream ends
    assert not (jobs / running["id"]).exists() and not (jobs / queued["id"]).exists()
    assert client.get("/v1/jobs").json()["items"] == []
    # the worker drops the deleted job at its next stage boundary and leaves nothing behind
    after = wait_for(client, submit(client, chair, dict(TINY, faces="502")).json()["id"])
    assert after["state"] == "succeeded", after
    assert sorted(p.name for p in jobs.iterdir()) == [after["id"]]
    workers = client.get("/readyz").json()["workers"]
    assert all(w["alive"] for w in workers)


def test_delete_needs_the_owner_key(client_factory, chair, tmp_path):
    client = client_factory(api_keys=("first-key-123", "second-key-456"))
    first = {"Authorization": "Bearer first-key-123"}
    second = {"Authorization": "Bearer second-key-456"}
    job = submit(client, chair, TINY, headers=first).json()
    assert_problem(client.delete(f"/v1/jobs/{job['id']}"), 401, "unauthorized")
    assert_problem(client.delete(f"/v1/jobs/{job['id']}", headers=second), 404, "not_found")
    assert client.get(f"/v1/jobs/{job['id']}", headers=first).status_code == 200
    assert client.delete(f"/v1/jobs/{job['id']}", headers=first).status_code == 204
    assert not (tmp_path / "data" / "jobs" / job["id"]).exists()
