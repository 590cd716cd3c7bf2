"""Uploads: the request checks a picture's header (format, size, pixel count, container structure) and
the worker decodes it, a bounded number at a time."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from meshforge.config import InputConfig
from meshforge.io.images import load_image

from .conftest import TINY, assert_problem, submit, wait_for


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int, idat: bytes) -> bytes:
    """A structurally valid 8-bit RGB PNG (every chunk CRC right, IEND present) whose IHDR says
    ``width``×``height`` and whose IDAT holds ``idat`` as given."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def picture(width: int, height: int) -> bytes:
    """A flat-background RGB PNG with a dark ellipse in the middle (compresses to a few KB)."""
    img = np.full((height, width, 3), (205, 215, 230), np.uint8)
    yy, xx = np.ogrid[:height, :width]
    img[((xx - width / 2) / (width * 0.3)) ** 2 + ((yy - height / 2) / (height * 0.35)) ** 2 <= 1] = (120, 60, 30)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def test_header_check_refuses_what_it_can_tell_without_decoding(client_factory):
    client = client_factory(max_pixels=40_000_000)
    # 10^10 pixels claimed, 40 bytes of data: refused from the header (Pillow's decompression-bomb limit)
    bomb = png_claiming(100_000, 100_000, zlib.compress(b"\x00" * 16))
    body = assert_problem(submit(client, bomb, TINY, name="bomb.png"), 422, "invalid_image")
    assert body["detail"].startswith("bomb: refused as a decompression bomb"), body
    # 64 MP claimed: under Pillow's limit, over the server's max_pixels
    body = assert_problem(submit(client, png_claiming(8000, 8000, b""), TINY, name="big.png"), 422, "invalid_image")
    assert "8000x8000 = 64000000 pixels is more than the limit of 40000000 (max_pixels)" in body["detail"], body
    body = assert_problem(submit(client, png_claiming(0, 10, b""), TINY, name="flat.png"), 422, "invalid_image")
    assert "zero-size" in body["detail"], body
    body = assert_problem(submit(client, b"GIF89a" + b"\x00" * 3, TINY, name="stub.gif"), 422, "invalid_image")
    assert body["detail"].startswith("stub: "), body
    psd = b"8BPS" + b"\x00" * 64
    body = assert_problem(submit(client, psd, TINY, name="layers.psd"), 415, "unsupported_media_type")
    assert "Photoshop" in body["detail"], body
    # cut short: the container is incomplete (no IEND), which the structure check sees without decoding
    whole = picture(64, 48)
    body = assert_problem(submit(client, whole[: len(whole) // 2], TINY, name="cut.png"), 422, "invalid_image")
    assert body["detail"].startswith("cut: truncated or corrupt"), body
    assert client.get("/v1/jobs").json()["items"] == []  # nothing was queued


def test_pixel_data_is_decoded_by_the_worker_not_the_request(client_factory, tmp_path):
    client = client_factory()
    # a correct header and container, but an IDAT that is not a zlib stream: only decoding can tell
    corrupt = png_claiming(640, 480, b"this is not deflate data" * 8)
    r = submit(client, corrupt, TINY, name="garbled.png")
    assert r.status_code == 202, r.text
    job = wait_for(client, r.json()["id"], timeout=60)
    assert job["state"] == "failed" and job["error"]["code"] == "invalid_input", job
    message = job["error"]["message"]
    assert message.startswith("garbled.png: truncated or corrupt image data"), job  # no server path
    assert str(tmp_path) not in message and "Traceback" not in message


def test_a_large_picture_is_accepted_and_decoded_in_the_worker(client_factory):
    client = client_factory(max_pixels=40_000_000)
    data = picture(3000, 2000)
    r = submit(client, data, TINY, name="big.png")
    assert r.status_code == 202, r.text
    assert r.json()["input"] == {
        "name": "big.png",
        "sha256": load_image(data).sha256,
        "bytes": len(data),
        "media_type": "image/png",
    }
    job = wait_for(client, r.json()["id"], timeout=120)
    assert job["state"] == "succeeded", job
    load = next(s for s in job["report"]["stages"] if s["name"] == "load")
    assert (load["counts"]["width"], load["counts"]["height"]) == (3000, 2000), load


def test_probe_reads_the_header_only():
    from meshforge.io.images import probe_image

    data = picture(320, 200)
    header = probe_image(data, name="p")
    assert (header.format, header.width, header.height, header.mode) == ("PNG", 320, 200, "RGB")
    # the header of a 10^10-pixel picture is read (and refused) without allocating its pixels
    from meshforge.errors import InputError

    with pytest.raises(InputError, match=r"^p: refused as a decompression bomb"):  # Pillow's own limit
        probe_image(png_claiming(100_000, 100_000, b""), InputConfig(max_pixels=10**11), name="p")
    with pytest.raises(InputError, match=r"^p: 8000x8000 = 64000000 pixels is more than the limit"):
        probe_image(png_claiming(8000, 8000, b""), name="p")


def test_worker_decodes_wait_for_a_free_decode_slot(client_factory):
    """A job's picture is decoded inside one of ``max_concurrent_decodes`` process-wide slots: while the
    test holds the only slot, the running job stays before its first stage; once released, it finishes."""
    from meshforge.service.jobs import decode_slots

    client = client_factory(max_concurrent_decodes=1)
    with decode_slots(1):
        job_id = submit(client, picture(64, 48), TINY, name="p.png").json()["id"]
        wait_for(client, job_id, ("running",), timeout=30)
        time.sleep(0.5)
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["state"] == "running" and job["progress"]["stage"] is None, job  # still waiting to decode
    job = wait_for(client, job_id, timeout=60)
    assert job["state"] == "succeeded", job
