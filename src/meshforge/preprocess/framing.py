"""Framing: crop to the object, centre it in a square with a margin, resize, and bleed colours outward."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image as PILImage
from scipy import ndimage as ndi

from ..config import PreprocessConfig
from ..errors import InputError
from ..types import Image

__all__ = ["ALPHA_THRESHOLD", "frame", "object_bbox"]

#: A pixel belongs to the object when its alpha is at least this (i.e. alpha > 0.5 * 255).
ALPHA_THRESHOLD = 128


def object_bbox(alpha: np.ndarray, threshold: int = ALPHA_THRESHOLD) -> tuple[int, int, int, int] | None:
    """Bounding box ``(x0, y0, x1, y1)`` (end-exclusive pixels) of ``alpha >= threshold``; None if empty.

    Args:
        alpha: ``[H, W]`` uint8 alpha.
        threshold: the object threshold, :data:`ALPHA_THRESHOLD` (half of 255) by default.
    """
    solid = alpha >= threshold
    rows = np.flatnonzero(solid.any(axis=1))
    if len(rows) == 0:
        return None
    cols = np.flatnonzero(solid.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def frame(image: Image, cfg: PreprocessConfig, size: int) -> Image:
    """Centre the object in a ``size × size`` square, its longer side ``cfg.foreground_ratio`` of the side.

    Steps:

    1. The object is the set of pixels with alpha >= :data:`ALPHA_THRESHOLD` (128, i.e. above half
       opacity); its bounding box is the crop box.
    2. A square window centred on the crop box, of side ``long_side / foreground_ratio`` source pixels, is
       resampled to ``size × size`` (the window may extend past the picture; what lies outside is
       transparent). Resampling uses Pillow's Lanczos filter (antialiased when shrinking) on
       *premultiplied* float colour, so transparent pixels' colours never leak into the object edge;
       the result is un-premultiplied afterwards.
    3. Colour bleeding: every pixel with alpha below the threshold gets the RGB of its nearest object
       pixel (Euclidean distance transform, ``scipy.ndimage.distance_transform_edt`` indices), so
       colour sampled or filtered near the silhouette is always object colour, never background.
       Alpha is unchanged.

    Args:
        image: ``rgba`` ``[H, W, 4]`` uint8 with the object in its alpha (an image without alpha is the
            object edge to edge).
        cfg: ``foreground_ratio`` (in (0, 1]) is read.
        size: output side in pixels (>= 1).

    Returns:
        A new :class:`Image` with ``rgba`` ``[size, size, 4]`` uint8 and ``meta["frame"]`` =
        ``{"crop_box": [x0, y0, x1, y1]`` (source pixels, end-exclusive), ``"scale"`` (output pixels per
        source pixel), ``"offset": [ox, oy]`` (output position of source pixel corner (0, 0), so
        ``out = src * scale + offset``), ``"padding": [left, top, right, bottom]`` (output pixels between
        the scaled crop box and the frame edges), ``"size"``, ``"foreground_ratio"``,
        ``"alpha_threshold"}``.

    Raises:
        InputError: no pixel reaches the alpha threshold (nothing to frame), ``size`` < 1 or
            ``foreground_ratio`` outside (0, 1].
    """
    if size < 1:
        raise InputError(f"frame size must be at least 1 pixel, got {size}")
    ratio = float(cfg.foreground_ratio)
    if not (0.0 < ratio <= 1.0):
        raise InputError(f"foreground ratio must be in (0, 1], got {ratio}")
    alpha8 = image.rgba[..., 3]
    box = object_bbox(alpha8)
    if box is None:
        raise InputError(
            f"{image.name}: nothing to frame: no pixel is more than half opaque (alpha >= {ALPHA_THRESHOLD})"
        )
    x0, y0, x1, y1 = box
    long_side = max(x1 - x0, y1 - y0)
    window = long_side / ratio  # source pixels covered by the output square
    scale = size / window
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    left, top = cx - window / 2.0, cy - window / 2.0  # window corner in source pixels

    # pad the picture so the window lies inside it (Pillow's resize box must stay within the image)
    pad_l = max(0, math.ceil(-left) + 1)
    pad_t = max(0, math.ceil(-top) + 1)
    pad_r = max(0, math.ceil(left + window - image.width) + 1)
    pad_b = max(0, math.ceil(top + window - image.height) + 1)
    box_f = (left + pad_l, top + pad_t, left + pad_l + window, top + pad_t + window)

    # one premultiplied float32 plane at a time: a 40 MP picture needs ~0.5 GB here, not ~2 GB
    alpha = image.rgba[..., 3].astype(np.float32)
    alpha /= 255.0
    channels = []
    for c in range(4):
        if c < 3:
            plane = image.rgba[..., c].astype(np.float32)
            plane /= 255.0
            plane *= alpha
        else:
            plane = alpha
        if pad_l or pad_t or pad_r or pad_b:
            plane = np.pad(plane, ((pad_t, pad_b), (pad_l, pad_r)))
        pil = PILImage.fromarray(plane, mode="F")
        del plane
        channels.append(np.asarray(pil.resize((size, size), PILImage.Resampling.LANCZOS, box=box_f)))
        del pil
    del alpha
    out = np.stack(channels, axis=-1)
    raw = out[..., 3]
    # un-premultiply by the filtered alpha itself (before clipping its Lanczos over/undershoot), so a
    # uniformly coloured object keeps exactly its colour
    color = np.where(raw[..., None] > 1e-4, out[..., :3] / np.maximum(raw, 1e-4)[..., None], 0.0)
    color = np.clip(color, 0.0, 1.0)
    a = np.clip(raw, 0.0, 1.0)
    a[a < 0.5 / 255.0] = 0.0
    rgba8 = np.empty((size, size, 4), dtype=np.uint8)
    rgba8[..., :3] = np.rint(color * 255.0)
    rgba8[..., 3] = np.rint(a * 255.0)
    _bleed(rgba8)

    offset_x, offset_y = -left * scale, -top * scale
    meta = dict(image.meta)
    meta["frame"] = {
        "crop_box": [x0, y0, x1, y1],
        "scale": scale,
        "offset": [offset_x, offset_y],
        "padding": [
            x0 * scale + offset_x,
            y0 * scale + offset_y,
            size - (x1 * scale + offset_x),
            size - (y1 * scale + offset_y),
        ],
        "size": size,
        "foreground_ratio": ratio,
        "alpha_threshold": ALPHA_THRESHOLD,
    }
    return image.replace(rgba=rgba8, meta=meta)


def _bleed(rgba: np.ndarray) -> None:
    """In place: give pixels below the alpha threshold the RGB of their nearest object pixel."""
    solid = rgba[..., 3] >= ALPHA_THRESHOLD
    if solid.all() or not solid.any():
        return
    _, (iy, ix) = ndi.distance_transform_edt(~solid, return_indices=True)
    rgba[..., :3] = rgba[iy, ix, :3]
