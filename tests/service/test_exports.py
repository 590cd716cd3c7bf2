"""Re-exports over HTTP: ``POST /v1/jobs/{id}/exports`` finishes a generate job's raw (``raw.mfraw``) again
with other budgets, as a job of kind ``export`` in the same ledger, without a backend; and no job keeps a
pickled asset any more."""

from __future__ import annotations

import io
import pickle
import time
from pathlib import Path

from PIL import Image

from meshforge.io.meshes import load_mesh
from meshforge.raw import load_raw
from meshforge.service.storage import JobStore

from .conftest import TINY, assert_problem, submit, wait_for


def _faces(glb: bytes) -> int:
    return load_mesh(glb, fmt="glb").n_faces()


def _generated(client, chair) -> dict:
    r = submit(client, chair, TINY)
    assert r.status_code == 202, r.text
    done = wait_for(client, r.json()["id"])
    assert done["state"] == "succeeded", done
    return done


def test_two_reexports_with_different_budgets_give_two_valid_results_without_a_backend(
    client, chair, validate, tmp_path
):
    parent = _generated(client, chair)
    pid = parent["id"]
    data_dir = tmp_path / "data"
    raw = load_raw(data_dir / "jobs" / pid / "raw.mfraw")  # the job kept its raw
    assert raw.surface.n_faces > 500

    exports = []
    for faces in (300, 120):
        r = client.post(f"/v1/jobs/{pid}/exports", data={"faces": str(faces), "texture_size": "64"})
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["kind"] == "export" and job["parent"] == pid
        assert job["options"] == {"faces": faces, "texture_size": 64, "textures": True, "preset": None}
        assert r.headers["location"] == f"/v1/jobs/{job['id']}"
        exports.append(job["id"])
    glbs = []
    for eid, faces in zip(exports, (300, 120), strict=True):
        done = wait_for(client, eid)
        assert done["state"] == "succeeded", done
        assert done["report"]["info"]["source"]["backend_loaded"] is False
        assert [s["name"] for s in done["report"]["stages"]] == ["clean", "decimate", "unwrap", "bake"]
        glb = client.get(done["links"]["result"]).content
        report = validate(glb)
        assert report["errors"] == 0, report["messages"]
        assert 0 < _faces(glb) <= faces
        glbs.append(glb)
        for fmt, head in (("ply", b"ply"), ("stl", b""), ("obj", b"PK")):
            got = client.get(f"/v1/jobs/{eid}/result", params={"format": fmt})
            assert got.status_code == 200 and got.content.startswith(head) and got.content, fmt
        assert client.get(done["links"]["preview"]).content[:4] == b"\x89PNG"
    assert _faces(glbs[0]) > _faces(glbs[1])

    # the parent lists its exports; an export's input is the parent's raw
    view = client.get(f"/v1/jobs/{pid}").json()
    assert [(e["id"], e["state"], e["options"]["faces"]) for e in view["exports"]] == [
        (exports[0], "succeeded", 300),
        (exports[1], "succeeded", 120),
    ]
    assert view["exports"][1]["links"]["result"] == f"/v1/jobs/{exports[1]}/result?format=glb"
    assert client.get(f"/v1/jobs/{exports[0]}/input").content[:4] == b"PK\x03\x04"
    # the same request again is answered by the same export (the cache), a preset resolves to its budget
    again = client.post(f"/v1/jobs/{pid}/exports", data={"faces": "300", "texture_size": "64"})
    assert again.status_code == 200 and again.json()["id"] == exports[0] and again.json()["cached"]
    mobile = client.post(f"/v1/jobs/{pid}/exports", data={"preset": "mobile", "no_texture": "true"})
    assert mobile.json()["options"] == {"faces": 5000, "texture_size": None, "textures": False, "preset": "mobile"}
    assert wait_for(client, mobile.json()["id"])["state"] == "succeeded"

    # nothing pickled anywhere in the data dir
    assert not [p for p in data_dir.rglob("*") if p.suffix in (".pkl", ".pickle")]

    # deleting the parent deletes its exports and their files
    assert client.delete(f"/v1/jobs/{pid}").status_code == 204
    for eid in exports:
        assert_problem(client.get(f"/v1/jobs/{eid}"), 404, "not_found")
        assert not (data_dir / "jobs" / eid).exists()


def test_export_refusals_are_problems(client, chair, shared_assets):
    assert_problem(client.post("/v1/jobs/0123abcd/exports", data={"faces": "100"}), 404, "not_found")
    # an optimize job keeps no raw
    spot = (shared_assets / "spot.glb").read_bytes()
    opt = submit(client, spot, {"kind": "optimize", "faces": "300", "texture_size": "64"}, name="spot.glb").json()
    assert wait_for(client, opt["id"])["state"] == "succeeded"
    body = assert_problem(client.post(f"/v1/jobs/{opt['id']}/exports", data={"faces": "100"}), 409, "no_raw")
    assert "optimize" in body["detail"]
    # a failed generate job (a fully transparent picture) has no result to re-export
    buf = io.BytesIO()
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(buf, format="PNG")
    bad = submit(client, buf.getvalue(), TINY, name="empty.png").json()
    assert wait_for(client, bad["id"])["state"] == "failed"
    assert_problem(client.post(f"/v1/jobs/{bad['id']}/exports", data={"faces": "100"}), 409, "job_not_finished")
    parent = _generated(client, chair)
    # options are checked with the generate limits
    assert_problem(client.post(f"/v1/jobs/{parent['id']}/exports", data={"faces": "2"}), 422, "invalid_options")
    assert_problem(
        client.post(f"/v1/jobs/{parent['id']}/exports", data={"texture_size": "99999"}), 422, "invalid_options"
    )
    body = assert_problem(
        client.post(f"/v1/jobs/{parent['id']}/exports", data={"faces": "10000000"}), 422, "invalid_options"
    )
    assert "faces must be at most" in body["detail"]
    assert_problem(client.post(f"/v1/jobs/{parent['id']}/exports", data={"preset": "huge"}), 422, "invalid_options")
    # an export is no parent of exports
    child = client.post(f"/v1/jobs/{parent['id']}/exports", data={"faces": "200"}).json()
    assert wait_for(client, child["id"])["state"] == "succeeded"
    assert_problem(client.post(f"/v1/jobs/{child['id']}/exports", data={"faces": "100"}), 409, "no_raw")
    # an old job (a version that kept asset.pkl, no raw): a clear refusal
    folder = Path(client.app.state.settings.data_dir) / "jobs" / parent["id"]
    (folder / "raw.mfraw").unlink()
    body = assert_problem(client.post(f"/v1/jobs/{parent['id']}/exports", data={"faces": "100"}), 409, "no_raw")
    assert str(folder) not in body["detail"]


def test_exports_can_be_canceled_and_deleted_like_jobs(client_factory, chair):
    client = client_factory(test_stage_delay_s=0.3)
    parent = _generated(client, chair)
    r = client.post(f"/v1/jobs/{parent['id']}/exports", data={"faces": "200", "texture_size": "64"})
    eid = r.json()["id"]
    running = wait_for(client, eid, ("running",), where=lambda j: j["progress"]["stage"] is not None)
    assert running["attempts"] == 1
    assert client.post(f"/v1/jobs/{eid}/cancel").status_code == 202
    done = wait_for(client, eid)
    assert done["state"] == "canceled" and done["error"]["code"] == "canceled"
    second = client.post(f"/v1/jobs/{parent['id']}/exports", data={"faces": "150", "texture_size": "64"}).json()
    assert client.delete(f"/v1/jobs/{second['id']}").status_code == 204
    assert_problem(client.get(f"/v1/jobs/{second['id']}"), 404, "not_found")
    # the parent is untouched and lists what is left
    view = client.get(f"/v1/jobs/{parent['id']}").json()
    assert view["state"] == "succeeded" and [e["id"] for e in view["exports"]] == [eid]


def test_an_export_whose_lease_expired_is_run_again_to_success(client_factory, chair, validate):
    client = client_factory(test_stage_delay_s=0.3)
    settings = client.app.state.settings
    parent = _generated(client, chair)
    eid = client.post(f"/v1/jobs/{parent['id']}/exports", data={"faces": "200", "texture_size": "64"}).json()["id"]
    wait_for(client, eid, ("running",), where=lambda j: j["progress"]["stage"] is not None)
    # another process sharing the ledger finds the lease expired (as if this worker had died) and re-queues it
    store = JobStore(settings.data_dir)
    try:
        requeued, failed = store.recover(settings.max_attempts, settings.ttl_s, now=time.time() + 3600)
    finally:
        store.close()
    assert requeued == [eid] and failed == []
    done = wait_for(client, eid, timeout=90)
    assert done["state"] == "succeeded" and done["attempts"] == 2, done
    assert validate(client.get(done["links"]["result"]).content)["errors"] == 0


class _Trap:
    """Unpickling this creates a file: proof that a stored pickle was loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path(self.path).touch, ())


def test_a_job_of_an_older_version_is_served_from_its_files_and_its_pickle_never_read(client, chair, tmp_path):
    parent = _generated(client, chair)
    folder = tmp_path / "data" / "jobs" / parent["id"]
    # what an older version left: result.glb, cutout.png and asset.pkl (here one that acts when unpickled)
    for name in ("raw.mfraw", "result.obj.zip", "result.ply.ply", "result.stl.stl"):
        (folder / name).unlink()
    marker = tmp_path / "unpickled"
    (folder / "asset.pkl").write_bytes(pickle.dumps(_Trap(str(marker))))
    assert client.get(f"/v1/jobs/{parent['id']}/result").content[:4] == b"glTF"
    assert client.get(f"/v1/jobs/{parent['id']}/preview.png").content[:4] == b"\x89PNG"
    obj = client.get(f"/v1/jobs/{parent['id']}/result", params={"format": "obj"})
    body = assert_problem(obj, 404, "artifact_missing")
    assert "older version" in body["detail"] and "format=glb" in body["detail"]
    body = assert_problem(client.post(f"/v1/jobs/{parent['id']}/exports", data={"faces": "100"}), 409, "no_raw")
    assert "older version" in body["detail"]
    assert not marker.exists()


def test_exports_expire_with_their_parent(client, chair, tmp_path):
    parent = _generated(client, chair)
    store = client.app.state.manager.store
    first_expiry = store.get(parent["id"]).expires_at
    eid = client.post(f"/v1/jobs/{parent['id']}/exports", data={"faces": "200", "texture_size": "64"}).json()["id"]
    assert wait_for(client, eid)["state"] == "succeeded"
    parent_expiry, export_expiry = (store.get(i).expires_at for i in (parent["id"], eid))
    # the parent (the export's raw) lives as long as its export's result
    assert parent_expiry == export_expiry > first_expiry
    assert store.expire(now=parent_expiry - 1) == []
    # a parent whose time is up takes its export with it, whatever the export's own expiry
    with store._tx() as c:
        c.execute("UPDATE jobs SET expires_at=? WHERE id=?", (first_expiry, parent["id"]))
    assert sorted(store.expire(now=first_expiry + 1)) == sorted([parent["id"], eid])
    assert_problem(client.get(f"/v1/jobs/{eid}"), 404, "not_found")
    assert not (tmp_path / "data" / "jobs" / eid).exists()
