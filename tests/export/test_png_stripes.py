"""Our PNG encoder (Paeth rows, zlib stripes joined into one stream) against the spec and against Pillow's."""

from __future__ import annotations

import io
import itertools
import zlib

import numpy as np
import pytest
from PIL import Image
from skimage import data

from meshforge.export._png import (
    MAX_STRIPES,
    adler32_combine,
    encode_png,
    encode_png_pillow,
    encode_pngs,
    paeth_filter,
    stripes,
)


def _decode(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    image.load()  # a truncated or corrupt stream raises here
    return np.asarray(image)


def _paeth_reference(rows: np.ndarray, above: np.ndarray, channels: int) -> np.ndarray:
    """PNG spec §9.4, byte by byte."""
    out = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
    for y in range(rows.shape[0]):
        out[y, 0] = 4
        for x in range(rows.shape[1]):
            a = int(rows[y, x - channels]) if x >= channels else 0
            b = int(above[y, x])
            c = int(above[y, x - channels]) if x >= channels else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
            out[y, x + 1] = (int(rows[y, x]) - pred) % 256
    return out


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_the_paeth_filter_is_the_specs_predictor(channels):
    rng = np.random.default_rng(channels)
    rows = rng.integers(0, 256, (5, 7 * channels), dtype=np.uint8)
    above = rng.integers(0, 256, (5, 7 * channels), dtype=np.uint8)
    rows[2] = above[2]  # ties: b − c = a − c paths
    assert np.array_equal(paeth_filter(rows, above, channels), _paeth_reference(rows, above, channels))


def test_adler32_combine_is_the_checksum_of_the_concatenation():
    rng = np.random.default_rng(3)
    for n1, n2 in [(0, 0), (0, 9), (11, 0), (1, 65520), (65521, 3), (200_000, 131_073)]:
        x = rng.integers(0, 256, n1, dtype=np.uint8).tobytes()
        y = rng.integers(0, 256, n2, dtype=np.uint8).tobytes()
        assert adler32_combine(zlib.adler32(x), zlib.adler32(y), len(y)) == zlib.adler32(x + y)


def test_stripes_cover_the_rows_and_depend_on_the_size_only():
    assert stripes(1, 10) == [(0, 1)]
    assert stripes(1024, 1 + 1024 * 3) == stripes(1024, 1 + 1024 * 3)
    for height, row in [(1024, 1 + 3 * 1024), (2048, 1 + 3 * 2048), (3, 1 << 22), (512, 1 + 512)]:
        spans = stripes(height, row)
        assert spans[0][0] == 0 and spans[-1][1] == height
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in itertools.pairwise(spans))
        assert 1 <= len(spans) <= MAX_STRIPES
    assert len(stripes(1024, 1 + 3 * 1024)) == 6 and len(stripes(2048, 1 + 3 * 2048)) == MAX_STRIPES


def _pictures() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:1024, 0:768]
    smooth = np.stack([x // 3, y // 4, (x + y) // 7], -1).astype(np.uint8)
    noisy = rng.integers(0, 256, (700, 640, 4), dtype=np.uint8)
    grey = np.tile(data.camera(), (4, 1))  # 2048 × 512
    return [data.astronaut(), smooth, noisy, grey]


def test_striped_pictures_decode_to_their_pixels_and_pool_bytes_equal_sequential():
    pictures = _pictures()
    assert all(len(stripes(p.shape[0], 1 + p[0].size)) > 1 for p in pictures[1:])  # several stripes each
    pooled = encode_pngs(pictures)
    for pixels, png in zip(pictures, pooled, strict=True):
        assert png == encode_png(pixels)
        assert np.array_equal(_decode(png), pixels)
        assert np.array_equal(_decode(png), _decode(encode_png_pillow(pixels)))


def test_our_files_are_about_pillows_size():
    # Paeth on every row against Pillow's adaptive filters: the same picture within a few per cent
    for pixels in _pictures()[:2]:
        ours, pillow = len(encode_png(pixels)), len(encode_png_pillow(pixels))
        assert 0.9 * pillow < ours < 1.1 * pillow, (ours, pillow)


def test_a_stripe_that_fails_fails_its_picture_only(monkeypatch):
    from meshforge.export import _png

    real = _png._deflate_stripe
    calls = {"n": 0}

    def flaky(flat, r0, r1, channels, level, last):
        calls["n"] += 1
        if flat.shape[1] == 700 and r0 > 0:  # the second picture's later stripes
            raise MemoryError("stripe")
        return real(flat, r0, r1, channels, level, last)

    monkeypatch.setattr(_png, "_deflate_stripe", flaky)
    good = np.zeros((1024, 1024, 3), np.uint8)
    bad = np.zeros((2048, 700), np.uint8)
    futures = _png.submit_pngs([good, bad])
    assert np.array_equal(_decode(futures[0].result()), good)
    with pytest.raises(MemoryError, match="stripe"):
        futures[1].result()
