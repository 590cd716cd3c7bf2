"""The chart layout as one Triton program (mesh/pack_triton.py) against the host's (pack._layout, exact_rows=0).

Marked ``gpu`` (Triton compiles for CUDA devices only): run on the device, or here with ``TRITON_INTERPRET=1``
(Triton's interpreter on CPU tensors; slow, so the charts are few and small)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from meshforge.mesh import pack, pack_triton

#: TRITON_INTERPRET=1 runs the kernel on CPU tensors (Triton's interpreter), for a check without a GPU
DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
needs_triton = pytest.mark.skipif(
    not pack_triton.AVAILABLE or (DEVICE == "cuda" and not torch.cuda.is_available()),
    reason="needs Triton and a CUDA device (or TRITON_INTERPRET=1)",
)


def _charts(seed: int, resolution: int, n: int, padding: int = 2) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` blob-shaped chart rasters (each touching its box's four sides, as a chart's conservative raster
    does) up to a quarter of ``resolution`` a side, and their dilations by ``padding``."""
    rng = np.random.default_rng(seed)
    real = []
    for _ in range(n):
        h, w = (int(x) for x in rng.integers(3, max(4, resolution // 4), 2))
        yy, xx = np.mgrid[:h, :w]
        blob = ((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2 < 1.0 + rng.uniform(-0.3, 0.3)
        blob[h // 2, :] = True
        blob[:, w // 2] = True
        real.append(blob)
    return real, [pack._dilate(r, padding) for r in real]


@pytest.mark.gpu
@needs_triton
@pytest.mark.parametrize(("seed", "resolution", "n"), [(0, 64, 8), (1, 128, 30), (4, 100, 25)])
def test_the_triton_layout_is_the_hosts(seed, resolution, n):
    """The same height and the same turn and corner of every chart as the host's loop, in two and four quarter
    turns (100 texels: a block grid of 1-texel blocks 100 wide, narrower than the kernel's 128 lanes)."""
    real, dilated = _charts(seed, resolution, n)
    for turns in (2, 4):
        want = pack._layout(real, dilated, resolution, 2, None, 0, turns)
        got = pack_triton.layout_triton(real, dilated, resolution, 2, DEVICE, turns)
        assert got == want and 0 < got[0] < 2 * resolution


@pytest.mark.gpu
@needs_triton
def test_the_triton_layout_says_when_a_chart_finds_no_place():
    """Charts that overflow the strip (twice the square's height: here three rows of one chart): ``inf``, as the
    host says; a chart taller than the square but inside the strip is laid out; one larger than the square in
    both directions is not."""
    square = np.zeros((40, 40), dtype=bool)
    square[2:-2, 2:-2] = True  # a chart's raster in its box, 2 texels of padding around it
    real = [square] * 4
    dilated = [pack._dilate(r, 2) for r in real]
    assert pack._layout(real[:3], dilated[:3], 64, 2, None, 0, 2) == pack_triton.layout_triton(
        real[:3], dilated[:3], 64, 2, DEVICE, 2
    )
    want = pack._layout(real, dilated, 64, 2, None, 0, 2)
    got = pack_triton.layout_triton(real, dilated, 64, 2, DEVICE, 2)
    assert want[0] == got[0] == float("inf")
    tall = [np.ones((70, 10), dtype=bool)]  # taller than the square, inside the strip: laid out, 70 texels tall
    assert pack_triton.layout_triton(tall, tall, 64, 0, DEVICE, 2) == pack._layout(tall, tall, 64, 0, None, 0, 2)
    big = [np.ones((70, 70), dtype=bool)]  # larger than the square either way
    assert pack_triton.layout_triton(big, big, 64, 0, DEVICE, 2)[0] == float("inf")


def test_a_failing_triton_layout_falls_back_to_the_host_once(monkeypatch):
    """A Triton layout that raises (no compiler for its launcher, say) is noted once and the host lays out instead;
    running out of device memory is not such a failure."""
    calls: list[str] = []

    def broken(*args, **kwargs):
        calls.append("triton")
        raise RuntimeError("no C compiler")

    def host(*args, **kwargs):
        calls.append("host")
        return 1.0, []

    monkeypatch.setattr(pack_triton, "AVAILABLE", True)
    monkeypatch.setattr(pack_triton, "layout_triton", broken)
    monkeypatch.setattr(pack, "_layout", host)
    monkeypatch.setattr(pack, "TRITON_FAILURE", None)
    assert pack._layout_on([], [], 64, 2, "cuda:0", 0, 2) == (1.0, [])
    assert "no C compiler" in (pack.TRITON_FAILURE or "")
    assert pack._layout_on([], [], 64, 2, "cuda:0", 0, 2) == (1.0, [])  # not tried again
    assert calls == ["triton", "host", "host"]
    assert pack._layout_on([], [], 64, 2, "cuda:0", 64, 2) == (1.0, [])  # texel-exact charts: the host's anyway

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("out of memory")

    monkeypatch.setattr(pack, "TRITON_FAILURE", None)
    monkeypatch.setattr(pack_triton, "layout_triton", oom)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        pack._layout_on([], [], 64, 2, "cuda:0", 0, 2)
    assert pack.TRITON_FAILURE is None
