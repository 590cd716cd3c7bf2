"""TripoSR's picture preprocessing (numpy only): grey compositing and the reference's own framing.

The network was trained on objects composited over 50 % grey. Its reference pipeline (``run.py``) turns an
RGBA cut-out into the network's input in two steps, reproduced here bit for bit:

1. :func:`reference_frame` (the reference's ``resize_foreground``) — only for parity with the reference; the
   meshforge pipeline frames with :func:`meshforge.preprocess.frame` instead.
2. :func:`composite_grey` — straight-alpha "over" onto grey 0.5 in float32, then **truncated** to uint8.
"""

from __future__ import annotations

import numpy as np

__all__ = ["composite_grey", "reference_frame"]


def composite_grey(rgba: np.ndarray) -> np.ndarray:
    """Composite a straight-alpha RGBA picture over grey 0.5 as TripoSR's ``run.py`` does.

    ``a = rgba / 255`` (float32); ``rgb = a.rgb · a.alpha + (1 − a.alpha) · 0.5``; ``uint8(rgb · 255)`` with
    truncation towards zero (rounding instead changes ~40 % of the pixels by one level).

    Args:
        rgba: ``[H, W, 4]`` uint8, sRGB with straight alpha.

    Returns:
        ``[H, W, 3]`` uint8 sRGB.
    """
    if rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"expected [H, W, 4] uint8, got {rgba.shape} {rgba.dtype}")
    a = rgba.astype(np.float32) / np.float32(255.0)
    alpha = a[..., 3:4]
    rgb = a[..., :3] * alpha + (np.float32(1.0) - alpha) * np.float32(0.5)
    return (rgb * np.float32(255.0)).astype(np.uint8)


def reference_frame(rgba: np.ndarray, ratio: float = 0.85) -> np.ndarray:
    """The reference's framing (``resize_foreground``): crop, pad to a square, pad to ``side / ratio``.

    The crop is the bounding box of pixels with alpha > 0 with its **end rows/columns excluded** (the reference's
    ``[y_min:y_max, x_min:x_max]`` with inclusive maxima used as exclusive ends); padding is transparent black,
    centred with the odd pixel at the bottom/right, first to a square of the longer side, then to
    ``int(side / ratio)``. No resampling happens here.

    Args:
        rgba: ``[H, W, 4]`` uint8 with at least one pixel of alpha > 0.
        ratio: the object's longer side as a fraction of the output side.

    Returns:
        ``[N, N, 4]`` uint8.

    Raises:
        ValueError: the picture has no pixel with alpha > 0.
    """
    ys, xs = np.nonzero(rgba[..., 3] > 0)
    if ys.size == 0:
        raise ValueError("the picture has no pixel with alpha > 0")
    crop = rgba[ys.min() : ys.max(), xs.min() : xs.max()]

    def pad_to(img: np.ndarray, side: int) -> np.ndarray:
        h, w = img.shape[:2]
        top, left = (side - h) // 2, (side - w) // 2
        return np.pad(img, ((top, side - h - top), (left, side - w - left), (0, 0)))

    side = max(crop.shape[0], crop.shape[1])
    square = pad_to(crop, side)
    return pad_to(square, int(side / ratio))
