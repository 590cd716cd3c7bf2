"""Texture baking in PyTorch: the device-agnostic twin of :func:`meshforge.mesh.bake.bake`.

Same inputs, same outputs, same semantics; every per-texel step is a tensor operation on the device of
the computation (``device``), so the same code runs on CPU tensors (tests, reference) and on CUDA:

1. **Atlas rasterisation** (:mod:`meshforge.gpu.raster`): each texel centre's low-poly triangle and
   barycentrics, its 3D point and interpolated normal.
2. **Projection onto the dense surface** (when the field is a
   :class:`~meshforge.fields.surface.SurfaceField`), mirroring :meth:`SurfaceField.project`: a ray both ways
   along the low-poly normal, limited to the cage, the nearer *front-facing* hit winning; texels whose
   rays miss take the exact closest point; each low-poly triangle's texels agree on one source part. Rays
   and closest points go through a uniform grid of dense triangle ids (:class:`TriangleGrid`, built with
   sort + ``searchsorted``): rays walk the grid cell by cell (Amanatides & Woo, "A fast voxel traversal
   algorithm for ray tracing", Eurographics 1987) testing triangles with Möller & Trumbore ("Fast,
   minimum storage ray/triangle intersection", JGT 1997); closest points search growing shells of cells
   with the exact point–triangle distance (Ericson, *Real-Time Collision Detection*, 2005, §5.1.5).
3. **Field query**: the source's attributes at the dense points, on the device for the parts
   :mod:`meshforge.gpu.sample` mirrors (a loaded :class:`~meshforge.io.scene.SourcePart`: textures, factors,
   vertex colours, normal maps; a :class:`~meshforge.fields.surface.FieldSurfacePart` whose field has
   ``color_tensor``, TripoSR's) and a field with ``pbr_tensor``
   (:class:`~meshforge.fields.base.PBRAttributes`: TRELLIS.2's sparse PBR voxels, every channel from one
   lookup). Other parts, other ``bake_attributes`` fields and plain :class:`~meshforge.fields.base.Field`
   methods take numpy arrays: each chunk of texels is copied to the host once for that call and its results
   copied back.
4. **Tangent-space normal map** from the dense shading normals in the low-poly tangent frame (the tangents
   the GLB writer stores, :func:`meshforge.geometry.tangents.asset_tangents`, glTF 2.0 §3.7.2.1).
5. **Seam dilation** by the jump flooding algorithm (Rong & Tan, "Jump flooding in GPU with applications to
   Voronoi diagram and distance transform", I3D 2006, with the two extra passes of "JFA+2"): every texel no
   triangle covers takes the value of (very nearly) the nearest covered texel, as the CPU path's exact
   Euclidean distance transform gives.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..config import BakeConfig
from ..errors import StageError, one_line
from ..fields.base import Field, PBRAttributes, SurfaceAttributes, has_real_alpha, sample_pbr
from ..fields.surface import SurfaceField
from ..geometry.raster import DILATION_TEXELS
from ..geometry.tangents import asset_tangents
from ..threads import SMALL_POOL_THREADS, LazyThreadPool
from ..types import Mesh, Textures
from . import flood_triton
from .raster import TorchRaster, rasterize_atlas, texel_points
from .sample import TorchFieldPart, sample_parts, sample_pbr_tensor, torch_part

_log = logging.getLogger(__name__)

#: on a CUDA device with Triton (atlases up to 2048²), the seam dilation's jump flooding runs one kernel per step
#: (:func:`~meshforge.gpu.flood_triton.jump_flood_triton`); False: always the torch reference (:func:`jump_flood`)
TRITON_FLOOD = True
#: why the Triton jump flooding could not run in this process (compile or launch failure); None while it works
TRITON_FLOOD_FAILURE: str | None = None

#: candidate (query, triangle) pairs tested per batch: bounds memory (~300 bytes each in float64)
PAIR_BUDGET = 1 << 22
#: default cell edge of :class:`TriangleGrid`, in median triangle bounding-box sizes (a tuning knob: smaller
#: cells mean fewer triangles per cell but more cells per ray)
CELL_SCALE = 1.0


# --------------------------------------------------------------------------------------------------------
# exact geometric predicates
# --------------------------------------------------------------------------------------------------------
def _dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x * y).sum(-1)


def closest_point_on_triangles(
    p: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Closest points on triangles ``(a, b, c)`` to points ``p`` (Ericson 2005, §5.1.5), vectorised; the torch
    twin of :func:`meshforge.geometry.closest.closest_point_on_triangles` (same region order, same
    degenerate-triangle handling).

    Args:
        p, a, b, c: ``[N, 3]`` float tensors (one query point per triangle).

    Returns:
        ``(closest [N, 3], bary [N, 3])`` in the inputs' dtype.
    """
    ab, ac, ap = b - a, c - a, p - a
    bp, cp = p - b, p - c
    d1, d2 = _dot(ab, ap), _dot(ac, ap)
    d3, d4 = _dot(ab, bp), _dot(ac, bp)
    d5, d6 = _dot(ab, cp), _dot(ac, cp)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    zero, one = torch.zeros_like(d1), torch.ones_like(d1)
    denom = va + vb + vc
    v = vb / denom
    w = vc / denom
    bary = torch.stack([1.0 - v - w, v, w], 1)

    def put(mask: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return torch.where(mask[:, None], value, bary)

    t = (d4 - d3) / ((d4 - d3) + (d5 - d6))
    bary = put((va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0), torch.stack([zero, 1.0 - t, t], 1))  # edge BC
    t = d2 / (d2 - d6)
    bary = put((vb <= 0) & (d2 >= 0) & (d6 <= 0), torch.stack([1.0 - t, zero, t], 1))  # edge AC
    bary = put((d6 >= 0) & (d5 <= d6), torch.stack([zero, zero, one], 1))  # vertex C
    t = d1 / (d1 - d3)
    bary = put((vc <= 0) & (d1 >= 0) & (d3 <= 0), torch.stack([1.0 - t, t, zero], 1))  # edge AB
    bary = put((d3 >= 0) & (d4 <= d3), torch.stack([zero, one, zero], 1))  # vertex B
    bary = put((d1 <= 0) & (d2 <= 0), torch.stack([one, zero, zero], 1))  # vertex A
    bad = ~torch.isfinite(bary).all(1)
    if bool(bad.any()):  # fully degenerate leftovers: the nearest vertex
        dist = torch.stack([torch.linalg.norm(x - p, dim=1) for x in (a, b, c)], 1)
        eye = torch.eye(3, dtype=bary.dtype, device=bary.device)
        bary = torch.where(bad[:, None], eye[dist.argmin(1)], bary)
    bary = bary.clamp(0.0, 1.0)
    closest = bary[:, 0:1] * a + bary[:, 1:2] * b + bary[:, 2:3] * c
    return closest, bary


def ray_triangles(
    o: torch.Tensor, d: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, eps: float = 1e-9
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ray–triangle intersection (Möller & Trumbore 1997), both faces, one ray per triangle.

    Args:
        o, d: ``[N, 3]`` ray origins and directions; a, b, c: ``[N, 3]`` triangle corners.
        eps: tolerance on the barycentric tests, so rays through a shared edge hit one of its triangles.

    Returns:
        ``(t [N], u [N], v [N])``: the ray parameter of the hit (``inf`` on a miss or behind the origin)
        and its barycentrics (hit = (1 − u − v)·a + u·b + v·c).
    """
    e1, e2 = b - a, c - a
    pvec = torch.cross(d, e2, dim=1)
    det = _dot(e1, pvec)
    inv = 1.0 / det
    tvec = o - a
    u = _dot(tvec, pvec) * inv
    qvec = torch.cross(tvec, e1, dim=1)
    v = _dot(d, qvec) * inv
    t = _dot(e2, qvec) * inv
    ok = torch.isfinite(t) & (u >= -eps) & (v >= -eps) & (u + v <= 1.0 + eps) & (t >= 0)
    return torch.where(ok, t, torch.full_like(t, float("inf"))), u, v


def _expand(count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``count [M]`` → (row ``[sum]``, k ``[sum]``): every (row, 0 ≤ k < count[row]) pair, row-major."""
    row = torch.repeat_interleave(torch.arange(count.numel(), device=count.device), count)
    first = torch.cumsum(count, 0) - count
    k = torch.arange(row.numel(), device=count.device) - first[row]
    return row, k


def _argmin_rows(rows: torch.Tensor, values: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per group: the smallest value and the first pair holding it (deterministic on every device).

    Returns:
        ``(best [n], pick [n])``: ``inf`` and −1 for groups with no finite value.
    """
    best = torch.full((n,), float("inf"), dtype=values.dtype, device=values.device)
    best.scatter_reduce_(0, rows, values, reduce="amin", include_self=True)
    cand = torch.isfinite(values) & (values == best[rows])
    big = rows.numel()
    pick = torch.full((n,), big, dtype=torch.int64, device=values.device)
    idx = torch.arange(rows.numel(), device=values.device)
    pick.scatter_reduce_(0, rows[cand], idx[cand], reduce="amin", include_self=True)
    return best, torch.where(pick < big, pick, torch.full_like(pick, -1))


#: a ray-cast pass walks ``min(_MAX_STEPS, _STEP_CELLS // rays)`` cells per ray (one while many rays are active)
_STEP_CELLS = 1 << 16
_MAX_STEPS = 64


def _walk(
    cell: torch.Tensor, t_next: torch.Tensor, t_delta: torch.Tensor, step: torch.Tensor, steps: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The next ``steps`` cells of grid walks (Amanatides & Woo 1987) at once, from each ray's current cell.

    The walk crosses a cell wall of axis ``a`` at ``t_next[a] + j·t_delta[a]`` (j = 0, 1, …): the first
    ``steps − 1`` of those crossings, in order (ties: x, then y, then z, as ``min`` picks), give the cells.

    Args:
        cell: ``[N, 3]`` int64 current cells; t_next: ``[N, 3]`` float64 ray parameter of the next wall per axis;
        t_delta: ``[N, 3]`` parameter between walls (``inf`` along an axis the ray does not move on);
        step: ``[N, 3]`` int64 −1, 0 or +1.

    Returns:
        ``(cells [N·steps, 3]`` ray-major, the current cell first; ``last [N, 3]`` the last of them;
        ``t_last [N, 3]`` the next walls' parameters from there).
    """
    if steps == 1:
        return cell, cell, t_next
    n = cell.shape[0]
    j = torch.arange(steps - 1, device=cell.device, dtype=t_next.dtype)
    # (j = 0 added alone: 0 · inf would be nan)
    times = t_next[:, :, None] + torch.where(j > 0, t_delta[:, :, None] * j, torch.zeros_like(j))
    order = torch.sort(times.reshape(n, -1), dim=1, stable=True)[1][:, : steps - 1]
    crossed = torch.nn.functional.one_hot(torch.div(order, steps - 1, rounding_mode="floor"), 3)
    moved = torch.cumsum(crossed, 1) * step[:, None, :]
    cells = torch.cat([cell[:, None, :], cell[:, None, :] + moved], 1).reshape(-1, 3)
    used = crossed.sum(1)
    t_last = torch.where(used > 0, t_next + used * t_delta, t_next)
    return cells, cells.view(n, steps, 3)[:, -1], t_last


def _batches(weights: torch.Tensor, budget: int) -> list[tuple[int, int]]:
    """Split ``range(len(weights))`` into consecutive slices whose weights sum to at most ``budget`` (a slice
    holds at least one item)."""
    cum = torch.cumsum(weights, 0).cpu()
    out, start, n = [], 0, int(weights.numel())
    while start < n:
        base = int(cum[start - 1]) if start > 0 else 0
        stop = max(int(torch.searchsorted(cum, torch.tensor(base + budget), right=True)), start + 1)
        out.append((start, stop))
        start = stop
    return out


# --------------------------------------------------------------------------------------------------------
# the voxel hash of the dense triangles
# --------------------------------------------------------------------------------------------------------
class TriangleGrid:
    """A uniform grid of triangle ids (a "voxel hash" stored as a sorted list), for ray casts and closest points.

    Each triangle is listed in every cell its bounding box overlaps; the (cell key, triangle) list is sorted
    by key (``torch.sort``) and cells are found with ``torch.searchsorted`` over the distinct keys, so only
    occupied cells take memory. The cell edge is :data:`CELL_SCALE` median triangle bounding-box sizes, grown until
    the list has at most ``max(16·F, 2²⁰)`` entries and the grid at most 2048 cells per axis.

    Args:
        vertices: ``[V, 3]`` float tensor (metres; its device holds the grid; computed in float64).
        faces: ``[F, 3]`` int tensor.
        cell: cell edge in metres (default: the rule above).
        part_of_face: ``[F]`` int64 part index of each face (for casts restricted to one part).

    Attributes:
        v: ``[V, 3]`` float64; f: ``[F, 3]`` int64; h: cell edge; origin ``[3]``; dims ``[3]`` int64.
    """

    def __init__(
        self,
        vertices: torch.Tensor,
        faces: torch.Tensor,
        *,
        cell: float | None = None,
        part_of_face: torch.Tensor | None = None,
    ) -> None:
        self.v = vertices.to(torch.float64)
        self.f = faces.to(torch.int64)
        dev = self.v.device
        self.part_of_face = part_of_face
        n_faces = int(self.f.shape[0])
        if n_faces == 0:
            raise StageError("the dense surface has no faces")
        tri = self.v[self.f]
        lo, hi = tri.amin(1), tri.amax(1)
        self.origin = lo.amin(0)
        extent = torch.clamp(hi.amax(0) - self.origin, min=1e-12)
        h = float(cell) if cell else CELL_SCALE * float((hi - lo).amax(1).median())
        h = max(h, float(extent.max()) / 2048.0, 1e-12)
        budget = max(16 * n_faces, 1 << 20)
        while True:
            dims = torch.floor(extent / h).long() + 1
            c0 = torch.minimum(torch.floor((lo - self.origin) / h).long().clamp(min=0), dims - 1)
            c1 = torch.minimum(torch.floor((hi - self.origin) / h).long().clamp(min=0), dims - 1)
            size = c1 - c0 + 1
            n_cells = size.prod(1)
            if cell or int(n_cells.sum()) <= budget:
                break
            h *= 1.5
        self.h = h
        self.dims = dims
        fi, off = _expand(n_cells)
        sy_sz = size[fi, 1] * size[fi, 2]
        di = torch.div(off, sy_sz, rounding_mode="floor")
        rem = off - di * sy_sz
        dj = torch.div(rem, size[fi, 2], rounding_mode="floor")
        dk = rem - dj * size[fi, 2]
        key = self._key(torch.stack([c0[fi, 0] + di, c0[fi, 1] + dj, c0[fi, 2] + dk], 1))
        key, order = torch.sort(key, stable=True)
        self.tri_ids = fi[order]
        self.keys, counts = torch.unique_consecutive(key, return_counts=True)
        self.counts = counts
        self.starts = torch.cumsum(counts, 0) - counts
        self._shells: dict[int, torch.Tensor] = {}
        self._coarser: TriangleGrid | None = None
        self.corners = tri
        self.device = dev

    def _key(self, ijk: torch.Tensor) -> torch.Tensor:
        return (ijk[..., 0] * self.dims[1] + ijk[..., 1]) * self.dims[2] + ijk[..., 2]

    def cell_of(self, points: torch.Tensor) -> torch.Tensor:
        """``[N, 3]`` points → ``[N, 3]`` int64 cell coordinates (may lie outside the grid)."""
        return torch.floor((points.to(torch.float64) - self.origin) / self.h).long()

    def lookup(self, ijk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[M, 3]`` cell coordinates → (start ``[M]``, count ``[M]``) of their triangles in :attr:`tri_ids`;
        count 0 for empty cells and cells outside the grid."""
        inside = ((ijk >= 0) & (ijk < self.dims)).all(1)
        key = self._key(ijk)
        pos = torch.searchsorted(self.keys, key).clamp(max=self.keys.numel() - 1)
        hit = inside & (self.keys[pos] == key)
        zero = torch.zeros_like(key)
        return torch.where(hit, self.starts[pos], zero), torch.where(hit, self.counts[pos], zero)

    def _shell(self, r: int) -> torch.Tensor:
        """``[S, 3]`` offsets of the cells at Chebyshev distance exactly ``r``."""
        if r not in self._shells:
            rng = torch.arange(-r, r + 1, device=self.device)
            off = torch.stack(torch.meshgrid(rng, rng, rng, indexing="ij"), -1).view(-1, 3)
            self._shells[r] = off[off.abs().amax(1) == r]
        return self._shells[r]

    # -- closest points ---------------------------------------------------------------------------------
    def closest(
        self, points: torch.Tensor, *, max_ring: int = 3, budget: int = PAIR_BUDGET
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Exact closest points on the triangles.

        Shells of cells around each point's cell are searched outwards; a point is done after shell ``r``
        once its best distance is at most ``r·h`` (every unvisited triangle is farther). Points still open
        after ``max_ring`` shells (far from the surface) continue in grids of 4× coarser cells
        (:meth:`coarser`), and the last few against every triangle, in batches.

        Args:
            points: ``[N, 3]`` float tensor on the grid's device.

        Returns:
            ``(face [N] int64, bary [N, 3] float64, distance [N] float64)``.
        """
        p = points.to(torch.float64)
        n = int(p.shape[0])
        dev = p.device
        best = torch.full((n,), float("inf"), dtype=torch.float64, device=dev)
        face = torch.full((n,), -1, dtype=torch.int64, device=dev)
        bary = torch.zeros((n, 3), dtype=torch.float64, device=dev)
        active = torch.arange(n, device=dev)
        grid: TriangleGrid | None = self
        while grid is not None and active.numel():
            active = grid._rings(p, active, max_ring, budget, best, face, bary)
            grid = grid.coarser()
        if active.numel():
            n_f = int(self.f.shape[0])
            step = max(1, budget // n_f)
            all_f = torch.arange(n_f, device=dev)
            for a0 in range(0, int(active.numel()), step):
                pts = active[a0 : a0 + step]
                row = torch.arange(pts.numel(), device=dev).repeat_interleave(n_f)
                self._update(p, pts, row, all_f.repeat(pts.numel()), best, face, bary)
        return face, bary, torch.sqrt(best)

    def _rings(
        self,
        p: torch.Tensor,
        active: torch.Tensor,
        max_ring: int,
        budget: int,
        best: torch.Tensor,
        face: torch.Tensor,
        bary: torch.Tensor,
    ) -> torch.Tensor:
        """Search shells 0…``max_ring`` around the ``active`` points; returns the points still open."""
        cell = self.cell_of(p[active])
        for r in range(max_ring + 1):
            if active.numel() == 0:
                break
            offs = self._shell(r)
            s = offs.shape[0]
            start, count = self.lookup((cell[:, None, :] + offs[None]).view(-1, 3))
            per_point = count.view(-1, s).sum(1)
            for a0, a1 in _batches(per_point, budget):
                st, ct = start[a0 * s : a1 * s], count[a0 * s : a1 * s]
                row, k = _expand(ct)
                tri = self.tri_ids[st[row] + k]
                self._update(p, active[a0:a1], torch.div(row, s, rounding_mode="floor"), tri, best, face, bary)
            open_ = best[active] > (r * self.h) ** 2
            active, cell = active[open_], cell[open_]
        return active

    def coarser(self) -> TriangleGrid | None:
        """The same triangles in a grid of cells 4× larger (built on first use), ``None`` once the grid is a
        few cells across: where the closest-point search goes for points far from the surface."""
        if int(self.dims.max()) <= 4:
            return None
        if self._coarser is None:
            self._coarser = TriangleGrid(self.v, self.f, cell=4.0 * self.h, part_of_face=self.part_of_face)
        return self._coarser

    def _update(
        self,
        p: torch.Tensor,
        pts: torch.Tensor,
        row: torch.Tensor,
        tri: torch.Tensor,
        best: torch.Tensor,
        face: torch.Tensor,
        bary: torch.Tensor,
    ) -> None:
        """Test pairs (point ``pts[row]``, triangle ``tri``) and keep each point's closest triangle."""
        if row.numel() == 0:
            return
        corners = self.corners[tri]
        q, w = closest_point_on_triangles(p[pts[row]], corners[:, 0], corners[:, 1], corners[:, 2])
        d2 = ((q - p[pts[row]]) ** 2).sum(1)
        m, pick = _argmin_rows(row, d2, int(pts.numel()))
        better = torch.nonzero(m < best[pts]).view(-1)
        g = pts[better]
        best[g] = m[better]
        face[g] = tri[pick[better]]
        bary[g] = w[pick[better]]

    # -- ray casts ----------------------------------------------------------------------------------------
    def cast(
        self,
        origins: torch.Tensor,
        directions: torch.Tensor,
        max_distance: float,
        *,
        ray_part: torch.Tensor | None = None,
        budget: int = PAIR_BUDGET,
        rival: torch.Tensor | None = None,
        score: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Nearest hits of rays ``o + t·d``, ``0 ≤ t ≤ max_distance``, on either face of the triangles.

        Every ray walks the grid cell by cell (Amanatides & Woo 1987; all rays in lockstep, finished rays
        dropped) and stops once its nearest hit lies before the exit of its current cell. While many rays are
        active a pass takes one cell each; once few are left (a tail walking empty space), up to
        :data:`_MAX_STEPS` cells each (:func:`_walk`), and a ray stops after the pass's last cell.

        With ``rival``, rays compete in pairs (as in :meth:`DenseSurface.nearest_hit`, where the nearer of two
        opposite rays wins): a ray also stops, hitless, once its walk has passed the score of its rival's
        nearest hit so far, since a hit further on could only lose (scores are at least the distance; ties go
        to the ray with the hit). Such a ray reports a miss; every ray that could win gets its exact nearest hit.

        Args:
            origins, directions: ``[N, 3]`` float tensors (unit directions: ``t`` is then a distance).
            max_distance: the rays' length.
            ray_part: ``[N]`` int64: only faces of that part (``part_of_face``) count for each ray.
            rival: ``[N]`` int64, the index of each ray's rival ray (None: every ray walks to its end).
            score: ``(rays [M] int64, face [M] int64, t [M] float64) → [M]`` the score of rays' nearest hits
                (at least ``t``; ``inf`` where ``face`` is −1); default ``t``.

        Returns:
            ``(face [N] int64, −1 on a miss; barycentrics [N, 3] float64; distance [N] float64, inf on a miss)``.
        """
        o = origins.to(torch.float64)
        d = directions.to(torch.float64)
        n = int(o.shape[0])
        dev = o.device
        t_best = torch.full((n,), float("inf"), dtype=torch.float64, device=dev)
        face = torch.full((n,), -1, dtype=torch.int64, device=dev)
        uv = torch.zeros((n, 2), dtype=torch.float64, device=dev)
        if n == 0:
            return face, torch.zeros((0, 3), dtype=torch.float64, device=dev), t_best
        lo = self.origin
        hi = self.origin + self.dims.to(torch.float64) * self.h
        zero_d = d == 0
        inside_slab = (o >= lo) & (o <= hi)
        safe = torch.where(zero_d, torch.ones_like(d), d)
        t1, t2 = (lo - o) / safe, (hi - o) / safe
        inf = torch.full_like(t1, float("inf"))
        near = torch.where(zero_d, torch.where(inside_slab, -inf, inf), torch.minimum(t1, t2))
        far = torch.where(zero_d, torch.where(inside_slab, inf, -inf), torch.maximum(t1, t2))
        t_start = near.amax(1).clamp(min=0.0)
        t_end = torch.minimum(far.amin(1), torch.full_like(t_start, float(max_distance)))
        p0 = o + d * t_start[:, None]
        cell = torch.minimum(self.cell_of(p0).clamp(min=0), self.dims - 1)
        step = torch.sign(d).long()
        t_delta = torch.where(zero_d, inf, self.h / d.abs().clamp(min=1e-300))
        boundary = self.origin + (cell + (step > 0).long()).to(torch.float64) * self.h
        t_next = torch.where(zero_d, inf, (boundary - o) / safe)
        active = torch.nonzero(t_start <= t_end).view(-1)
        while active.numel():
            # few rays left (a long tail walking empty space): several cells each per pass
            steps = max(1, min(_MAX_STEPS, _STEP_CELLS // int(active.numel())))
            cells, last, t_last = _walk(cell[active], t_next[active], t_delta[active], step[active], steps)
            start, count = self.lookup(cells)
            for a0, a1 in _batches(count, budget):
                row, k = _expand(count[a0:a1])
                tri = self.tri_ids[start[a0:a1][row] + k]
                first = a0 // steps  # the batch's rays: cells a0 … a1 - 1, ``steps`` cells per ray
                ray_row = (a0 + row) // steps - first
                mine = active[first : (a1 - 1) // steps + 1]
                rays = mine[ray_row]
                corners = self.corners[tri]
                t, u, v = ray_triangles(o[rays], d[rays], corners[:, 0], corners[:, 1], corners[:, 2])
                t = torch.where(t <= t_end[rays], t, torch.full_like(t, float("inf")))
                if ray_part is not None and self.part_of_face is not None:
                    t = torch.where(self.part_of_face[tri] == ray_part[rays], t, torch.full_like(t, float("inf")))
                m, pick = _argmin_rows(ray_row, t, int(mine.numel()))
                better = torch.nonzero(m < t_best[mine]).view(-1)
                g = mine[better]
                t_best[g] = m[better]
                face[g] = tri[pick[better]]
                uv[g] = torch.stack([u[pick[better]], v[pick[better]]], 1)
            cell[active], t_next[active] = last, t_last
            t_exit, axis = t_last.min(1)
            done = (t_best[active] <= t_exit) | (t_exit >= t_end[active])
            if rival is not None:
                other = rival[active]
                beaten = t_best[other] if score is None else score(other, face[other], t_best[other])
                done |= t_exit > beaten
            active, axis = active[~done], axis[~done]
            cell[active, axis] += step[active, axis]
            t_next[active, axis] += t_delta[active, axis]
            active = active[((cell[active] >= 0) & (cell[active] < self.dims)).all(1)]
        bary = torch.stack([1.0 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], 1)
        return face, bary, t_best


# --------------------------------------------------------------------------------------------------------
# the dense surface: SurfaceField.project on tensors
# --------------------------------------------------------------------------------------------------------
class DenseSurface:
    """A dense surface on a device, answering :meth:`SurfaceField.project` with tensors.

    Args:
        vertices: ``[V, 3]`` float tensor; faces: ``[F, 3]`` int tensor (same device).
        cage: ray length both ways from the low-poly surface (metres).
        part_of_face: ``[F]`` int64 source part of each face (``None``: one part).
        agree: make each low-poly triangle's texels use one source part (as ``SurfaceField(agree=...)``).
        diagonal: bounding-box diagonal (metres; the agreement slack is 0.5 % of it; default: computed).
    """

    def __init__(
        self,
        vertices: torch.Tensor,
        faces: torch.Tensor,
        *,
        cage: float,
        part_of_face: torch.Tensor | None = None,
        agree: bool = True,
        diagonal: float | None = None,
    ) -> None:
        self.grid = TriangleGrid(vertices, faces, part_of_face=part_of_face)
        v, f = self.grid.v, self.grid.f
        cross = torch.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]], dim=1)
        length = torch.linalg.norm(cross, dim=1, keepdim=True)
        self.face_normals = torch.where(length > 0, cross / length.clamp(min=1e-300), torch.zeros_like(cross))
        self.part_of_face = part_of_face
        self.n_parts = int(part_of_face.max()) + 1 if part_of_face is not None and part_of_face.numel() else 1
        self.cage = float(cage)
        self.agree = agree
        self.diagonal = float(diagonal) if diagonal is not None else float(torch.linalg.norm(v.amax(0) - v.amin(0)))

        self.samplers: list[Any] = []
        self.face_offset: list[int] = [0]

    @classmethod
    def from_field(cls, field: SurfaceField, device: torch.device | str) -> DenseSurface:
        """The tensors of a :class:`SurfaceField` on ``device`` (its vertices, faces, parts, cage) and its
        parts' samplers (:func:`meshforge.gpu.sample.torch_part`)."""
        dev = torch.device(device)
        out = cls(
            torch.as_tensor(field.vertices, device=dev),
            torch.as_tensor(field.faces, device=dev),
            cage=field.cage,
            part_of_face=torch.as_tensor(field.part_of_face, device=dev),
            agree=field.agree,
            diagonal=field.diagonal,
        )
        out.samplers = [torch_part(p, dev) for p in field.parts]
        out.face_offset = list(field.face_offset)
        return out

    @classmethod
    def from_isosurface(
        cls, vertices: torch.Tensor, faces: torch.Tensor, field: Any, *, cage_fraction: float = 0.03
    ) -> DenseSurface:
        """A dense isosurface left on its device, sampled through the field it was extracted from (the tensor
        form of ``SurfaceField([FieldSurfacePart(mesh, field)], cage=cage_fraction × diagonal)``, what
        :func:`meshforge.pipeline.finish` bakes through): nothing of the dense surface goes to the host.

        Args:
            vertices: ``[V, 3]`` float tensor; faces: ``[F, 3]`` int tensor, on the bake's device.
            field: the backend's field (``color_tensor`` or ``color``, ``material``).
            cage_fraction: ray length both ways, as a fraction of the bounding-box diagonal.
        """
        v = vertices.to(torch.float64)
        diagonal = float(torch.linalg.norm(v.amax(0) - v.amin(0)))
        part = torch.zeros(int(faces.shape[0]), dtype=torch.int64, device=faces.device)
        out = cls(vertices, faces, cage=cage_fraction * diagonal, part_of_face=part, diagonal=diagonal)
        out.samplers = [TorchFieldPart(vertices, faces, field)]
        return out

    def attributes(self, face: torch.Tensor, bary: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`SurfaceField.attributes` on the device (:func:`meshforge.gpu.sample.sample_parts`)."""
        if not self.samplers or self.part_of_face is None:
            raise StageError("this dense surface has no attribute source (build it with DenseSurface.from_field)")
        return sample_parts(self.samplers, self.part_of_face, self.face_offset, face, bary)

    def nearest_hit(
        self, p: torch.Tensor, n: torch.Tensor, ray_part: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:func:`meshforge.fields.surface.nearest_hit` on tensors: rays both ways along ``n``, the nearer
        front-facing hit wins (a back-facing one scores its distance plus twice the cage)."""
        m = p.shape[0]
        both_part = None if ray_part is None else torch.cat([ray_part, ray_part])

        def score(face: torch.Tensor, dist: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
            back = _dot(self.face_normals[face.clamp(min=0)], normal) < 0
            penalty = torch.where(back, 2.0 * self.cage, 0.0)
            return torch.where(face >= 0, dist + penalty, torch.full_like(dist, float("inf")))

        # each ray of a pair stops once it is past the other's best score: it could no longer win
        rival = torch.cat([torch.arange(m, 2 * m, device=p.device), torch.arange(0, m, device=p.device)])
        f, b, d = self.grid.cast(
            torch.cat([p, p]),
            torch.cat([n, -n]),
            self.cage,
            ray_part=both_part,
            rival=rival,
            score=lambda rays, face, dist: score(face, dist, n[rays % m]),
        )
        f_out, f_in, b_out, b_in, d_out, d_in = f[:m], f[m:], b[:m], b[m:], d[:m], d[m:]
        use_in = score(f_in, d_in, n) < score(f_out, d_out, n)
        face = torch.where(use_in, f_in, f_out)
        return face, torch.where(use_in[:, None], b_in, b_out), torch.where(use_in, d_in, d_out)

    def project(
        self, points: torch.Tensor, normals: torch.Tensor, low_face: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense-surface points for low-poly surface points, as :meth:`SurfaceField.project`.

        Args:
            points: ``[N, 3]`` low-poly surface points; normals: ``[N, 3]`` unit low-poly normals there;
            low_face: ``[N]`` low-poly triangle of each point (enables part agreement).

        Returns:
            ``(dense face [N] int64, barycentrics [N, 3] float64)`` on the points' device.
        """
        p = points.to(torch.float64)
        n = normals.to(torch.float64)
        face, bary, dist = self.nearest_hit(p, n)
        miss = torch.nonzero(face < 0).view(-1)
        if miss.numel():
            cf, cb, cd = self.grid.closest(p[miss])
            face[miss], bary[miss], dist[miss] = cf, cb, cd
        if self.agree and low_face is not None and self.n_parts > 1 and self.part_of_face is not None:
            part = self.part_of_face[face]
            _, low_idx = torch.unique(low_face, return_inverse=True)
            n_low = int(low_idx.max()) + 1
            votes = torch.zeros(n_low * self.n_parts, dtype=torch.int64, device=p.device)
            votes.index_add_(0, low_idx * self.n_parts + part, torch.ones_like(part))
            major = votes.view(n_low, self.n_parts).argmax(1)[low_idx]
            wrong = torch.nonzero(part != major).view(-1)
            if wrong.numel():
                cf, cb, cd = self.nearest_hit(p[wrong], n[wrong], major[wrong])
                ok = (cf >= 0) & (cd <= dist[wrong] + 0.005 * self.diagonal)
                rows = wrong[ok]
                face[rows], bary[rows] = cf[ok], cb[ok]
        return face, bary


_SURFACES: weakref.WeakKeyDictionary[Any, dict[str, DenseSurface]] = weakref.WeakKeyDictionary()


def dense_surface(field: SurfaceField, device: torch.device | str) -> DenseSurface:
    """The :class:`DenseSurface` of a field on a device, built once per (field, device) and reused."""
    per_field = _SURFACES.setdefault(field, {})
    key = str(torch.device(device))
    if key not in per_field:
        per_field[key] = DenseSurface.from_field(field, device)
    return per_field[key]


# --------------------------------------------------------------------------------------------------------
# seam dilation
# --------------------------------------------------------------------------------------------------------
def jump_flood(covered: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest covered texel of every texel by jump flooding (Rong & Tan 2006, JFA+2: steps N/2 … 1, then 2, 1).

    Each pass compares a texel's seed with the seeds of its 8 neighbours at the step's distance (shifted
    views of the seed coordinates, padded with a far-away sentinel); distances are squared Euclidean
    distances in texels.

    Args:
        covered: ``[H, W]`` bool tensor (at least one texel true).

    Returns:
        ``(nearest [H, W] int64 flat index of the seed texel, distance [H, W] float32 in texels)``; covered
        texels are their own seed. JFA is exact for almost every texel; where it is not, the seed found is
        within a texel or so of the nearest.
    """
    h, w = covered.shape
    # float32 holds the squared distances exactly up to 2048² atlases; beyond, float64
    dt = torch.float32 if max(h, w) <= 2048 else torch.float64
    far, (ys, xs, sy, sx, best) = flood_triton.flood_start(covered, dt)
    for k in flood_triton.flood_steps(h, w):
        py = torch.nn.functional.pad(sy, (k, k, k, k), value=far)
        px = torch.nn.functional.pad(sx, (k, k, k, k), value=far)
        for dy in (-k, 0, k):
            for dx in (-k, 0, k):
                if dy == 0 and dx == 0:
                    continue
                cy = py[k + dy : k + dy + h, k + dx : k + dx + w]
                cx = px[k + dy : k + dy + h, k + dx : k + dx + w]
                d2 = (cy - ys) ** 2 + (cx - xs) ** 2
                closer = d2 < best
                sy = torch.where(closer, cy, sy)
                sx = torch.where(closer, cx, sx)
                best = torch.where(closer, d2, best)
    seed = sy.long() * w + sx.long()
    return seed, torch.sqrt(best).to(torch.float32)


#: the bake's host threads (the tangent frames beside the device's raster and projection); one per bake at a time
_TANGENT_POOL = LazyThreadPool(SMALL_POOL_THREADS, "meshforge-gpu-bake")


def never_written_torch(covered: torch.Tensor, dilation: float) -> torch.Tensor:
    """The torch twin of :func:`meshforge.geometry.raster.never_written`: texels farther than ``dilation`` texels
    (Euclidean, centre to centre) from every covered texel — all of them when none is covered.

    Args:
        covered: ``[H, W]`` bool tensor, the texels a UV triangle covers.
        dilation: the gutter width in texels.

    Returns:
        ``[H, W]`` bool tensor on ``covered``'s device: the OR of the covered texels shifted by every offset of
        the disk of radius ``dilation`` (one convolution), negated.
    """
    r = math.floor(max(dilation, 0.0))
    offsets = torch.arange(-r, r + 1, device=covered.device, dtype=torch.float32)
    disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= dilation * dilation).float()
    hits = torch.nn.functional.conv2d(covered.float()[None, None], disk[None, None], padding=r)[0, 0]
    return hits < 0.5


def _jump_flood(covered: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`jump_flood`, in the Triton kernel where :data:`TRITON_FLOOD` allows (a CUDA device, Triton, at most
    2048 texels a side); a Triton failure sets :data:`TRITON_FLOOD_FAILURE` (logged once) and the torch reference
    answers — the same result. Running out of device memory propagates."""
    global TRITON_FLOOD_FAILURE
    usable = TRITON_FLOOD and TRITON_FLOOD_FAILURE is None and flood_triton.AVAILABLE
    if usable and covered.device.type == "cuda" and max(covered.shape) <= 2048:
        try:
            return flood_triton.jump_flood_triton(covered)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:  # a compile or launch failure of Triton (its errors have no common base class)
            TRITON_FLOOD_FAILURE = one_line(exc)
            _log.warning("Triton jump flooding unavailable, using the torch path: %s", TRITON_FLOOD_FAILURE)
    return jump_flood(covered)


def fill_gutters(values: torch.Tensor, covered: torch.Tensor, radius: float | None = None) -> torch.Tensor:
    """Give uncovered texels the value of the nearest covered texel (:func:`jump_flood`, by one Triton kernel a step
    on a CUDA device: :func:`_jump_flood`); the torch twin of
    :func:`meshforge.mesh.bake.fill_gutters`.

    Args:
        values: ``[H, W, C]`` texel values; covered: ``[H, W]`` bool, texels holding baked data.
        radius: fill only texels within this many texels of a covered one (``None``: all, as the CPU path).

    Returns:
        ``[H, W, C]`` tensor of the same dtype, equal to ``values`` where covered (and beyond ``radius``).
    """
    if bool(covered.all()) or not bool(covered.any()):
        return values
    h, w, c = values.shape
    seed, dist = _jump_flood(covered)
    out = values.reshape(h * w, c)[seed.view(-1)].view(h, w, c)
    if radius is not None:
        out = torch.where((dist <= radius)[..., None], out, values)
    return out


# --------------------------------------------------------------------------------------------------------
# the bake
# --------------------------------------------------------------------------------------------------------
def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / torch.clamp(torch.linalg.norm(x, dim=-1, keepdim=True), min=1e-20)


def _to_u8(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.round(x.to(torch.float32) * 255.0), 0, 255).to(torch.uint8)


def encode_tangent_normals(
    tangents: torch.Tensor,
    normals: torch.Tensor,
    faces: torch.Tensor,
    face: torch.Tensor,
    bary: torch.Tensor,
    world_normals: torch.Tensor,
) -> torch.Tensor:
    """World-space normals in the low-poly tangent frames; :func:`meshforge.mesh.bake.encode_tangent_normals`
    on tensors (interpolated frame re-orthogonalised by Gram–Schmidt, bitangent = cross(normal, tangent)·w,
    glTF 2.0 §3.7.2.1; the z component clamped to ≥ 0.05 before re-normalising).

    Args:
        tangents: ``[V, 4]`` low-poly tangents (:func:`asset_tangents`); normals: ``[V, 3]``; faces ``[F, 3]``.
        face: ``[N]`` low-poly face per texel; bary: ``[N, 3]``; world_normals: ``[N, 3]``.

    Returns:
        ``[N, 3]`` float32 unit tangent-space normals.
    """
    idx = faces[face]
    b64 = bary.to(torch.float64)
    n = _unit(torch.einsum("nk,nkd->nd", b64, normals.to(torch.float64)[idx]))
    t = torch.einsum("nk,nkd->nd", b64, tangents[:, :3].to(torch.float64)[idx])
    t = _unit(t - n * _dot(t, n)[:, None])
    wsign = torch.where(torch.einsum("nk,nk->n", b64, tangents[:, 3].to(torch.float64)[idx]) < 0, -1.0, 1.0)
    b = torch.cross(n, t, dim=1) * wsign[:, None]
    m = _unit(world_normals.to(torch.float64))
    ts = torch.stack([_dot(m, t), _dot(m, b), _dot(m, n)], 1)
    ts[:, 2] = ts[:, 2].clamp(min=0.05)
    return _unit(ts).to(torch.float32)


def _host(x: torch.Tensor, dtype: Any = np.float64) -> np.ndarray:
    return np.asarray(x.detach().cpu().numpy(), dtype=dtype)


def bake(
    mesh: Mesh,
    field: Field,
    cfg: BakeConfig,
    *,
    device: torch.device | str = "cpu",
    chunk: int = 1 << 20,
    timings: dict[str, float] | None = None,
    surface: DenseSurface | None = None,
    never_written_figure: bool = False,
) -> tuple[Textures, dict[str, Any]]:
    """Bake PBR maps from a field onto a UV-unwrapped mesh, on ``device``; the twin of
    :func:`meshforge.mesh.bake.bake` (same arguments, same maps, same counts).

    A :class:`SurfaceField` is projected onto and sampled on the device (:class:`DenseSurface`, built once
    per field and device; parts :mod:`meshforge.gpu.sample` does not mirror are sampled by their numpy
    method, one host round trip per chunk); another field with ``bake_attributes`` is called with numpy
    arrays per chunk (its own CPU projection); a :class:`~meshforge.fields.base.PBRAttributes` field (TRELLIS.2's
    sparse voxels) is sampled at the texels' low-poly points on the device, all channels in one lookup; a plain
    :class:`Field` with numpy arrays, one host round trip per chunk.

    Args:
        mesh: mesh with ``uv`` (glTF convention, v down) and ``normals`` (numpy, small).
        field: the field to sample.
        cfg: ``texture_size``, ``normal_map``.
        device: where the per-texel work runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``…).
        chunk: texels per projection / field-query batch (the CPU path's default, so part agreement votes
            over the same texels).
        surface: a :class:`DenseSurface` already on ``device`` to project onto and sample (for example
            :meth:`DenseSurface.from_isosurface`: the dense surface never leaves the device); ``field`` is
            then not queried.
        timings: if given, filled with seconds per stage (``raster``, ``index`` (the dense surface's grid, 0
            when cached), ``project``, ``query``, ``normals``, ``dilate`` (with the copy to the host)), CUDA
            synchronised at each boundary.
        never_written_figure: also count ``texels_never_written``, the atlas figure of
            :func:`meshforge.mesh.uv.atlas_quality` (:func:`never_written_torch` of this bake's raster, so the host
            need not rasterise the atlas again).

    Returns:
        ``(textures, counts)`` as :func:`meshforge.mesh.bake.bake`: ``base_color`` ``[S, S, 4]``,
        ``metallic_roughness`` ``[S, S, 3]``, optional ``normal`` ``[S, S, 3]`` and ``occlusion`` ``[S, S]``,
        uint8 numpy arrays; ``texels_baked`` and ``coverage`` (and ``texels_never_written``, a fraction of the
        texels, with ``never_written_figure``).

    Raises:
        StageError: the mesh has no UVs, covers no texel, or lacks the normals a dense surface needs.
    """
    import time

    dev = torch.device(device)
    clock = {"t": time.perf_counter()}

    def lap(name: str) -> None:
        if timings is None:
            return
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - clock["t"]
        clock["t"] = now

    if mesh.uv is None:
        raise StageError("baking needs a UV-unwrapped mesh")
    size = int(cfg.texture_size)
    # the tangent frames (numpy, on the host) are computed in a thread while the device rasterises and projects
    frames = (
        _TANGENT_POOL.get().submit(asset_tangents, mesh.vertices, mesh.normals, mesh.uv, mesh.faces)
        if cfg.normal_map and mesh.normals is not None
        else None
    )
    verts = torch.as_tensor(np.asarray(mesh.vertices), device=dev)
    faces = torch.as_tensor(np.asarray(mesh.faces, dtype=np.int64), device=dev)
    normals = torch.as_tensor(np.asarray(mesh.normals), device=dev) if mesh.normals is not None else None
    raster: TorchRaster = rasterize_atlas(torch.as_tensor(np.asarray(mesh.uv), device=dev), faces, size)
    flat, face, bary, points, nrm = texel_points(verts, normals, faces, raster)
    n_tex = int(flat.numel())
    if n_tex == 0:
        raise StageError("the UV atlas covers no texel")
    lap("raster")
    color = torch.ones((n_tex, 4), dtype=torch.float32, device=dev)
    metallic = torch.empty(n_tex, dtype=torch.float32, device=dev)
    roughness = torch.empty(n_tex, dtype=torch.float32, device=dev)
    world_normal: torch.Tensor | None = None
    occlusion: torch.Tensor | None = None
    is_surface = surface is not None or isinstance(field, SurfaceAttributes)
    if is_surface and nrm is None:
        raise StageError("baking from a dense surface needs vertex normals on the low-poly mesh")
    dense = surface if surface is not None else dense_surface(field, dev) if isinstance(field, SurfaceField) else None
    lap("index")

    def to_dev(val: Any) -> torch.Tensor:
        if isinstance(val, torch.Tensor):
            return val.to(dev, torch.float32)
        return torch.as_tensor(np.asarray(val, dtype=np.float32), device=dev)

    for s in range(0, n_tex, chunk):
        sl = slice(s, s + chunk)
        if is_surface:
            assert nrm is not None
            if dense is not None:
                dface, dbary = dense.project(points[sl], nrm[sl], face[sl])
                lap("project")
                attrs: dict[str, Any] = dense.attributes(dface, dbary)
            else:
                assert isinstance(field, SurfaceAttributes)
                attrs = field.bake_attributes(_host(points[sl], np.float32), _host(nrm[sl]), _host(face[sl], np.int64))
            bc = to_dev(attrs["base_color"])
            color[sl, : bc.shape[1]] = bc
            metallic[sl], roughness[sl] = to_dev(attrs["metallic"]), to_dev(attrs["roughness"])
            if "normal" in attrs and cfg.normal_map:
                if world_normal is None:
                    world_normal = torch.zeros((n_tex, 3), dtype=torch.float32, device=dev)
                world_normal[sl] = to_dev(attrs["normal"])
            if "occlusion" in attrs:
                if occlusion is None:
                    occlusion = torch.ones(n_tex, dtype=torch.float32, device=dev)
                occlusion[sl] = to_dev(attrs["occlusion"])
        else:
            real_alpha = has_real_alpha(field)
            got: tuple[Any, Any, Any, Any]  # tensors on the device, or numpy arrays
            if isinstance(field, PBRAttributes):  # every channel from one lookup, on the device
                pts = points[sl].to(torch.float32)  # float32 points, as the host path's
                got = sample_pbr_tensor(field, pts, dev, real_alpha)
            else:
                got = sample_pbr(field, _host(points[sl], np.float32), real_alpha)
            rgb, met, rough, alpha = got
            color[sl, :3] = to_dev(rgb)
            if alpha is not None:
                color[sl, 3] = to_dev(alpha)
            metallic[sl], roughness[sl] = to_dev(met), to_dev(rough)
        lap("query")
    channels = [_to_u8(color), torch.zeros((n_tex, 1), dtype=torch.uint8, device=dev)]
    channels += [_to_u8(roughness)[:, None], _to_u8(metallic)[:, None]]
    if world_normal is not None:
        assert normals is not None and mesh.normals is not None
        frame = (
            frames.result() if frames is not None else asset_tangents(mesh.vertices, mesh.normals, mesh.uv, mesh.faces)
        )
        tangents = torch.as_tensor(frame, device=dev)
        ts = encode_tangent_normals(tangents, normals, faces, face, bary, world_normal)
        channels.append(_to_u8(ts * 0.5 + 0.5))
    if occlusion is not None:
        channels.append(_to_u8(occlusion)[:, None])
    lap("normals")
    packed = torch.cat(channels, 1)
    image = torch.zeros((size * size, packed.shape[1]), dtype=torch.uint8, device=dev)
    if world_normal is not None:  # the flat normal (0, 0, 1) where nothing is baked (fills: no copy from the host)
        image[:, 7:9] = 128
        image[:, 9] = 255
    image[flat] = packed
    image = fill_gutters(image.view(size, size, -1), raster.covered)
    figures: dict[str, Any] = {}
    if never_written_figure:
        figures["texels_never_written"] = never_written_torch(raster.covered, DILATION_TEXELS).float().mean()
    # each map made contiguous on the device and all copied in one go (strided copies of the interleaved channels
    # on the host took ~5 ms a map on the H200's host)
    spans = [(0, 4), (4, 7)] + ([(7, 10)] if world_normal is not None else [])
    spans += [(image.shape[-1] - 1, image.shape[-1])] if occlusion is not None else []
    planar = torch.cat([image[..., lo:hi].reshape(-1) for lo, hi in spans]).cpu().numpy()
    maps, at = [], 0
    for lo, hi in spans:
        flat_map = planar[at : at + size * size * (hi - lo)]
        maps.append(flat_map.reshape(size, size, hi - lo) if hi - lo > 1 else flat_map.reshape(size, size))
        at += size * size * (hi - lo)
    lap("dilate")
    textures = Textures(
        base_color=maps[0],
        metallic_roughness=maps[1],
        normal=maps[2] if world_normal is not None else None,
        occlusion=maps[-1] if occlusion is not None else None,
    )
    figures = {k: round(float(v), 4) for k, v in figures.items()}  # (after the maps' copy: no extra wait)
    return textures, {"texels_baked": n_tex, "coverage": round(n_tex / size**2, 4), **figures}
