"""Surface-to-surface measurements: Chamfer distance, F-score, Hausdorff distance, normal consistency, colour PSNR.

Every geometric measurement compares a *candidate* surface (what meshforge made) with a *reference* surface
(the ground truth or the dense source), and every distance is reported **relative to the reference's
bounding-box diagonal** (a distance of 0.01 means 1 % of the reference's diagonal); the field and key names
end in ``_rel`` to say so. Inputs may be a :class:`~meshforge.io.scene.SourceScene` (all its parts form one
surface), an :class:`~meshforge.types.Asset`, a :class:`~meshforge.types.Mesh` or a
:class:`~meshforge.io.scene.SourcePart`.

Method. Both surfaces are sampled uniformly by area (:func:`sample_surface`, default
:data:`DEFAULT_SAMPLES` = 100,000 points each, seeded so results are reproducible). The distance from a
sample to the other surface is the exact point-to-triangle distance (Ericson, *Real-Time Collision
Detection*, 2005, §5.1.5) to the closest of the triangles that own the :data:`DEFAULT_K` = 8 nearest dense
samples of that surface (``scipy.spatial.cKDTree``). That is never larger than the plain nearest-sample
distance used in many papers and removes its bias (≈ half the sample spacing, about 0.3 % of the diagonal at
100k samples), so two identical surfaces measure 0 and offsets well below the sample spacing are resolved.

Definitions (``P`` candidate samples, ``R`` reference samples, ``d(x, S)`` distance from ``x`` to surface
``S``, ``D`` the reference's bounding-box diagonal):

* accuracy ``= mean_{p∈P} d(p, ref) / D``; completeness ``= mean_{r∈R} d(r, cand) / D``.
* **Chamfer distance** (symmetric, L1, as "Chamfer-L1" in Mescheder et al. 2019, *Occupancy Networks*,
  CVPR): ``(accuracy + completeness) / 2``. Unsquared Euclidean distances.
* **F-score at threshold τ** (Knapitsch et al. 2017, *Tanks and Temples*, SIGGRAPH; Tatarchenko et al.
  2019, *What Do Single-view 3D Reconstruction Networks Learn?*, CVPR): precision
  ``= |{p: d(p, ref) < τD}| / |P|``, recall ``= |{r: d(r, cand) < τD}| / |R|``,
  ``F = 2·precision·recall / (precision + recall)`` (0 when both are 0). τ is relative to ``D``.
* **Hausdorff distance**: ``max(max_p d(p, ref), max_r d(r, cand)) / D`` over the samples.
* **Normal consistency** (Mescheder et al. 2019): the mean of ``|n_p · n_ref(p)|`` over ``P`` and of
  ``|n_r · n_cand(r)|`` over ``R``, averaged; ``n`` are unit geometric (face) normals at the sample and at
  its closest point. Orientation-agnostic: 1 means identical tangent planes.
* **Orientation** (:func:`orientation`, a check of winding rather than of shape): ``inconsistent_edges``
  of the candidate (all parts, equal positions welded: a directed edge used by two faces, i.e. neighbours
  wound oppositely) and the faces *facing away*: those whose unit normal has a negative dot product with
  the reference's face normal at the reference point closest to the face's centroid (exact,
  :func:`closest_points`) *and* with every reference sample within that distance plus
  :data:`ORIENTATION_TOLERANCE` × ``D`` — so a face of a thin strap or a double-sided panel, whose closest
  point may lie on the opposite sheet, agrees with the sheet facing its way — as a count and as a fraction
  of the candidate's area.
* **Colour PSNR**: for each candidate sample, the candidate's sRGB base colour (texture × factor × vertex
  colour, :meth:`~meshforge.io.scene.SourcePart.sample`) is compared with the reference's at the closest
  reference surface point; ``PSNR = 10·log10(1 / MSE)`` dB over the R, G, B values in [0, 1] (peak 1.0;
  alpha is not compared), capped at :data:`PSNR_CAP_DB` when the colours are identical.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from ..errors import InputError
from ..geometry.closest import closest_point_on_triangles
from ..io.scene import SourcePart, SourceScene
from ..types import Asset, Mesh

__all__ = [
    "DEFAULT_K",
    "DEFAULT_SAMPLES",
    "DEFAULT_THRESHOLDS",
    "ORIENTATION_TOLERANCE",
    "PSNR_CAP_DB",
    "ClosestPoints",
    "SurfaceComparison",
    "SurfaceSamples",
    "as_scene",
    "chamfer_distance",
    "closest_point_on_triangles",
    "closest_points",
    "color_psnr",
    "compare_surfaces",
    "f_score",
    "hausdorff",
    "normal_consistency",
    "orientation",
    "psnr",
    "sample_colors",
    "sample_surface",
]

#: default number of surface samples per surface
DEFAULT_SAMPLES = 100_000
#: nearest dense samples whose triangles are tested exactly in :func:`closest_points`
DEFAULT_K = 8
#: default F-score thresholds, relative to the reference's bounding-box diagonal (0.5 %, 1 %, 2 %)
DEFAULT_THRESHOLDS: tuple[float, ...] = (0.005, 0.01, 0.02)
#: PSNR reported for identical colours (the formula gives +inf)
PSNR_CAP_DB = 100.0
#: :func:`orientation`: how far beyond the closest reference point (relative to the reference diagonal,
#: the finest F-score threshold) a reference sheet facing the same way as a face still counts
ORIENTATION_TOLERANCE = 0.005

Surface = SourceScene | Asset | Mesh | SourcePart


def as_scene(surface: Surface) -> SourceScene:
    """Wrap any accepted surface as a :class:`SourceScene` (an existing scene is returned as is).

    Raises:
        TypeError: an unsupported type.
    """
    if isinstance(surface, SourceScene):
        return surface
    if isinstance(surface, Asset):
        return SourceScene.from_asset(surface)
    if isinstance(surface, Mesh):
        return SourceScene.from_mesh(surface)
    if isinstance(surface, SourcePart):
        return SourceScene(parts=[surface], name=surface.name)
    raise TypeError(f"expected a SourceScene, Asset, Mesh or SourcePart, got {type(surface).__name__}")


class _Flat:
    """All parts of a scene concatenated into one triangle soup (world space, float64)."""

    def __init__(self, scene: SourceScene) -> None:
        verts, faces, part, local = [], [], [], []
        offset = 0
        for i, p in enumerate(scene.parts):
            verts.append(p.mesh.vertices.astype(np.float64))
            faces.append(p.mesh.faces.astype(np.int64) + offset)
            part.append(np.full(p.mesh.n_faces, i, dtype=np.int32))
            local.append(np.arange(p.mesh.n_faces, dtype=np.int32))
            offset += p.mesh.n_vertices
        self.scene = scene
        self.vertices = np.concatenate(verts) if verts else np.zeros((0, 3))
        self.faces = np.concatenate(faces) if faces else np.zeros((0, 3), dtype=np.int64)
        self.part = np.concatenate(part) if part else np.zeros(0, dtype=np.int32)
        self.local = np.concatenate(local) if local else np.zeros(0, dtype=np.int32)
        tri = self.vertices[self.faces]
        cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        length = np.linalg.norm(cross, axis=1)
        self.areas = 0.5 * length
        self.normals = np.divide(cross, length[:, None], out=np.zeros_like(cross), where=length[:, None] > 0)
        lo, hi = scene.bounds()
        self.diagonal = float(np.linalg.norm(hi - lo))


def _flat(scene: SourceScene) -> _Flat:
    # Cached on the (frozen, eq=False) scene object without touching its fields.
    cached = scene.__dict__.get("_metrics_flat")
    if cached is None:
        cached = _Flat(scene)
        scene.__dict__["_metrics_flat"] = cached
    return cached


@dataclass(frozen=True, eq=False)
class SurfaceSamples:
    """Points sampled on a surface.

    Attributes:
        points: ``[N, 3]`` float64 world-space positions (the surface's units).
        normals: ``[N, 3]`` float64 unit geometric normals of the sampled faces.
        part: ``[N]`` int32 part index in the scene.
        face: ``[N]`` int32 face index within the part.
        bary: ``[N, 3]`` float64 barycentric weights in that face.
    """

    points: np.ndarray
    normals: np.ndarray
    part: np.ndarray
    face: np.ndarray
    bary: np.ndarray

    def __len__(self) -> int:
        return int(len(self.points))

    @cached_property
    def tree(self) -> cKDTree:
        """A KD-tree over :attr:`points` (built on first use)."""
        return cKDTree(self.points)


def sample_surface(surface: Surface, n: int = DEFAULT_SAMPLES, *, seed: int = 0) -> SurfaceSamples:
    """Sample points uniformly by area over a surface (all parts together).

    Faces are drawn with probability proportional to their area (inverse-CDF on the cumulative areas), and
    points uniformly inside each face with the square-root method of Osada et al. 2002 (*Shape
    distributions*, ACM TOG): ``b = (1 − √r₁, √r₁(1 − r₂), √r₁·r₂)``. Deterministic for a given ``seed``
    (``numpy.random.default_rng``).

    Args:
        surface: a SourceScene, Asset, Mesh or SourcePart.
        n: number of points (≥ 1).
        seed: random seed.

    Returns:
        A :class:`SurfaceSamples` of ``n`` points.

    Raises:
        InputError: the surface has no area (no faces, or only degenerate ones).
        ValueError: ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"sample_surface: n must be >= 1, got {n}")
    flat = _flat(as_scene(surface))
    total = float(flat.areas.sum())
    if not total > 0.0 or not math.isfinite(total):
        raise InputError(f"{as_scene(surface).name}: the surface has no area to sample")
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(flat.areas)
    idx = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
    idx = np.minimum(idx, len(cdf) - 1)
    r1 = np.sqrt(rng.random(n))
    r2 = rng.random(n)
    bary = np.stack([1.0 - r1, r1 * (1.0 - r2), r1 * r2], axis=1)
    tri = flat.vertices[flat.faces[idx]]
    points = np.einsum("nk,nkd->nd", bary, tri)
    return SurfaceSamples(
        points=points, normals=flat.normals[idx], part=flat.part[idx], face=flat.local[idx], bary=bary
    )


def sample_colors(surface: Surface, part: np.ndarray, face: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """sRGB base colours at surface points of a scene (per :meth:`SourcePart.sample`).

    Args:
        surface: the surface the points belong to.
        part, face, bary: ``[N]`` part indices, ``[N]`` face indices within the part, ``[N, 3]`` barycentrics
            (as in :class:`SurfaceSamples` or :class:`ClosestPoints`).

    Returns:
        ``[N, 4]`` float64 sRGB-encoded RGBA in [0, 1].
    """
    scene = as_scene(surface)
    out = np.zeros((len(part), 4))
    for p in np.unique(part):
        sel = np.flatnonzero(part == p)
        out[sel] = scene.parts[int(p)].sample(face[sel], bary[sel])["base_color"]
    return out


@dataclass(frozen=True, eq=False)
class ClosestPoints:
    """Closest surface points to a set of query points.

    Attributes:
        distance: ``[N]`` float64 Euclidean distances (the surface's units, not relative).
        points: ``[N, 3]`` float64 closest points.
        part, face: ``[N]`` int32 part index and face index within the part of the closest triangle.
        bary: ``[N, 3]`` float64 barycentrics of the closest point in that face.
        normals: ``[N, 3]`` float64 unit geometric normals of that face.
        exact: ``[N]`` bool, True where the exact search was complete (see :func:`closest_points`).
    """

    distance: np.ndarray
    points: np.ndarray
    part: np.ndarray
    face: np.ndarray
    bary: np.ndarray
    normals: np.ndarray
    exact: np.ndarray


class _TriangleIndex:
    """Triangle bounding spheres in KD-trees, for exact closest-point search.

    Every point of a triangle lies within ``R`` (its largest centroid-to-vertex distance) of its centroid, so
    a triangle can be closer than a known distance ``d`` only if its centroid is within ``d + R``. To keep
    those spheres tight, triangles with ``R`` above a target (the median ``R``, raised if needed to keep the
    total under :attr:`BUDGET`) are split, for the search only, into ``m²`` congruent sub-triangles
    (``m = ceil(R / target)``); a sub-triangle's closest point is a point of its parent face. The (sub-)
    triangles are then grouped by ``R`` in classes a factor 2 apart (at most :attr:`MAX_CLASSES`, the last
    taking all smaller ones), each with its own KD-tree searched with its own largest ``R``.
    """

    BUDGET = 2_000_000  # extra sub-triangles at most (plus 2 per face)
    MAX_CLASSES = 6

    def __init__(self, flat: _Flat) -> None:
        tri = flat.vertices[flat.faces]
        centroid = tri.mean(axis=1)
        radius = np.linalg.norm(tri - centroid[:, None, :], axis=2).max(axis=1) if len(tri) else np.zeros(0)
        n = len(radius)
        target = float(np.percentile(radius, 50)) if n else 0.0
        if target <= 0.0:
            target = float(radius.max()) if n else 0.0
        m = np.ones(n, dtype=np.int64)
        if target > 0.0:
            while True:
                m = np.maximum(np.ceil(radius / target).astype(np.int64), 1)
                split = m > 1
                if int((m[split] ** 2).sum()) <= self.BUDGET + 2 * n:
                    break
                target *= 1.5
        whole = np.flatnonzero(m == 1)
        parents = [whole]
        subs = [np.full(len(whole), -1, dtype=np.int64)]
        cents = [centroid[whole]]
        radii = [radius[whole]]
        sub_vertices: list[np.ndarray] = []
        sub_bary: list[np.ndarray] = []
        count = 0
        for level in np.unique(m[m > 1]):
            faces = np.flatnonzero(m == level)
            template = _subdivision_template(int(level))  # [level², 3, 3] parent barycentrics
            verts = np.einsum("skj,fjd->fskd", template, tri[faces]).reshape(-1, 3, 3)
            c = verts.mean(axis=1)
            r = np.linalg.norm(verts - c[:, None, :], axis=2).max(axis=1)
            parents.append(np.repeat(faces, len(template)))
            subs.append(np.arange(count, count + len(verts), dtype=np.int64))
            cents.append(c)
            radii.append(r)
            sub_vertices.append(verts)
            sub_bary.append(np.tile(template, (len(faces), 1, 1)))
            count += len(verts)
        self.parent = np.concatenate(parents)
        self.sub = np.concatenate(subs)
        self.radius = np.concatenate(radii)
        self.sub_vertices = np.concatenate(sub_vertices) if sub_vertices else np.zeros((0, 3, 3))
        self.sub_bary = np.concatenate(sub_bary) if sub_bary else np.zeros((0, 3, 3))
        centres = np.concatenate(cents)
        self.centres = centres
        self.classes: list[tuple[np.ndarray, float, cKDTree]] = []
        if len(self.radius):
            top = float(self.radius.max())
            ratio = np.maximum(self.radius, 1e-300) / max(top, 1e-300)
            level = np.clip(np.floor(-np.log2(ratio)).astype(np.int64), 0, self.MAX_CLASSES - 1)
            for c in np.unique(level):
                idx = np.flatnonzero(level == c)
                self.classes.append((idx, float(self.radius[idx].max()), cKDTree(centres[idx])))


def _subdivision_template(m: int) -> np.ndarray:
    """Barycentric coordinates (in the parent) of the ``m²`` sub-triangles of a regular ``m``-subdivision.

    Returns:
        ``[m², 3 vertices, 3 weights]`` float64, sub-triangles counter-clockwise like the parent.
    """
    out = []
    for i in range(m):
        for j in range(m - i):
            out.append([(i, j), (i + 1, j), (i, j + 1)])
            if i + j < m - 1:
                out.append([(i + 1, j), (i + 1, j + 1), (i, j + 1)])
    ij = np.asarray(out, dtype=np.float64) / m  # [m², 3, 2] = weights of vertices b and c
    return np.concatenate([1.0 - ij.sum(axis=2, keepdims=True), ij], axis=2)


def _triangle_index(flat: _Flat) -> _TriangleIndex:
    cached = flat.__dict__.get("_triangle_index")
    if cached is None:
        cached = _TriangleIndex(flat)
        flat.__dict__["_triangle_index"] = cached
    return cached


#: the exact search gives up on a query (keeping its first-pass result, ``exact`` False) when its distance
#: exceeds this many times the largest (sub-)triangle bounding-sphere radius (far from the surface)
MAX_REACH = 16.0


def _refine(
    flat: _Flat,
    q: np.ndarray,
    dist: np.ndarray,
    face: np.ndarray,
    bary: np.ndarray,
    point: np.ndarray,
    exact: np.ndarray,
) -> None:
    """Make closest-point results exact in place.

    For each size class, every (sub-)triangle whose centroid is within ``dist + R_class`` of a query is a
    candidate (``cKDTree.query_ball_point``); candidates are pruned with two lower bounds of their distance,
    ``|q − centroid| − R`` (bounding sphere) and ``|n·(q − a)|`` (the triangle's plane), and the rest are
    tested exactly. Queries farther than :data:`MAX_REACH` times the largest radius are skipped, marked inexact.
    """
    # Points already on the surface (to rounding) cannot get closer.
    eps = 1e-12 * max(flat.diagonal, 1e-300)
    if not np.any(dist > eps):
        return
    index = _triangle_index(flat)
    top_radius = max((c[1] for c in index.classes), default=0.0)
    for members, class_radius, tree in index.classes:
        active = np.flatnonzero(dist > eps)
        far = dist[active] > MAX_REACH * top_radius
        exact[active[far]] = False
        active = active[~far]
        if active.size == 0:
            continue
        found = tree.query_ball_point(q[active], dist[active] + class_radius, return_sorted=False)
        counts = np.fromiter(map(len, found), dtype=np.int64, count=len(found))
        if counts.sum() == 0:
            continue
        vi = members[np.fromiter(itertools.chain.from_iterable(found), dtype=np.int64, count=int(counts.sum()))]
        qi = np.repeat(active, counts)
        # Lower bounds: bounding sphere, then the supporting plane (sub-triangles share the parent's plane).
        keep = np.linalg.norm(q[qi] - index.centres[vi], axis=1) - index.radius[vi] <= dist[qi]
        qi, vi = qi[keep], vi[keep]
        fi = index.parent[vi]
        a = flat.vertices[flat.faces[fi, 0]]
        keep = np.abs(np.einsum("ij,ij->i", flat.normals[fi], q[qi] - a)) <= dist[qi]
        qi, vi = qi[keep], vi[keep]
        if qi.size:
            _update(flat, index, q, qi, vi, dist, face, bary, point)


def _update(
    flat: _Flat,
    index: _TriangleIndex,
    q: np.ndarray,
    qi: np.ndarray,
    vi: np.ndarray,
    dist: np.ndarray,
    face: np.ndarray,
    bary: np.ndarray,
    point: np.ndarray,
) -> None:
    """Test query ``qi`` against (sub-)triangle ``vi`` pairs exactly; keep the best per query if it improves."""
    sub = index.sub[vi]
    fi = index.parent[vi]
    t = flat.vertices[flat.faces[fi]]
    is_sub = sub >= 0
    if np.any(is_sub):
        t[is_sub] = index.sub_vertices[sub[is_sub]]
    c, b = closest_point_on_triangles(q[qi], t[:, 0], t[:, 1], t[:, 2])
    if np.any(is_sub):
        b[is_sub] = np.einsum("nk,nkj->nj", b[is_sub], index.sub_bary[sub[is_sub]])
    dd = np.linalg.norm(c - q[qi], axis=1)
    order = np.lexsort((dd, qi))
    first = np.ones(order.size, dtype=bool)
    first[1:] = qi[order][1:] != qi[order][:-1]
    sel = order[first]
    sel = sel[dd[sel] < dist[qi[sel]]]
    target = qi[sel]
    dist[target], face[target], bary[target], point[target] = dd[sel], fi[sel], b[sel], c[sel]


def closest_points(
    surface: Surface,
    queries: np.ndarray,
    *,
    samples: SurfaceSamples | None = None,
    k: int = DEFAULT_K,
    n_samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    chunk: int = 32768,
    exact: bool = True,
) -> ClosestPoints:
    """Closest points on a surface (exact point-to-triangle distances).

    First the triangles owning the ``k`` nearest dense samples of ``surface`` (``samples``, or
    :func:`sample_surface` with ``n_samples`` and ``seed``) are tested exactly
    (:func:`closest_point_on_triangles`), which gives a tight upper bound (never above the nearest-sample
    distance). Then, with ``exact``, every triangle whose bounding sphere (large triangles split into
    sub-triangles for this search) and plane come within that bound is tested too, so the result is the
    true closest point — except for queries farther than :data:`MAX_REACH` triangle radii from the surface,
    which keep the first result (then within about half the sample spacing of the truth, a small error
    relative to their distance) and have ``ClosestPoints.exact`` False.

    Args:
        surface: the surface to project onto.
        queries: ``[N, 3]`` float points.
        samples: dense samples of ``surface`` to reuse (their KD-tree is cached on them).
        k: nearest samples whose triangles give the first bound.
        n_samples, seed: how to sample ``surface`` when ``samples`` is None.
        chunk: queries processed per batch (bounds memory, ~``chunk·k·200`` bytes).
        exact: run the exact completion (without it: the best of the ``k`` samples' triangles, never
            farther than the nearest sample).

    Returns:
        :class:`ClosestPoints` for every query.
    """
    scene = as_scene(surface)
    flat = _flat(scene)
    if samples is None:
        samples = sample_surface(scene, n_samples, seed=seed)
    q = np.asarray(queries, dtype=np.float64).reshape(-1, 3)
    k = max(1, min(int(k), len(samples)))
    # Global face index of every sample: offset of its part + local face.
    part_offset = np.concatenate([[0], np.cumsum([p.mesh.n_faces for p in scene.parts])]).astype(np.int64)
    sample_face = part_offset[samples.part] + samples.face
    n = len(q)
    dist = np.empty(n)
    best_face = np.empty(n, dtype=np.int64)
    best_bary = np.empty((n, 3))
    best_point = np.empty((n, 3))
    for s in range(0, n, chunk):
        qq = q[s : s + chunk]
        _, nn = samples.tree.query(qq, k=k)
        nn = np.asarray(nn).reshape(len(qq), k)
        cand = sample_face[nn]  # [m, k]
        rep = np.repeat(qq, k, axis=0)
        tri = flat.vertices[flat.faces[cand.reshape(-1)]]
        closest, bary = closest_point_on_triangles(rep, tri[:, 0], tri[:, 1], tri[:, 2])
        d = np.linalg.norm(closest - rep, axis=1).reshape(len(qq), k)
        j = np.argmin(d, axis=1)
        rows = np.arange(len(qq))
        dist[s : s + len(qq)] = d[rows, j]
        pick = rows * k + j
        best_face[s : s + len(qq)] = cand[rows, j]
        best_bary[s : s + len(qq)] = bary[pick]
        best_point[s : s + len(qq)] = closest[pick]
    done = np.full(n, exact)
    if exact:
        for s in range(0, n, chunk):
            sl = slice(s, s + chunk)
            _refine(flat, q[sl], dist[sl], best_face[sl], best_bary[sl], best_point[sl], done[sl])
    return ClosestPoints(
        distance=dist,
        points=best_point,
        part=flat.part[best_face],
        face=flat.local[best_face],
        bary=best_bary,
        normals=flat.normals[best_face],
        exact=done,
    )


def orientation(
    candidate: Surface,
    reference: Surface,
    *,
    n_samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    tolerance: float = ORIENTATION_TOLERANCE,
) -> dict[str, Any]:
    """Winding of a candidate against the reference it stands for (see the module docstring).

    The one measurement of orientation: ``meshforge optimize`` reports it for the decimated mesh against
    the source, and ``meshforge inspect FILE --reference REF`` for a file against its reference.

    Args:
        candidate: the surface being judged (all parts together).
        reference: the surface whose orientation is the truth (e.g. the dense source).
        n_samples, seed: reference samples (:func:`sample_surface`) seeding the exact closest-point search
            and standing for the reference's sheets near a face.
        tolerance: a face opposing its closest reference point still agrees when a reference sample
            with an agreeing normal lies within its distance plus ``tolerance`` × the reference diagonal.

    Returns:
        ``{"inconsistent_edges": int, "facing_away_faces": int, "facing_away_area": float}``, the area as a
        fraction of the candidate's total area in [0, 1].

    Raises:
        InputError: the reference has no area or a zero-size bounding box.
    """
    from ..geometry.topology import topology

    flat = _flat(as_scene(candidate))
    inconsistent = topology(flat.vertices, flat.faces, weld_positions=True).inconsistent_edges
    if len(flat.faces) == 0 or flat.areas.sum() <= 0.0:
        return {"inconsistent_edges": inconsistent, "facing_away_faces": 0, "facing_away_area": 0.0}
    ref = as_scene(reference)
    diag = _reference_diagonal(ref)
    samples = sample_surface(ref, n_samples, seed=seed)
    centroid = flat.vertices[flat.faces].mean(axis=1)
    near = closest_points(ref, centroid, samples=samples)
    away = np.einsum("ij,ij->i", flat.normals, near.normals) < 0.0
    # a sheet facing the face's way just beyond the closest (opposite) one: a thin double-sided part
    suspects = np.flatnonzero(away)
    balls = samples.tree.query_ball_point(centroid[suspects], near.distance[suspects] + tolerance * diag)
    for i, ball in zip(suspects.tolist(), balls):
        if ball and (samples.normals[ball] @ flat.normals[i] > 0.0).any():
            away[i] = False
    return {
        "inconsistent_edges": int(inconsistent),
        "facing_away_faces": int(away.sum()),
        "facing_away_area": float(flat.areas[away].sum() / flat.areas.sum()),
    }


def psnr(a: np.ndarray, b: np.ndarray, *, peak: float = 1.0, cap: float = PSNR_CAP_DB) -> float:
    """Peak signal-to-noise ratio ``10·log10(peak² / MSE)`` in dB, capped at ``cap`` (identical inputs)."""
    mse = float(np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2))
    if mse <= 0.0:
        return float(cap)
    return float(min(cap, 10.0 * math.log10(peak * peak / mse)))


@dataclass(frozen=True)
class SurfaceComparison:
    """Everything :func:`compare_surfaces` measures. Distances are relative to the reference's diagonal.

    Attributes:
        chamfer_rel: symmetric Chamfer-L1 distance, ``(accuracy_rel + completeness_rel) / 2``.
        accuracy_rel: mean distance from candidate samples to the reference surface.
        completeness_rel: mean distance from reference samples to the candidate surface.
        hausdorff_rel: symmetric Hausdorff distance over the samples.
        f_score: ``{threshold_rel: F}``; ``precision`` and ``recall`` likewise.
        normal_consistency: in [0, 1].
        color_psnr_db: colour PSNR in dB (None when not computed).
        reference_diagonal: the reference's bounding-box diagonal (its units) that distances are divided by.
        n_samples: samples per surface; seed: the random seed.
        exact_fraction: fraction of samples (both directions) whose closest point was proven exact
            (:func:`closest_points`); the rest were farther than :data:`MAX_REACH` triangle radii.
    """

    chamfer_rel: float
    accuracy_rel: float
    completeness_rel: float
    hausdorff_rel: float
    f_score: dict[float, float]
    precision: dict[float, float]
    recall: dict[float, float]
    normal_consistency: float
    color_psnr_db: float | None
    reference_diagonal: float
    n_samples: int
    seed: int
    exact_fraction: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (thresholds as strings such as ``"0.01"``)."""
        return {
            "chamfer_rel": self.chamfer_rel,
            "accuracy_rel": self.accuracy_rel,
            "completeness_rel": self.completeness_rel,
            "hausdorff_rel": self.hausdorff_rel,
            "f_score": {f"{t:g}": v for t, v in self.f_score.items()},
            "precision": {f"{t:g}": v for t, v in self.precision.items()},
            "recall": {f"{t:g}": v for t, v in self.recall.items()},
            "normal_consistency": self.normal_consistency,
            "color_psnr_db": self.color_psnr_db,
            "reference_diagonal": self.reference_diagonal,
            "n_samples": self.n_samples,
            "seed": self.seed,
            "exact_fraction": self.exact_fraction,
        }


def _reference_diagonal(ref: SourceScene) -> float:
    diag = _flat(ref).diagonal
    if not diag > 0.0:
        raise InputError(f"{ref.name}: the reference surface has a zero-size bounding box")
    return diag


def compare_surfaces(
    candidate: Surface,
    reference: Surface,
    *,
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS,
    n_samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    color: bool = True,
    k: int = DEFAULT_K,
) -> SurfaceComparison:
    """All measurements between two surfaces from one sampling (see the module docstring for definitions).

    The candidate is sampled with ``seed`` and the reference with ``seed + 1``, ``n_samples`` points each.

    Args:
        candidate: the surface being judged.
        reference: the ground truth; its bounding-box diagonal is the unit of every distance.
        thresholds: F-score thresholds relative to the reference diagonal.
        n_samples: samples per surface.
        seed: random seed.
        colour: also compute the colour PSNR.
        k: nearest samples whose triangles are tested exactly (:func:`closest_points`).

    Returns:
        A :class:`SurfaceComparison`.

    Raises:
        InputError: a surface has no area, or the reference has a zero-size bounding box.
    """
    cand, ref = as_scene(candidate), as_scene(reference)
    diag = _reference_diagonal(ref)
    sc = sample_surface(cand, n_samples, seed=seed)
    sr = sample_surface(ref, n_samples, seed=seed + 1)
    to_ref = closest_points(ref, sc.points, samples=sr, k=k)
    to_cand = closest_points(cand, sr.points, samples=sc, k=k)
    d_pr = to_ref.distance / diag
    d_rp = to_cand.distance / diag
    precision: dict[float, float] = {}
    recall: dict[float, float] = {}
    fscore: dict[float, float] = {}
    for t in thresholds:
        p = float(np.mean(d_pr < t))
        r = float(np.mean(d_rp < t))
        precision[float(t)], recall[float(t)] = p, r
        fscore[float(t)] = 0.0 if p + r == 0.0 else 2.0 * p * r / (p + r)
    nc_pr = float(np.mean(np.abs(np.einsum("ij,ij->i", sc.normals, to_ref.normals))))
    nc_rp = float(np.mean(np.abs(np.einsum("ij,ij->i", sr.normals, to_cand.normals))))
    color_db: float | None = None
    if color:
        c_cand = sample_colors(cand, sc.part, sc.face, sc.bary)
        c_ref = sample_colors(ref, to_ref.part, to_ref.face, to_ref.bary)
        color_db = psnr(c_cand[:, :3], c_ref[:, :3])
    accuracy, completeness = float(d_pr.mean()), float(d_rp.mean())
    return SurfaceComparison(
        chamfer_rel=0.5 * (accuracy + completeness),
        accuracy_rel=accuracy,
        completeness_rel=completeness,
        hausdorff_rel=float(max(d_pr.max(), d_rp.max())),
        f_score=fscore,
        precision=precision,
        recall=recall,
        normal_consistency=0.5 * (nc_pr + nc_rp),
        color_psnr_db=color_db,
        reference_diagonal=diag,
        n_samples=int(n_samples),
        seed=int(seed),
        exact_fraction=float(np.mean(np.concatenate([to_ref.exact, to_cand.exact]))),
    )


def chamfer_distance(
    candidate: Surface, reference: Surface, *, n_samples: int = DEFAULT_SAMPLES, seed: int = 0
) -> float:
    """Symmetric Chamfer-L1 distance relative to the reference's bounding-box diagonal.

    ``(mean_p d(p, ref) + mean_r d(r, cand)) / (2·D)`` over ``n_samples`` area-uniform samples per surface,
    as "Chamfer-L1" in Mescheder et al. 2019 (*Occupancy Networks*) but with exact point-to-surface
    distances (module docstring). Use :func:`compare_surfaces` to get every measurement from one sampling.
    """
    r = compare_surfaces(candidate, reference, thresholds=(), n_samples=n_samples, seed=seed, color=False)
    return r.chamfer_rel


def f_score(
    candidate: Surface,
    reference: Surface,
    threshold: float = 0.01,
    *,
    n_samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
) -> float:
    """F-score at ``threshold`` (relative to the reference's diagonal), as in Knapitsch et al. 2017 and
    Tatarchenko et al. 2019: the harmonic mean of precision (candidate samples within ``threshold·D`` of the
    reference) and recall (reference samples within ``threshold·D`` of the candidate)."""
    r = compare_surfaces(candidate, reference, thresholds=(threshold,), n_samples=n_samples, seed=seed, color=False)
    return r.f_score[float(threshold)]


def hausdorff(candidate: Surface, reference: Surface, *, n_samples: int = DEFAULT_SAMPLES, seed: int = 0) -> float:
    """Symmetric Hausdorff distance over the samples, relative to the reference's bounding-box diagonal."""
    r = compare_surfaces(candidate, reference, thresholds=(), n_samples=n_samples, seed=seed, color=False)
    return r.hausdorff_rel


def normal_consistency(
    candidate: Surface, reference: Surface, *, n_samples: int = DEFAULT_SAMPLES, seed: int = 0
) -> float:
    """Normal consistency (Mescheder et al. 2019): mean ``|n · n'|`` of face normals at each sample and at its
    closest point on the other surface, averaged over both directions; in [0, 1], 1 for identical surfaces."""
    r = compare_surfaces(candidate, reference, thresholds=(), n_samples=n_samples, seed=seed, color=False)
    return r.normal_consistency


def color_psnr(
    candidate: Surface,
    reference: Surface,
    *,
    n_samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    k: int = DEFAULT_K,
) -> float:
    """Surface colour PSNR in dB (peak 1.0) of the candidate against the reference.

    The candidate is sampled (``n_samples``, ``seed``); each sample's sRGB base colour is compared with the
    reference's sRGB base colour at the exact closest reference surface point (found among the triangles of
    its ``k`` nearest reference samples, ``n_samples`` of them with ``seed + 1``). ``PSNR = 10·log10(1/MSE)``
    over R, G, B in [0, 1]; identical colours give :data:`PSNR_CAP_DB`. Colours are compared however far the
    closest point is, so geometric error also lowers the score.
    """
    cand, ref = as_scene(candidate), as_scene(reference)
    sc = sample_surface(cand, n_samples, seed=seed)
    sr = sample_surface(ref, n_samples, seed=seed + 1)
    to_ref = closest_points(ref, sc.points, samples=sr, k=k)
    c_cand = sample_colors(cand, sc.part, sc.face, sc.bary)
    c_ref = sample_colors(ref, to_ref.part, to_ref.face, to_ref.bary)
    return psnr(c_cand[:, :3], c_ref[:, :3])
