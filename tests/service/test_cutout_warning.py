"""A doubtful background cut-out reaches the job's report (which the studio shows) through the real app."""

from __future__ import annotations

import io

import skimage.data
from PIL import Image

from .conftest import TINY, submit, wait_for


def test_doubtful_cutout_warning_is_in_the_job_report(client):
    buf = io.BytesIO()
    Image.fromarray(skimage.data.rocket()).save(buf, format="PNG")
    r = submit(client, buf.getvalue(), TINY, name="rocket.png")
    assert r.status_code == 202, r.text
    done = wait_for(client, r.json()["id"], timeout=120.0)
    assert done["state"] == "succeeded", done
    warnings = [w for w in done["report"]["warnings"] if w.startswith("doubtful background cut-out: ")]
    assert len(warnings) == 1 and "\n" not in warnings[0] and "--bg-engine rembg" in warnings[0], done["report"]
    prepare = next(s for s in done["report"]["stages"] if s["name"] == "prepare")
    assert prepare["counts"]["background"]["quality"]["verdict"] == "doubtful"
