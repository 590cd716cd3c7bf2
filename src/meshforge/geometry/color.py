"""sRGB transfer functions (IEC 61966-2-1), the ones glTF 2.0 uses for base colour textures and factors."""

from __future__ import annotations

import numpy as np


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB transfer function, encoded → linear (IEC 61966-2-1; the formula quoted in glTF 2.0 §3.9.2).

    Args:
        c: any shape, float values in [0, 1] (clipped first).

    Returns:
        float32 array of the same shape, linear values in [0, 1].
    """
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    out = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return out.astype(np.float32)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    """sRGB transfer function, linear → encoded (IEC 61966-2-1), the inverse of :func:`srgb_to_linear`.

    Args:
        c: any shape, float values in [0, 1] (clipped first).

    Returns:
        float32 array of the same shape, sRGB-encoded values in [0, 1].
    """
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    out = np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1.0 / 2.4) - 0.055)
    return out.astype(np.float32)
