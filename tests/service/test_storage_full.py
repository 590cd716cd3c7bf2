"""A full or unwritable data dir, on real small filesystems (tmpfs mounts, as root) and with the real
``meshforge serve``: 507 ``insufficient_storage`` for submits and downloads, ``/readyz`` not ready below
``min_free_bytes``, jobs failed as ``insufficient_storage`` with their partial files removed, and a
one-line error at start when the data dir cannot be written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import SMALL, assert_problem, wait_for


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``small_fs(size, *options)`` → a fresh tmpfs of ``size`` mounted under tmp_path (unmounted after
    the test); skips when mounting is not permitted (not root, or no CAP_SYS_ADMIN)."""
    mounts: list[Path] = []

    def mount(size: str, *options: str) -> Path:
        point = tmp_path / f"fs{len(mounts)}"
        point.mkdir()
        opts = ",".join((f"size={size}", *options))
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounts.append(point)
        return point

    yield mount
    for point in reversed(mounts):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def fill(folder: Path, leave: int) -> Path:
    """Write a filler file in ``folder`` so that about ``leave`` bytes stay free on its filesystem."""
    path = folder / f"filler-{uuid.uuid4().hex[:6]}"
    with path.open("wb") as fh:
        n = shutil.disk_usage(folder).free - leave
        while n > 0:
            k = min(n, 1 << 20)
            fh.write(b"\xa5" * k)
            n -= k
    return path


def leftovers(job_dir: Path) -> list[str]:
    """What a job's folder holds besides its input."""
    return sorted(p.name for p in job_dir.iterdir() if p.name != "input") if job_dir.is_dir() else []


def test_readyz_is_not_ready_below_min_free_bytes_and_submits_get_507(server_factory, small_fs, chair):
    fs = small_fs("8m")
    server = server_factory(fs / "data", MESHFORGE_SERVICE_MIN_FREE_BYTES=str(2 << 20))
    with server.client() as http:
        ready = http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"], ready.text
        assert ready.json()["reasons"] == []
        filler = fill(fs, 1 << 20)  # 1 MiB left, below the 2 MiB threshold
        ready = http.get("/readyz")
        assert ready.status_code == 503, ready.text
        body = ready.json()
        assert body["ready"] is False and body["disk_free_bytes"] < 2 << 20, body
        assert len(body["reasons"]) == 1 and "min_free_bytes" in body["reasons"][0], body
        assert str(fs) not in ready.text  # no server path
        r = http.post("/v1/jobs", files={"file": ("chair.png", chair)}, data=SMALL)
        problem = assert_problem(r, 507, "insufficient_storage")
        assert str(fs) not in problem["detail"]
        assert http.get("/v1/jobs").json()["items"] == []
        assert leftovers(fs / "data" / "jobs") == []  # nothing half-stored
        filler.unlink()
        assert http.get("/readyz").status_code == 200
        r = http.post("/v1/jobs", files={"file": ("chair.png", chair)}, data=SMALL)
        assert r.status_code == 202, r.text  # the same upload, once there is room again
        assert wait_for(http, r.json()["id"], timeout=60)["state"] == "succeeded"


def test_a_submit_that_finds_the_disk_full_gets_507_and_leaves_nothing(server_factory, small_fs, chair):
    fs = small_fs("8m")
    server = server_factory(fs / "data", MESHFORGE_SERVICE_MIN_FREE_BYTES="0")  # no threshold: a real ENOSPC
    page = 4096
    with server.client() as http:
        filler = fill(fs, -(-len(chair) // page) * page)  # room for the upload itself, not for its ledger row
        r = http.post("/v1/jobs", files={"file": ("chair.png", chair)}, data=SMALL)
        problem = assert_problem(r, 507, "insufficient_storage")
        assert str(fs) not in problem["detail"]
        assert list((fs / "data" / "jobs").iterdir()) == []  # the stored upload was removed again
        filler.unlink()
        assert http.get("/v1/jobs").json()["items"] == []
        r = http.post("/v1/jobs", files={"file": ("chair.png", chair)}, data=SMALL)
        assert r.status_code == 202, r.text
        assert wait_for(http, r.json()["id"], timeout=60)["state"] == "succeeded"


def test_a_job_that_fills_the_disk_fails_as_insufficient_storage_and_leaves_no_partial_files(
    server_factory, small_fs, chair
):
    fs = small_fs("24m")
    data_dir = fs / "data"
    server = server_factory(data_dir, stage_delay_s=0.2, MESHFORGE_SERVICE_MIN_FREE_BYTES="0")
    options = dict(SMALL, texture_size="1024")  # a result of a few MB
    with server.client() as http:
        # a first run of (nearly) the same job tells how much its files take
        first = http.post("/v1/jobs", files={"file": ("chair.png", chair)}, data=options).json()["id"]
        assert wait_for(http, first, timeout=90)["state"] == "succeeded"
        raw, glb = ((data_dir / "jobs" / first / name).stat().st_size for name in ("raw.mfraw", "result.glb"))

        options["foreground_ratio"] = "0.84"  # another job (no cache hit), files of about the same sizes
        r = http.post("/v1/jobs", files={"file": ("chair.png", chair)}, data=options)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        wait_for(http, job_id, ("running",), timeout=30, where=lambda j: j["progress"]["stage"] == "reconstruct")
        # room for raw.mfraw (written first) and the ledger's progress writes, not for the results as well
        filler = fill(fs, raw + glb // 2)
        job = wait_for(http, job_id, timeout=60)
        assert job["state"] == "failed", job
        assert job["error"]["code"] == "insufficient_storage", job
        assert "disk" in job["error"]["message"] and str(fs) not in job["error"]["message"], job
        assert leftovers(data_dir / "jobs" / job_id) == []  # raw.mfraw removed, no temporary file left
        assert http.get(f"/v1/jobs/{job_id}/input").content == chair  # the upload is kept
        filler.unlink()
        # the server goes on: the same request runs again (a failed job is no cache hit) and succeeds
        again = http.post("/v1/jobs", files={"file": ("chair.png", chair)}, data=options)
        assert again.status_code == 202, again.text
        assert wait_for(http, again.json()["id"], timeout=90)["state"] == "succeeded"


def test_a_download_that_needs_a_write_on_a_full_disk_gets_507(server_factory, small_fs, chair):
    fs = small_fs("16m")
    data_dir = fs / "data"
    server = server_factory(data_dir, MESHFORGE_SERVICE_MIN_FREE_BYTES="0")
    with server.client() as http:
        job_id = http.post("/v1/jobs", files={"file": ("chair.png", chair)}, data=SMALL).json()["id"]
        assert wait_for(http, job_id, timeout=60)["state"] == "succeeded"
        before = sorted(p.name for p in (data_dir / "jobs" / job_id).iterdir())
        filler = fill(fs, 0)
        r = http.get(f"/v1/jobs/{job_id}/preview.png")  # rendered on first request
        assert_problem(r, 507, "insufficient_storage")
        assert sorted(p.name for p in (data_dir / "jobs" / job_id).iterdir()) == before  # no temporary file
        # every format was written when the job ended: downloads need no write
        assert http.get(f"/v1/jobs/{job_id}/result", params={"format": "obj"}).content[:2] == b"PK"
        filler.unlink()
        r = http.get(f"/v1/jobs/{job_id}/preview.png")
        assert r.status_code == 200 and r.content[:4] == b"\x89PNG"


def _serve(data_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHFORGE_SERVICE_")}
    cmd = [sys.executable, "-m", "meshforge.cli", "serve", "--port", "0", "--data-dir", str(data_dir)]
    cmd += ["--backend", "inflate", "--devices", "cpu"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)


def test_a_data_dir_under_a_file_is_a_one_line_error_at_start(tmp_path):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    r = _serve(tmp_path / "notes.txt" / "data", tmp_path)
    assert r.returncode != 0, r
    assert "Traceback" not in r.stderr and r.stdout == "", r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "notes.txt" in lines[0] and "data dir" in lines[0], lines


def test_a_read_only_data_dir_is_a_one_line_error_at_start(small_fs, tmp_path):
    ro = small_fs("1m", "ro")
    with pytest.raises(OSError):  # root too: a read-only mount is not a permission bit
        (ro / "probe").write_bytes(b"x")
    r = _serve(ro / "data", tmp_path)
    assert r.returncode != 0, r
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "read-only" in lines[0].lower(), r.stderr
