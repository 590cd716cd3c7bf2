"""Prompt jobs: ``POST /v1/jobs`` with a ``prompt`` field instead of a file (text → image → 3D)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import TERMINAL, TINY

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def tiny_t2i(tmp_path_factory) -> Path:
    from meshforge.t2i.random_pipeline import write_random_t2i

    return write_random_t2i(tmp_path_factory.mktemp("t2i") / "tiny")


def form(**fields: object) -> dict[str, tuple[None, str]]:
    """Multipart form fields without a file (what the studio's FormData sends for a prompt)."""
    return {k: (None, str(v)) for k, v in fields.items()}


def wait(client, job_id: str, timeout: float = 60.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in TERMINAL:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def test_prompt_job_makes_a_picture_and_is_refused_like_any_noise_picture(client_factory, tiny_t2i):
    client = client_factory(t2i_model=str(tiny_t2i))
    r = client.post("/v1/jobs", files=form(prompt="a wooden chair", seed=3, **TINY))
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["input"]["name"] == "a-wooden-chair.txt" and job["input"]["media_type"].startswith("text/plain")
    assert job["options"]["prompt"] is True and job["links"]["picture"] == f"/v1/jobs/{job['id']}/picture"
    done = wait(client, job["id"])
    # the random pipeline makes noise: refused in one line, like any picture with no object
    assert done["state"] == "failed" and done["error"]["code"] == "invalid_input", done
    assert "no object" in done["error"]["message"] and "\n" not in done["error"]["message"]
    picture = client.get(done["links"]["picture"])
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    pixels = np.asarray(Image.open(__import__("io").BytesIO(picture.content)))
    assert pixels.shape[:2] == (64, 64) and pixels.std() > 0
    assert client.get(f"/v1/jobs/{job['id']}/input").text == "a wooden chair"


def test_prompt_job_progress_goes_through_the_sampling_steps(client_factory, tiny_t2i):
    client = client_factory(test_stage_delay_s=0.3, t2i_model=str(tiny_t2i))
    job = client.post("/v1/jobs", files=form(prompt="a lamp", **TINY)).json()
    seen: set[tuple[str, float]] = set()
    end = time.monotonic() + 60
    while time.monotonic() < end:
        j = client.get(f"/v1/jobs/{job['id']}").json()
        seen.add((j["progress"]["stage"], j["progress"]["percent"]))
        if j["state"] in TERMINAL:
            break
        time.sleep(0.05)
    t2i = sorted(p for s, p in seen if s == "text_to_image")
    assert len(t2i) >= 2 and t2i[-1] > t2i[0], seen  # step by step, not one jump
    assert any(s == "prepare" for s, _ in seen)


@pytest.mark.parametrize(
    ("data", "files", "code", "needle"),
    [
        ({"prompt": "   "}, None, "invalid_prompt", "the prompt is empty"),
        ({"prompt": "x" * 1001}, None, "invalid_prompt", "more than 1000"),
        ({"prompt": "a chair"}, ("a.png", b"\x89PNG....", "image/png"), "invalid_options", "not both"),
        ({"prompt": "a chair", "kind": "optimize"}, None, "invalid_options", "generate"),
        ({"seed": "2"}, ("a.png", b"\x89PNG....", "image/png"), "invalid_options", "prompt jobs only"),
        ({"prompt": "a chair", "seed": "-1"}, None, "invalid_options", "seed must be in 0..2^63-1"),
        ({"faces": "500"}, None, "invalid_options", "a file or a prompt"),
    ],
)
def test_bad_prompt_requests_are_one_line_and_leave_nothing(client_factory, tiny_t2i, data, files, code, needle):
    client = client_factory(t2i_model=str(tiny_t2i))
    r = client.post("/v1/jobs", files={**form(**data), **({"file": files} if files else {})})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] == code and needle in body["detail"] and "\n" not in body["detail"]
    assert client.get("/v1/jobs").json()["items"] == []


def test_picture_of_a_file_job_is_not_there(client_factory, chair, tiny_t2i):
    client = client_factory(t2i_model=str(tiny_t2i))
    job = client.post("/v1/jobs", files={"file": ("chair.png", chair, "image/png"), **form(**TINY)}).json()
    assert job["links"]["picture"] is None
    assert client.get(f"/v1/jobs/{job['id']}/picture").status_code == 404


def test_cancel_during_text_to_image_stops_at_the_next_step(client_factory, tiny_t2i):
    client = client_factory(test_stage_delay_s=0.5, t2i_model=str(tiny_t2i))
    job = client.post("/v1/jobs", files=form(prompt="a kettle", **TINY)).json()
    end = time.monotonic() + 30
    while time.monotonic() < end:
        j = client.get(f"/v1/jobs/{job['id']}").json()
        if j["progress"]["stage"] == "text_to_image" and j["progress"]["percent"] > 0:
            break
        time.sleep(0.02)
    else:
        raise AssertionError("the job never reached a sampling step")
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202  # running: at its next step
    done = wait(client, job["id"])
    assert done["state"] == "canceled" and "text_to_image" in done["error"]["message"], done
    assert client.get(f"/v1/jobs/{job['id']}/picture").status_code == 404  # stopped before the picture was made


def test_a_server_whose_model_cannot_load_fails_the_job_in_one_line(client_factory, tmp_path):
    folder = tmp_path / "secret-models" / "not-a-pipeline"
    folder.mkdir(parents=True)
    client = client_factory(t2i_model=str(folder))
    job = client.post("/v1/jobs", files=form(prompt="a chair", **TINY)).json()
    done = wait(client, job["id"])
    assert done["state"] == "failed" and done["error"]["code"] == "backend_error", done
    message = done["error"]["message"]
    assert "not a diffusers pipeline folder" in message and "secret-models" not in message and "\n" not in message
    assert client.get(f"/v1/jobs/{job['id']}/picture").status_code == 404
