"""Job files in S3-compatible storage (``MESHFORGE_SERVICE_STORAGE_URL=s3://…``) on moto's real S3 server."""

from __future__ import annotations

import shutil
from pathlib import Path

import boto3
import httpx
from fastapi.testclient import TestClient

from meshforge.service.app import create_app

from ..service.conftest import TINY, assert_problem, image_bytes, make_settings, submit, wait_for


def _objects(url: str) -> list[str]:
    bucket, _, prefix = url[len("s3://") :].partition("/")
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"][len(prefix) + 1 :] for p in pages for o in p.get("Contents", ()))


def test_job_files_live_in_the_bucket_and_are_served_from_it(tmp_path: Path, s3_env: str) -> None:
    settings = make_settings(tmp_path, storage_url=s3_env)
    picture = image_bytes()
    with TestClient(create_app(settings)) as client:
        job = wait_for(client, submit(client, picture, TINY, name="chair.png").json()["id"], timeout=120)
        assert job["state"] == "succeeded", job
        jid = job["id"]
        names = [f"jobs/{jid}/{n}" for n in ("cutout.png", "input/chair.png", "raw.mfraw")]
        names += [f"jobs/{jid}/result.{n}" for n in ("glb", "obj.zip", "ply.ply", "stl.stl")]
        assert _objects(s3_env) == sorted(names)
        local = client.get(f"/v1/jobs/{jid}/result").content
        # this server's working copy goes away: every file still comes from the bucket, byte for byte
        shutil.rmtree(settings.data_dir / "jobs" / jid)
        assert client.get(f"/v1/jobs/{jid}/result").content == local
        assert client.get(f"/v1/jobs/{jid}/input").content == picture
        assert client.get(f"/v1/jobs/{jid}/cutout").content[:8] == b"\x89PNG\r\n\x1a\n"
        assert client.get(f"/v1/jobs/{jid}/preview.png").status_code == 200
        # a presigned URL: the object itself, without credentials
        r = client.get(f"/v1/jobs/{jid}/result", params={"format": "stl", "redirect": "true"}, follow_redirects=False)
        assert r.status_code == 307
        stl = httpx.get(r.headers["location"])
        assert stl.status_code == 200 and stl.content == client.get(f"/v1/jobs/{jid}/result?format=stl").content
        # an export reads its parent's raw from the bucket
        shutil.rmtree(settings.data_dir / "jobs" / jid)
        exp = client.post(f"/v1/jobs/{jid}/exports", data={"faces": "300"})
        assert exp.status_code == 202, exp.text
        done = wait_for(client, exp.json()["id"], timeout=120)
        assert done["state"] == "succeeded", done
        assert f"jobs/{done['id']}/result.glb" in _objects(s3_env)
        # deleting the job deletes its objects and its exports'
        assert client.delete(f"/v1/jobs/{jid}").status_code == 204
        assert _objects(s3_env) == []
        assert_problem(client.get(f"/v1/jobs/{jid}/result"), 404, "not_found")


def test_unreachable_bucket_is_a_503_and_leaves_nothing(tmp_path: Path, s3_env: str) -> None:
    settings = make_settings(tmp_path, storage_url="s3://no-such-bucket-here/x")
    with TestClient(create_app(settings)) as client:
        r = submit(client, image_bytes(), TINY)
        body = assert_problem(r, 503, "storage_unavailable")
        assert "no-such-bucket" not in body["detail"]
        assert client.get("/v1/jobs").json()["items"] == []
        assert list((settings.data_dir / "jobs").iterdir()) == []
