"""A job's options in the ledger are its configuration (``cfg.to_dict()``) plus the service's few fields; a
worker rebuilds the configuration with ``from_dict``; rows of the previous format still run, rows of an
unknown one fail with one clear line; the cache key is stable; the OOM step-down acts on the
configuration; the ``auto`` fallback note is the resolver's, given when the job was submitted."""

from __future__ import annotations

import hashlib
import shutil
from typing import Any

import pytest

import meshforge
from meshforge.backends import resolve_name
from meshforge.config import OPTIONS, InputConfig, PipelineConfig
from meshforge.optimize import OptimizeConfig
from meshforge.service.jobs import RAW_FILE, execute_job
from meshforge.service.options import (
    degrade,
    fingerprint,
    normalize_export_options,
    normalize_generate_options,
    normalize_optimize_options,
    request_hash,
)
from meshforge.service.storage import JobStore, NewJob, new_job_id

from ..backends.triposr_helpers import FIXTURES
from .conftest import TINY, make_settings, submit, wait_for

#: a generate job's options as the previous version stored them (format 1: flat, no "format" key)
FORMAT1_GENERATE = {
    "resolution": 32,
    "faces": 500,
    "texture_size": 64,
    "textures": True,
    "foreground_ratio": 0.85,
    "background": "auto",
    "backend": "inflate",
    "backend_requested": "inflate",
}


def queue_row(
    store: JobStore, kind: str, options: dict[str, Any], data: bytes, name: str, parent_id: str | None = None
) -> str:
    """Put a job in the ledger as another process (or an earlier version) could, without the HTTP layer."""
    job_id = new_job_id()
    folder = store.job_dir(job_id)
    if parent_id is None:
        (folder / "input").mkdir(parents=True)
        (folder / "input" / name).write_bytes(data)
    else:
        folder.mkdir(parents=True)
    new = NewJob(
        id=job_id,
        kind=kind,
        owner="",
        idempotency_key=None,
        request_hash=job_id,
        fingerprint=job_id,
        input_name=name,
        input_file=RAW_FILE if parent_id else f"input/{name}",
        input_sha256=hashlib.sha256(data).hexdigest(),
        input_bytes=len(data),
        input_media_type="application/octet-stream",
        options=options,
        backend=options.get("backend"),
        parent_id=parent_id,
    )
    assert store.create(new, max_queue=10, ttl_s=600).how == "created"
    return job_id


def test_the_ledger_keeps_the_configuration_and_jobs_run_with_it(client, chair, tmp_path):
    settings = make_settings(tmp_path)
    job = submit(client, chair, dict(TINY, foreground_ratio="0.7")).json()
    done = wait_for(client, job["id"])
    assert done["state"] == "succeeded", done
    store = JobStore(settings.data_dir)
    try:
        row = store.get(job["id"])
        assert row is not None
        expected = PipelineConfig(
            input=InputConfig(max_pixels=settings.max_pixels, max_bytes=settings.max_image_bytes)
        ).with_options(resolution=32, faces=500, texture_size=64, foreground_ratio=0.7)
        assert row.options["format"] == 2 and row.options["backend"] == "inflate"
        assert PipelineConfig.from_dict(row.options["config"]) == expected
        assert done["report"]["config"] == expected.to_dict()  # what ran is what the ledger says

        # an export: the parent's configuration with the new budget, and it runs with exactly that
        r = client.post(f"/v1/jobs/{job['id']}/exports", data={"faces": "300", "no_texture": "true"})
        assert r.status_code == 202, r.text
        export = wait_for(client, r.json()["id"])
        assert export["state"] == "succeeded", export
        assert export["options"] == {"faces": 300, "texture_size": None, "textures": False, "preset": None}
        erow = store.get(export["id"])
        assert erow is not None
        ecfg = PipelineConfig.from_dict(erow.options["config"])
        assert ecfg == expected.with_options(faces=300, textures=False, texture_size=OPTIONS["texture_size"].default)
        assert export["report"]["config"] == erow.options["config"]
    finally:
        store.close()


def test_rows_of_the_previous_format_still_run(tmp_path, chair, shared_assets):
    settings = make_settings(tmp_path)
    store = JobStore(settings.data_dir)
    try:
        gen = queue_row(store, "generate", FORMAT1_GENERATE, chair, "chair.png")
        out = execute_job(gen, settings, store=store)
        assert out.state == "succeeded", out
        cfg = out.report["config"]
        assert (cfg["extract"]["resolution"], cfg["decimate"]["faces"], cfg["bake"]["texture_size"]) == (32, 500, 64)

        old_export = {"faces": 200, "texture_size": None, "textures": False, "preset": None}
        raw = (store.job_dir(gen) / RAW_FILE).read_bytes()
        exp = queue_row(store, "export", old_export, raw, "chair.mfraw", parent_id=gen)
        out = execute_job(exp, settings, store=store)
        assert out.state == "succeeded", out
        assert out.report["config"]["decimate"]["faces"] == 200 and not out.report["config"]["bake"]["textures"]

        spot = (shared_assets / "spot.glb").read_bytes()
        opt = queue_row(store, "optimize", {"faces": 300, "texture_size": 32, "preset": None}, spot, "spot.glb")
        out = execute_job(opt, settings, store=store)
        assert out.state == "succeeded", out
        assert out.report["config"]["decimate"]["faces"] == 300 and out.report["config"]["bake"]["texture_size"] == 32

        # a new export of the old generate row reads its options (format 1) as its base
        new_export = normalize_export_options(settings, FORMAT1_GENERATE, texture_size=32)
        assert new_export["config"]["decimate"]["faces"] == 500 and new_export["config"]["bake"]["texture_size"] == 32
    finally:
        store.close()


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"format": 3, "config": {"extract": {"resolution": 32}}, "backend": "inflate"}, "format 3"),
        (dict(FORMAT1_GENERATE, colour="red"), "colour"),
        ({"format": 2, "config": {"extract": {"resolution": 5}}, "backend": "inflate"}, "resolution must be in"),
    ],
)
def test_rows_in_an_unknown_format_fail_with_one_clear_line(tmp_path, chair, options, words):
    settings = make_settings(tmp_path)
    store = JobStore(settings.data_dir)
    try:
        job_id = queue_row(store, "generate", options, chair, "chair.png")
        out = execute_job(job_id, settings, store=store)
        row = store.get(job_id)
        assert out.state == "failed" and out.error_code == "invalid_input", out
        assert row is not None and row.error_message is not None
        message = row.error_message
        assert words in message and "submit it again" in message and "\n" not in message, message
        assert str(tmp_path) not in message and "Traceback" not in message
    finally:
        store.close()


def test_the_cache_key_is_stable_for_equal_requests(tmp_path):
    settings = make_settings(tmp_path)
    sha = "ab" * 32

    def key(kind: str, options: dict[str, Any]) -> str:
        return fingerprint(kind, sha, options, settings)

    a = normalize_generate_options(settings, faces=5000, texture_size=512)
    b = normalize_generate_options(settings, faces=5000, texture_size=512)
    assert key("generate", a) == key("generate", b) and request_hash("generate", sha, a) == request_hash(
        "generate", sha, b
    )
    assert key("generate", a) != key("generate", normalize_generate_options(settings, faces=5001, texture_size=512))
    assert key("generate", a) != fingerprint("generate", "cd" * 32, a, settings)  # other input bytes
    # without textures the texture size asked for does not make another result
    plain = normalize_generate_options(settings, no_texture=True)
    assert key("generate", plain) == key(
        "generate", normalize_generate_options(settings, no_texture=True, texture_size=64)
    )
    # a preset and the same budgets spelt out make the same result (but are different requests)
    mobile = normalize_optimize_options(settings, preset="mobile")
    spelt = normalize_optimize_options(settings, faces=5000, texture_size=512)
    assert key("optimize", mobile) == key("optimize", spelt)
    assert request_hash("optimize", sha, mobile) != request_hash("optimize", sha, spelt)
    assert key("optimize", mobile) != key("optimize", normalize_optimize_options(settings, preset="prop"))


def test_the_out_of_memory_step_down_acts_on_the_configuration():
    cfg = PipelineConfig().with_options(resolution=64, texture_size=128)
    reduced, changes = degrade("generate", cfg)
    assert reduced == cfg.with_options(resolution=32, texture_size=64)
    assert changes == ["resolution 64 → 32", "texture_size 128 → 64"]
    # never below the options' minimum (the table's), nothing to say when nothing changed
    low = PipelineConfig().with_options(resolution=16, texture_size=16)
    assert degrade("generate", low) == (low, [])
    odd = degrade("generate", PipelineConfig().with_options(resolution=24, texture_size=20))[0]
    assert (odd.extract.resolution, odd.bake.texture_size) == (OPTIONS["resolution"].minimum, 16)
    # without textures only the grid; an export extracts nothing; optimize has no grid
    plain = PipelineConfig().with_options(resolution=64, textures=False)
    assert degrade("generate", plain)[0] == plain.with_options(resolution=32)
    assert degrade("export", cfg) == (cfg.with_options(texture_size=64), ["texture_size 128 → 64"])
    ocfg = OptimizeConfig().with_options(texture_size=256)
    oreduced, ochanges = degrade("optimize", ocfg)
    assert oreduced == ocfg.with_options(texture_size=128) and ochanges == ["texture_size 256 → 128"]
    assert isinstance(oreduced, OptimizeConfig) and oreduced.clean == ocfg.clean


def test_the_auto_fallback_note_is_the_resolvers_at_submit(tmp_path, chair):
    """The note says why ``auto`` chose the backend the job runs, even when the weights appear while it waits."""
    weights = tmp_path / "weights"
    weights.mkdir()
    settings = make_settings(tmp_path, backend="auto", weights=str(weights))
    name, note = resolve_name("auto", str(weights))
    assert name == "inflate" and note
    store = JobStore(settings.data_dir)
    try:
        job_id = queue_row(store, "generate", normalize_generate_options(settings, **_tiny()), chair, "chair.png")
        # TripoSR's weights arrive before a worker takes the job: auto would choose it now, but this job
        # was resolved (to inflate) when it was submitted
        shutil.copy(FIXTURES / "config.yaml", weights)
        shutil.copytree(FIXTURES / "dino_config", weights / "dino_config")
        shutil.copy(FIXTURES / "model.ckpt", weights)
        assert resolve_name("auto", str(weights)) == ("triposr", None)
        out = execute_job(job_id, settings, store=store)
        assert out.state == "succeeded", out
        assert out.report["warnings"].count(note) == 1, out.report["warnings"]
        assert "inflate" in str(out.report["info"]["source"]["backend"])
    finally:
        store.close()
    # the Python API gives the same line for the same situation
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = PipelineConfig().with_options(**_tiny())
    result = meshforge.generate(chair, "auto", cfg, weights=str(empty))
    assert note in result.report.warnings


def _tiny() -> dict[str, int]:
    return {k: int(v) for k, v in TINY.items()}
