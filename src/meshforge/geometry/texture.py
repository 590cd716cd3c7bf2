"""Texture sampling with glTF sampler wrap modes (glTF 2.0 §3.8.4), shared by loaders, exporters, bakers
and metrics."""

from __future__ import annotations

import numpy as np

from ..gltf import CLAMP_TO_EDGE, MIRRORED_REPEAT, REPEAT

# glTF 2.0 §3.8.4 sampler wrap modes.
WRAP_MODES = (REPEAT, CLAMP_TO_EDGE, MIRRORED_REPEAT)


def _wrap_index(i: np.ndarray, n: int, mode: int) -> np.ndarray:
    """Map integer texel indices to ``[0, n)`` with a glTF wrap mode (§3.8.4.2)."""
    if mode == CLAMP_TO_EDGE:
        return np.clip(i, 0, n - 1)
    if mode == MIRRORED_REPEAT:
        m = np.mod(i, 2 * n)
        return np.where(m >= n, 2 * n - 1 - m, m)
    return np.mod(i, n)


def sample_texture(image: np.ndarray, uv: np.ndarray, wrap: tuple[int, int] = (REPEAT, REPEAT)) -> np.ndarray:
    """Bilinearly sample a texture at glTF UVs with the sampler's wrap modes (vectorised).

    Texel ``(row i, column j)`` has its centre at ``u = (j + 0.5) / W``, ``v = (i + 0.5) / H`` (glTF UVs:
    origin at the top-left of the image, v down). The four neighbours of a sample are wrapped
    independently, so ``REPEAT`` blends across the opposite edge as a GPU does.

    Args:
        image: ``[H, W, C]`` or ``[H, W]`` array, any numeric dtype.
        uv: ``[N, 2]`` float texture coordinates; non-finite values are treated as 0.
        wrap: ``(wrapS, wrapT)`` glTF sampler constants: :data:`REPEAT` (10497, glTF's default),
            :data:`CLAMP_TO_EDGE` (33071) or :data:`MIRRORED_REPEAT` (33648).

    Returns:
        ``[N, C]`` (or ``[N]``) float64 values in the image's units (0–255 for uint8 images).
    """
    img = np.asarray(image)
    h, w = img.shape[:2]
    uv = np.nan_to_num(np.asarray(uv, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    x = uv[:, 0] * w - 0.5
    y = uv[:, 1] * h - 0.5
    # Reduce huge coordinates first so floor() stays exact (periodic modes only).
    if wrap[0] != CLAMP_TO_EDGE:
        x = np.mod(x, 2.0 * w)
    if wrap[1] != CLAMP_TO_EDGE:
        y = np.mod(y, 2.0 * h)
    x = np.clip(x, -2.0 * w, 4.0 * w)
    y = np.clip(y, -2.0 * h, 4.0 * h)
    x0 = np.floor(x)
    y0 = np.floor(y)
    fx = x - x0
    fy = y - y0
    xi = x0.astype(np.int64)
    yi = y0.astype(np.int64)
    c0, c1 = _wrap_index(xi, w, wrap[0]), _wrap_index(xi + 1, w, wrap[0])
    r0, r1 = _wrap_index(yi, h, wrap[1]), _wrap_index(yi + 1, h, wrap[1])
    if img.ndim == 3:
        fx = fx[:, None]
        fy = fy[:, None]
    top = img[r0, c0] * (1.0 - fx) + img[r0, c1] * fx
    bottom = img[r1, c0] * (1.0 - fx) + img[r1, c1] * fx
    return np.asarray(top * (1.0 - fy) + bottom * fy, dtype=np.float64)
