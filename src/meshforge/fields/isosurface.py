"""Isosurface extraction: field → closed triangle mesh.

Marching cubes (Lorensen & Cline, SIGGRAPH 1987), by one of these engines:

* ``"skimage"``: the topologically consistent variant of Lewiner et al. (2003), as implemented by
  scikit-image (``skimage.measure.marching_cubes``), on the CPU;
* ``"torch"``: meshforge's own vectorised marching cubes in PyTorch (:mod:`.mc_torch`), on the device that
  holds the grid (a CUDA GPU, or the CPU). Same vertices (same edges, same interpolation); the topology can
  differ only on ambiguous cube faces.
* ``"auto"``: ``"torch"`` when the field hands over its grid as a CUDA tensor, else ``"skimage"``.

A field may provide ``density_grid_tensor(resolution)`` returning the grid as a ``torch.Tensor`` (for instance
on the GPU that computed it); the ``torch``/``auto`` engines then keep it on that device. ``density_grid`` may
also return a tensor; the ``skimage`` engine copies such grids to the host.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import ExtractConfig
from ..errors import InputError, StageError
from ..types import DeviceMesh, Mesh
from .base import DensityGrid, DensityGridTensor, Field, sample_grid

ENGINES = ("skimage", "torch", "auto")


def extract(field: Field, cfg: ExtractConfig, *, on_device: bool = False) -> Mesh | DeviceMesh:
    """Extract the ``iso_level`` isosurface of a field on a ``resolution³`` grid.

    The grid spans the field's bounding box (see :func:`~meshforge.fields.base.grid_axes`). Only the
    sub-box holding inside samples is meshed, and it is padded with one layer of outside values, so the
    surface is closed even where the object touches the bounding box.

    Args:
        field: any :class:`~meshforge.fields.base.Field`.
        cfg: ``resolution`` (grid points per axis) and ``engine`` (``"skimage"``, ``"torch"`` or ``"auto"``).
        on_device: when the torch engine meshes a grid held on a CUDA device, return the surface left there
            (a :class:`~meshforge.types.DeviceMesh`, nothing copied to the host) instead of a host mesh.

    Returns:
        A :class:`Mesh` with ``[V, 3]`` float32 vertices in metres and ``[F, 3]`` int32 faces wound
        counter-clockwise seen from outside (outward normals); with ``on_device`` and a CUDA grid, a
        :class:`~meshforge.types.DeviceMesh` of the same surface (``[F, 3]`` int64 faces).

    Raises:
        InputError: unknown engine.
        StageError: the field has no inside samples on the grid (empty isosurface).
    """
    if cfg.engine not in ENGINES:
        raise InputError(f"unknown isosurface engine {cfg.engine!r} (choices: {', '.join(ENGINES)})")
    grid = _field_grid(field, cfg, want_tensor=cfg.engine != "skimage")
    level = float(field.iso_level)
    use_torch = cfg.engine == "torch" or (cfg.engine == "auto" and _is_tensor(grid) and grid.is_cuda)
    if use_torch:
        keep = on_device and _is_tensor(grid) and grid.is_cuda
        return extract_grid_torch(grid, field.bbox_min, field.bbox_max, level, on_device=keep)
    if _is_tensor(grid):
        grid = grid.detach().float().cpu().numpy()
    return extract_grid(grid, field.bbox_min, field.bbox_max, level)


def _is_tensor(value: Any) -> bool:
    """True for a ``torch.Tensor`` (checked without importing torch)."""
    return type(value).__module__.startswith("torch") and hasattr(value, "is_cuda")


def _field_grid(field: Field, cfg: ExtractConfig, *, want_tensor: bool) -> Any:
    """The field's ``[R, R, R]`` density grid: a tensor from ``density_grid_tensor`` when a tensor is wanted and
    the field has one, else ``density_grid`` (numpy or tensor) or the generic :func:`sample_grid` (numpy)."""
    res = cfg.resolution
    if want_tensor and isinstance(field, DensityGridTensor):
        out = field.density_grid_tensor(res)
        if tuple(out.shape) != (res,) * 3:
            raise ValueError(f"density_grid_tensor returned {tuple(out.shape)}, expected {(res,) * 3}")
        return out
    if isinstance(field, DensityGrid):
        out = field.density_grid(res)
        if tuple(out.shape) != (res,) * 3:
            raise ValueError(f"density_grid returned {tuple(out.shape)}, expected {(res,) * 3}")
        return out if _is_tensor(out) else np.asarray(out, dtype=np.float32)
    return sample_grid(field, res, cfg.chunk_points)


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


def extract_grid_torch(
    grid: Any, bbox_min: np.ndarray, bbox_max: np.ndarray, level: float, *, on_device: bool = False
) -> Mesh | DeviceMesh:
    """:func:`extract_grid` with the PyTorch engine on the grid's device (a tensor or a numpy array).

    The mesh is built on the grid's device (:func:`.mc_torch.extract_closed`) and copied to the host at the end,
    or with ``on_device`` left there as a :class:`~meshforge.types.DeviceMesh`.
    """
    import torch

    from .mc_torch import extract_closed, to_host

    tensor = grid if isinstance(grid, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(grid))
    out = extract_closed(tensor.detach(), bbox_min, bbox_max, level)
    if out is None:
        raise StageError("the field has no inside samples on the grid: the isosurface is empty")
    if on_device:
        return DeviceMesh(out[0], out[1])
    verts, faces = to_host(out[0], out[1])
    return Mesh(vertices=verts, faces=faces)
