"""Texture maps are PNG-encoded concurrently (a thread pool), into the bytes the sequential encoder writes."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image
from skimage import data

from meshforge.errors import InputError
from meshforge.export import export
from meshforge.export._png import encode_png, encode_pngs


def maps() -> list[np.ndarray]:
    rgb = data.astronaut()  # 512 × 512 × 3 photo
    rgba = np.concatenate([data.coffee()[:400, :512], np.full((400, 512, 1), 255, np.uint8)], axis=2)
    grey = data.camera()
    return [rgb, rgba, grey, rgb[::-1].copy()]


def test_maps_encode_concurrently_into_the_sequential_bytes():
    images = maps()
    flags = [False, True, False, False]
    got = encode_pngs(images, compress_level=3, drop_opaque_alpha=flags)
    want = [encode_png(x, compress_level=3, drop_opaque_alpha=f) for x, f in zip(images, flags, strict=True)]
    assert got == want
    decoded = np.asarray(Image.open(io.BytesIO(got[1])))
    assert decoded.shape == (400, 512, 3) and np.array_equal(decoded, images[1][..., :3])  # opaque alpha dropped
    assert encode_pngs([]) == []


def test_a_bad_map_in_the_batch_is_the_sequential_error():
    images = maps()
    images[2] = images[2].astype(np.float32)
    with pytest.raises(InputError, match="PNG pixels must be uint8, got float32"):
        encode_pngs(images)


def _glb_images(glb: bytes) -> list[bytes]:
    import json

    json_len = struct.unpack_from("<I", glb, 12)[0]
    doc = json.loads(glb[20 : 20 + json_len])
    bin_start = 20 + json_len + 8
    views = doc["bufferViews"]
    return [
        glb[bin_start + views[i["bufferView"]]["byteOffset"] :][: views[i["bufferView"]]["byteLength"]]
        for i in doc["images"]
    ]


def test_glb_images_are_the_maps_in_order(full_textured_asset):
    t = full_textured_asset.textures
    glb = export(full_textured_asset, "glb")
    want = [encode_png(t.base_color, drop_opaque_alpha=True), encode_png(t.metallic_roughness)]
    want += [encode_png(x) for x in (t.normal, t.occlusion) if x is not None]
    assert _glb_images(glb) == want


def test_one_flag_per_map_or_one_for_all():
    images = maps()[:2]
    with pytest.raises(InputError, match="2 pictures but 3 drop_opaque_alpha flags"):
        encode_pngs(images, drop_opaque_alpha=[True, False, False])
    assert encode_pngs(images, drop_opaque_alpha=True) == [encode_png(x, drop_opaque_alpha=True) for x in images]


def test_a_forked_child_encodes_on_its_own_pool():
    import multiprocessing

    images = maps()
    want = encode_pngs(images)  # the parent's pool exists now
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        got = pool.apply(encode_pngs, (images,))
    assert got == want


@pytest.mark.parametrize("level", [0, 1, 3, 9])
def test_png_streams_decode_to_the_pixels(level):
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:96, 0:128]
    smooth = np.stack([x * 2, y * 2, (x + y) % 256], -1).astype(np.uint8)  # long runs of equal filter residuals
    noisy = rng.integers(0, 256, (96, 128, 4), dtype=np.uint8)
    grey = rng.integers(0, 256, (33, 17), dtype=np.uint8)
    for pixels in (smooth, noisy, grey):
        data = encode_png(pixels, compress_level=level)
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)
