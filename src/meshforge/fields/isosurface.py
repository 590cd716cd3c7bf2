"""Isosurface extraction: field → closed triangle mesh.

Marching cubes (Lorensen & Cline, SIGGRAPH 1987) in the topologically consistent variant of Lewiner et
al. (2003), as implemented by scikit-image (``skimage.measure.marching_cubes``).
"""

from __future__ import annotations

import numpy as np

from ..config import ExtractConfig
from ..errors import InputError, StageError
from ..types import Mesh
from .base import Field, sample_grid


def extract(field: Field, cfg: ExtractConfig) -> Mesh:
    """Extract the ``iso_level`` isosurface of a field on a ``resolution³`` grid.

    The grid spans the field's bounding box (see :func:`~meshforge.fields.base.grid_axes`). Only the
    sub-box holding inside samples is meshed, and it is padded with one layer of outside values, so the
    surface is closed even where the object touches the bounding box.

    Args:
        field: any :class:`~meshforge.fields.base.Field`.
        cfg: ``resolution`` (grid points per axis) and ``engine`` (``"skimage"``).

    Returns:
        A :class:`Mesh` with ``[V, 3]`` float32 vertices in metres and ``[F, 3]`` int32 faces wound
        counter-clockwise seen from outside (outward normals).

    Raises:
        InputError: unknown engine.
        StageError: the field has no inside samples on the grid (empty isosurface).
    """
    if cfg.engine != "skimage":
        raise InputError(f"unknown isosurface engine {cfg.engine!r} (choices: skimage)")
    grid = sample_grid(field, cfg.resolution, cfg.chunk_points)
    return extract_grid(grid, field.bbox_min, field.bbox_max, float(field.iso_level))


def extract_grid(grid: np.ndarray, bbox_min: np.ndarray, bbox_max: np.ndarray, level: float) -> Mesh:
    """Marching cubes on a sampled ``[R, R, R]`` grid (``[i, j, k]`` ↔ ``(x, y, z)``); see :func:`extract`."""
    from skimage.measure import marching_cubes

    res = grid.shape[0]
    inside = grid > level
    if not inside.any():
        raise StageError("the field has no inside samples on the grid: the isosurface is empty")
    lo_idx = np.empty(3, dtype=np.int64)
    hi_idx = np.empty(3, dtype=np.int64)
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        occupied = np.flatnonzero(inside.any(axis=other))
        lo_idx[axis] = max(occupied[0] - 1, 0)
        hi_idx[axis] = min(occupied[-1] + 2, res)
    sub = grid[lo_idx[0] : hi_idx[0], lo_idx[1] : hi_idx[1], lo_idx[2] : hi_idx[2]]
    outside = np.float32(min(level - 1.0, float(sub.min())))
    padded = np.pad(sub, 1, mode="constant", constant_values=outside)
    verts, faces, _, _ = marching_cubes(padded, level=level, allow_degenerate=False, method="lewiner")
    lo = np.asarray(bbox_min, dtype=np.float64)
    hi = np.asarray(bbox_max, dtype=np.float64)
    step = (hi - lo) / (res - 1)
    # padded index p corresponds to grid index p - 1 + lo_idx
    verts = (verts.astype(np.float64) - 1.0 + lo_idx) * step + lo
    # the padding layer lies one step outside the box: clamp the closing caps onto the box's faces
    verts = np.clip(verts, lo, hi)
    # scikit-image winds faces clockwise seen from the higher-valued (inside) side's complement; flip
    # so normals point outward (towards lower density).
    faces = faces[:, ::-1]
    return Mesh(vertices=verts.astype(np.float32), faces=faces.astype(np.int32))
