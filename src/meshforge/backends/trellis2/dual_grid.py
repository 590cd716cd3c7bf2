"""Flexible dual grid → triangle mesh: how TRELLIS.2's shape decoder output becomes a surface.

TRELLIS.2's shape decoder (the "FDG" sparse-convolution VAE decoder) predicts, for every active voxel of a
``grid_size³`` grid over the box ``aabb``:

- a *dual vertex*: a point inside (or slightly outside, by the decoder's voxel margin) the voxel, as an
  offset in voxel units from the voxel's minimum corner;
- three *intersection flags*: whether the surface crosses the primal grid edge owned by the voxel along
  x, y and z. Voxel ``(i, j, k)`` spans ``[i, i+1] × [j, j+1] × [k, k+1]`` (voxel units); the edge it
  owns along an axis is the one through its corner that is maximal in the two *other* axes, e.g. along x
  the edge ``(i, j+1, k+1) → (i+1, j+1, k+1)``. The four voxels around that edge are the owner and its
  neighbours at the offsets :data:`QUAD_NEIGHBOURS`;
- a positive *quad split weight* (``quad_lerp``) choosing the diagonal along which each quad is cut.

Every flagged edge whose four surrounding voxels are all active becomes a quad of their dual vertices
(dual contouring, Ju et al. 2002, on TRELLIS.2's "flexible dual grid", TRELLIS.2 2025), cut into two
triangles along the diagonal whose end points have the larger product of split weights.

Winding: the quad's corner order is fixed per axis (it follows :data:`QUAD_NEIGHBOURS`), so, as in the
reference, the faces of an x-quad always face −x, of a y-quad −y, of a z-quad −z, whichever side of the
edge is inside — the flags carry no sign. Half of a closed surface therefore comes out wound inwards;
``orient=True`` (or the pipeline's clean stage) makes the winding consistent and outward.

The reference (``o_voxel.convert.flexible_dual_grid_to_mesh``, inference path) looks the neighbours up in a
CUDA open-addressing hash map; here the active voxels are indexed by sorting their linearised coordinates
and looked up with ``torch.searchsorted`` (:class:`CoordinateIndex`), on any device, with no compiled code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

#: per axis (x, y, z), the four voxels around the primal edge a voxel owns, as offsets from the owner, in the
#: order the quad's corners are wound (the reference's order: its faces face −axis)
QUAD_NEIGHBOURS: tuple[tuple[tuple[int, int, int], ...], ...] = (
    ((0, 0, 0), (0, 0, 1), (0, 1, 1), (0, 1, 0)),
    ((0, 0, 0), (1, 0, 0), (1, 0, 1), (0, 0, 1)),
    ((0, 0, 0), (0, 1, 0), (1, 1, 0), (1, 0, 0)),
)
#: a quad ``(q0, q1, q2, q3)`` cut along its 0–2 diagonal, as two triangles of quad-corner slots
SPLIT_ALONG_02: tuple[int, ...] = (0, 1, 2, 0, 2, 3)
#: the same quad cut along its 1–3 diagonal
SPLIT_ALONG_13: tuple[int, ...] = (0, 1, 3, 3, 1, 2)


class CoordinateIndex:
    """Row lookup of integer voxel coordinates: a sorted-key stand-in for a GPU coordinate hash map.

    Each coordinate ``(x, y, z)`` inside the grid becomes the key ``(x·Y + y)·Z + z`` (int64); the keys are
    sorted once (stable) and queries are answered by binary search (``torch.searchsorted``). Works on any
    device the tensors live on, vectorised.

    Args:
        coords: ``[M, 3]`` integer coordinates, each in ``[0, grid_shape)``.
        grid_shape: ``(X, Y, Z)`` grid size.

    Raises:
        ValueError: ``coords`` is not ``[M, 3]`` integers, or a coordinate lies outside the grid.

    Notes:
        With repeated coordinates the first row holding them is returned (stable sort); the reference's hash
        map keeps whichever insertion wins, so coordinates should be unique (decoder outputs are).
    """

    def __init__(self, coords: torch.Tensor, grid_shape: Sequence[int]) -> None:
        if coords.ndim != 2 or coords.shape[1] != 3 or coords.dtype.is_floating_point:
            raise ValueError(f"coords must be [M, 3] integers, got {tuple(coords.shape)} {coords.dtype}")
        self.shape = tuple(int(s) for s in grid_shape)
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"grid_shape must be 3 positive sizes, got {grid_shape}")
        self._dims = torch.tensor(self.shape, dtype=torch.int64, device=coords.device)
        c = coords.to(torch.int64)
        if c.numel() and bool(((c < 0) | (c >= self._dims)).any()):
            raise ValueError(f"coordinates outside the {self.shape} grid")
        self._keys, self._rows = torch.sort(self._linear(c), stable=True)

    def _linear(self, c: torch.Tensor) -> torch.Tensor:
        return (c[..., 0] * self.shape[1] + c[..., 1]) * self.shape[2] + c[..., 2]

    def lookup(self, query: torch.Tensor) -> torch.Tensor:
        """Rows of the given coordinates.

        Args:
            query: ``[..., 3]`` integer coordinates (any, also outside the grid).

        Returns:
            ``[...]`` int64 row indices into ``coords``; −1 where the coordinate is not stored or lies outside
            the grid (as the reference's bounds-checked lookup).
        """
        q = query.to(torch.int64)
        inside = ((q >= 0) & (q < self._dims)).all(dim=-1)
        if self._keys.numel() == 0:
            return torch.full(q.shape[:-1], -1, dtype=torch.int64, device=q.device)
        key = torch.where(inside, self._linear(q), -1)
        pos = torch.searchsorted(self._keys, key.reshape(-1)).clamp_max_(self._keys.numel() - 1).reshape(key.shape)
        hit = inside & (self._keys[pos] == key)
        return torch.where(hit, self._rows[pos], -1)


def _as_aabb(aabb: Any, device: torch.device) -> torch.Tensor:
    box = torch.as_tensor(np.asarray(aabb, dtype=np.float32) if not torch.is_tensor(aabb) else aabb)
    box = box.to(device=device, dtype=torch.float32)
    if box.shape != (2, 3):
        raise ValueError(f"aabb must be [[x0, y0, z0], [x1, y1, z1]], got shape {tuple(box.shape)}")
    return box


def _as_grid_size(grid_size: Any, device: torch.device) -> torch.Tensor:
    if isinstance(grid_size, int | np.integer):
        grid_size = [int(grid_size)] * 3
    size = torch.as_tensor(np.asarray(grid_size) if not torch.is_tensor(grid_size) else grid_size)
    size = size.to(device=device, dtype=torch.int32).reshape(-1)
    if size.shape != (3,) or bool((size < 1).any()):
        raise ValueError(f"grid_size must be a positive int or 3 positive ints, got {grid_size}")
    return size


def flexible_dual_grid_to_mesh(
    coords: torch.Tensor,
    dual_vertices: torch.Tensor,
    intersected: torch.Tensor,
    quad_lerp: torch.Tensor | None,
    aabb: Any = ((-0.5, -0.5, -0.5), (0.5, 0.5, 0.5)),
    grid_size: int | Sequence[int] | torch.Tensor = 256,
    *,
    orient: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triangulate a flexible dual grid (TRELLIS.2's decoded shape) into a mesh.

    Follows ``o_voxel.convert.flexible_dual_grid_to_mesh(..., train=False)`` (TRELLIS.2, 2025): vertex
    ``i`` is ``(coords[i] + dual_vertices[i]) · voxel_size + aabb[0]`` with ``voxel_size = (aabb[1] −
    aabb[0]) / grid_size`` (float32, the reference's order of operations), one per active voxel (unused ones
    included, so vertex ``i`` is voxel ``i``); every flagged edge whose four voxels (:data:`QUAD_NEIGHBOURS`)
    are all active gives a quad, cut into the triangles :data:`SPLIT_ALONG_02` when ``w[q0]·w[q2] >
    w[q1]·w[q3]`` (``w = quad_lerp``), else :data:`SPLIT_ALONG_13`. Faces come in the reference's order:
    quads by (voxel row, axis), two triangles each; winding as the reference (see the module docstring)
    unless ``orient``.

    Args:
        coords: ``[M, 3]`` integer voxel indices ``(x, y, z)`` in ``[0, grid_size)`` (unique).
        dual_vertices: ``[M, 3]`` float dual-vertex offsets inside each voxel, voxel units (the decoder's
            ``(1 + 2·margin)·sigmoid(h) − margin``).
        intersected: ``[M, 3]`` bool, per axis whether the edge the voxel owns crosses the surface (the
            decoder's ``logits > 0``).
        quad_lerp: ``[M, 1]`` (or ``[M]``) positive split weights (the decoder's ``softplus(h)``); compared
            in their own dtype. ``None`` uses the reference's angle rule, which as written there always
            picks :data:`SPLIT_ALONG_02` for non-degenerate quads (its second candidate's normals use a
            repeated corner and vanish); that quirk is kept.
        aabb: ``[2, 3]`` box the grid spans (TRELLIS.2: ``[[-0.5]*3, [0.5]*3]``), its frame is the output's.
        grid_size: voxels per axis, one int or three.
        orient: make the winding consistent and outward per connected component
            (:func:`meshforge.mesh.clean.orient_faces`, on the CPU) instead of the reference's fixed one.

    Returns:
        ``(vertices, faces)``: ``[M, 3]`` float32 positions in the ``aabb`` frame and ``[F, 3]`` int64
        vertex indices, on ``coords``' device.

    Raises:
        ValueError: mismatched shapes, a bad ``aabb``/``grid_size``, or coordinates outside the grid.

    Notes:
        The number of faces depends on the data (boolean selections), so the function cannot run on the
        ``meta`` device. Memory is about ``Q · 4 · 3`` int64 for ``Q`` flagged edges (the neighbour lookups).
    """
    device = coords.device
    n = int(coords.shape[0])
    if coords.ndim != 2 or coords.shape[1] != 3:
        raise ValueError(f"coords must be [M, 3], got {tuple(coords.shape)}")
    if dual_vertices.shape != (n, 3) or intersected.shape != (n, 3):
        raise ValueError(
            f"dual_vertices {tuple(dual_vertices.shape)} and intersected {tuple(intersected.shape)} must be [{n}, 3]"
        )
    if quad_lerp is not None and (quad_lerp.numel() != n or quad_lerp.shape[0] != n):
        raise ValueError(f"quad_lerp must be [{n}, 1], got {tuple(quad_lerp.shape)}")
    box = _as_aabb(aabb, device)
    size = _as_grid_size(grid_size, device)
    voxel_size = (box[1] - box[0]) / size
    vertices = (coords.to(torch.float32) + dual_vertices.to(torch.float32)) * voxel_size + box[0].reshape(1, 3)

    index = CoordinateIndex(coords, size.tolist())
    owner, axis = intersected.to(torch.bool).nonzero(as_tuple=True)  # row-major: (voxel, axis) order
    offsets = torch.tensor(QUAD_NEIGHBOURS, dtype=torch.int64, device=device)  # [3, 4, 3]
    around = coords.to(torch.int64)[owner].unsqueeze(1) + offsets[axis]  # [Q, 4, 3]
    rows = index.lookup(around)  # [Q, 4]
    quads = rows[(rows >= 0).all(dim=1)]  # [L, 4]

    split_02 = torch.tensor(SPLIT_ALONG_02, dtype=torch.int64, device=device)
    split_13 = torch.tensor(SPLIT_ALONG_13, dtype=torch.int64, device=device)
    if quad_lerp is None:
        along_02 = _angle_rule(vertices, quads[:, split_02], quads[:, split_13])
    else:
        w = quad_lerp.reshape(n)[quads]  # [L, 4]
        along_02 = w[:, 0] * w[:, 2] > w[:, 1] * w[:, 3]
    faces = torch.where(along_02.unsqueeze(1), quads[:, split_02], quads[:, split_13]).reshape(-1, 3)
    if orient and faces.shape[0]:
        faces = _orient(vertices, faces)
    return vertices, faces


def _angle_rule(vertices: torch.Tensor, cand_02: torch.Tensor, cand_13: torch.Tensor) -> torch.Tensor:
    """The reference's ``split_weight is None`` rule: per candidate, the |dot| of two normals made from the
    candidate's first four triangle-list slots; the 0–2 cut wins when its value is larger."""

    def agreement(t: torch.Tensor) -> torch.Tensor:
        p = [vertices[t[:, s]] for s in range(4)]
        n0 = torch.linalg.cross(p[1] - p[0], p[2] - p[0], dim=-1)
        n1 = torch.linalg.cross(p[2] - p[1], p[3] - p[1], dim=-1)
        return (n0 * n1).sum(dim=1).abs()

    return agreement(cand_02) > agreement(cand_13)


def _orient(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    from ...mesh.clean import orient_faces
    from ...types import Mesh

    mesh = Mesh(vertices=vertices.detach().cpu().numpy(), faces=faces.cpu().numpy())
    oriented, _ = orient_faces(mesh)
    return torch.from_numpy(oriented.faces.astype(np.int64)).to(faces.device)
