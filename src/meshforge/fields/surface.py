"""Fields made from a dense surface: how the bake finds, for each texel of a low-poly atlas, the
corresponding point on the dense source surface.

**Correspondence.** From the texel's point ``p`` on the low-poly surface a ray is cast along the
interpolated low-poly normal ``n``, both ways (``p → p + d·n`` and ``p → p − d·n``, ``d`` the cage
distance), and the nearer hit wins — the "cage" projection of every texture baker (xNormal, Substance,
Blender). Rays are traced with Embree (Intel, Apache-2.0) through ``embreex``. Texels whose rays miss
(outside the cage) use the exact closest point on the dense surface instead (candidate triangles from a
k-d tree over triangle centroids and vertices, then exact point–triangle distance, Ericson, *Real-Time
Collision Detection*, 2005, §5.1.5).

Of the two hits the nearer *front-facing* one wins (the dense face's normal agrees with the low-poly
normal), so the inside of a thin shell is not baked over its outside.

**Agreement.** Where the source has several overlapping parts (a visor over a face, decals), the texels
of one low-poly triangle can land on different parts and the atlas shows patches along the triangle
seams. Each low-poly triangle therefore takes the source part most of its texels hit, and texels that
landed elsewhere are re-projected onto that part alone when the same rays hit it nearby (see
:meth:`SurfaceField._agree`); parts that only border each other are left alone.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from scipy.spatial import cKDTree

from ..errors import MissingDependency
from ..geometry.closest import closest_point_on_triangles
from ..geometry.normals import face_normals, vertex_normals
from .base import has_real_alpha, sample_pbr


class SurfacePart(Protocol):
    """What a dense surface part must offer: its mesh and attribute sampling at (face, barycentric)."""

    mesh: Any

    def sample(self, face: np.ndarray, bary: np.ndarray) -> dict[str, np.ndarray]: ...


class ClosestPoint:
    """Exact closest points on a triangle mesh: k-d tree candidates, exact point–triangle distances.

    Candidates are the faces whose centroid or a vertex is among the ``k`` nearest samples to the query;
    for the closest point to be missed, a triangle would have to be far larger than the query's distance
    to the surface, which the vertex samples rule out on meshes of reasonable density.
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, k: int = 12) -> None:
        self.v = np.asarray(vertices, dtype=np.float64)
        self.f = np.asarray(faces, dtype=np.int64)
        self.k = k
        centroids = self.v[self.f].mean(axis=1)
        # samples: face centroids, and each used vertex (labelled with one incident face)
        vertex_face = np.full(len(self.v), -1, dtype=np.int64)
        vertex_face[self.f.reshape(-1)] = np.repeat(np.arange(len(self.f)), 3)
        used = np.flatnonzero(vertex_face >= 0)
        samples = np.concatenate([centroids, self.v[used]])
        self.sample_face = np.concatenate([np.arange(len(self.f)), vertex_face[used]])
        self.tree = cKDTree(samples, balanced_tree=False, compact_nodes=False)

    def query(self, points: np.ndarray, chunk: int = 200_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``[N, 3]`` points → (face ``[N]`` int64, barycentrics ``[N, 3]`` float64, distance ``[N]``)."""
        p_all = np.asarray(points, dtype=np.float64)
        n = len(p_all)
        face = np.zeros(n, dtype=np.int64)
        bary = np.zeros((n, 3))
        dist = np.zeros(n)
        k = min(self.k, len(self.sample_face))
        for s in range(0, n, chunk):
            p = p_all[s : s + chunk]
            _, idx = self.tree.query(p, k=k)
            cand = self.sample_face[np.asarray(idx).reshape(len(p), k)]
            rows = np.repeat(np.arange(len(p)), k)
            cf = cand.reshape(-1)
            tri = self.v[self.f[cf]]
            q, w = closest_point_on_triangles(p[rows], tri[:, 0], tri[:, 1], tri[:, 2])
            d2 = ((q - p[rows]) ** 2).sum(1).reshape(len(p), k)
            best = np.argmin(d2, axis=1)
            pick = np.arange(len(p)) * k + best
            face[s : s + chunk] = cf[pick]
            bary[s : s + chunk] = w[pick]
            dist[s : s + chunk] = np.sqrt(d2[np.arange(len(p)), best])
        return face, bary, dist


class RayCaster:
    """Nearest ray hits on a triangle mesh with Embree (``embreex``)."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray) -> None:
        try:
            from embreex import rtcore_scene as rtcs
            from embreex.mesh_construction import TriangleMesh
        except ImportError:  # pragma: no cover
            raise MissingDependency("baking from a dense surface needs 'embreex': pip install embreex") from None
        self._scene = rtcs.EmbreeScene()
        # indexed (shared vertices), not a triangle soup: embreex copies element by element, and the vertices
        # are about half as many as the faces
        self._mesh = TriangleMesh(
            self._scene,
            np.ascontiguousarray(vertices, dtype=np.float32),
            np.ascontiguousarray(faces, dtype=np.int32),
        )

    def commit(self) -> None:
        """Build Embree's BVH now (``embreex`` commits the scene on its first query)."""
        self._scene.run(np.zeros((1, 3), np.float32), np.array([[0.0, 0.0, 1.0]], np.float32), query="OCCLUDED")

    def cast(
        self, origins: np.ndarray, directions: np.ndarray, max_distance: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cast rays; returns (face ``[N]`` int64, −1 on miss; barycentrics ``[N, 3]``; distance ``[N]``)."""
        n = len(origins)
        res = self._scene.run(
            np.ascontiguousarray(origins, dtype=np.float32),
            np.ascontiguousarray(directions, dtype=np.float32),
            dists=np.full(n, max_distance, dtype=np.float32),
            query="INTERSECT",
            output=1,
        )
        face = np.asarray(res["primID"], dtype=np.int64)
        u = np.asarray(res["u"], dtype=np.float64)
        v = np.asarray(res["v"], dtype=np.float64)
        bary = np.stack([1.0 - u - v, u, v], axis=1)
        dist = np.where(face >= 0, np.asarray(res["tfar"], dtype=np.float64), np.inf)
        return face, bary, dist


def nearest_hit(
    rays: RayCaster, face_normals: np.ndarray, p: np.ndarray, n: np.ndarray, cage: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cast both ways along ``n`` and keep, per point, the nearest *front-facing* hit (the dense face's
    normal agrees with ``n``); a back-facing hit (the inside of a shell) is kept only when there is no
    front-facing one within the cage. Returns (face ``[N]``, −1 on miss; barycentrics; distance)."""
    f_out, b_out, d_out = rays.cast(p, n, cage)
    f_in, b_in, d_in = rays.cast(p, -n, cage)

    def score(face: np.ndarray, dist: np.ndarray) -> np.ndarray:
        back = np.einsum("ij,ij->i", face_normals[np.maximum(face, 0)], n) < 0
        return np.where(face >= 0, dist + np.where(back, 2.0 * cage, 0.0), np.inf)

    use_in = score(f_in, d_in) < score(f_out, d_out)
    return (
        np.where(use_in, f_in, f_out),
        np.where(use_in[:, None], b_in, b_out),
        np.where(use_in, d_in, d_out),
    )


class SurfaceField:
    """A field answering bake queries from dense surface parts (see the module docstring).

    Args:
        parts: the dense surface, one entry per source part (each with ``mesh`` and ``sample``).
        cage: ray length both ways from the low-poly surface, metres (``None``: 3% of the bounding
            diagonal).
        agree: make each low-poly triangle's texels use one source part.

    Attributes:
        bbox_min, bbox_max: ``[3]`` float32 bounds of the dense surface.
        iso_level: 0 (``density`` is minus the unsigned distance: this field is for baking, not for
            isosurface extraction).
    """

    iso_level = 0.0

    def __init__(self, parts: list[Any], *, cage: float | None = None, agree: bool = True) -> None:
        if not parts:
            raise ValueError("SurfaceField needs at least one part")
        self.parts = parts
        verts = [np.asarray(p.mesh.vertices, dtype=np.float64) for p in parts]
        faces = []
        offset = 0
        part_of_face = []
        self.face_offset = []
        for i, p in enumerate(parts):
            faces.append(np.asarray(p.mesh.faces, dtype=np.int64) + offset)
            part_of_face.append(np.full(len(p.mesh.faces), i, dtype=np.int64))
            self.face_offset.append(sum(len(x.mesh.faces) for x in parts[:i]))
            offset += len(verts[i])
        self.vertices = np.concatenate(verts)
        self.faces = np.concatenate(faces)
        self.part_of_face = np.concatenate(part_of_face)
        lo, hi = self.vertices.min(0), self.vertices.max(0)
        self.bbox_min, self.bbox_max = lo.astype(np.float32), hi.astype(np.float32)
        self.diagonal = float(np.linalg.norm(hi - lo))
        self.cage = float(cage) if cage is not None else 0.03 * self.diagonal
        self.agree = agree
        self._rays = RayCaster(self.vertices, self.faces)
        self._face_normals = face_normals(self.vertices, self.faces)[1]
        self._closest_index: ClosestPoint | None = None  # built on first use (misses are rare)
        self._part_rays: dict[int, tuple[RayCaster, np.ndarray]] = {}

    def prepare(self) -> None:
        """Build the ray-tracing index now rather than on the first query (e.g. in a thread, while other
        work runs); the exact closest-point index used for misses stays lazy."""
        self._rays.commit()

    @property
    def _closest(self) -> ClosestPoint:
        if self._closest_index is None:
            self._closest_index = ClosestPoint(self.vertices, self.faces)
        return self._closest_index

    # -- correspondence ------------------------------------------------------------------------------
    def project(
        self, points: np.ndarray, normals: np.ndarray, low_face: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Find dense-surface points for low-poly surface points.

        Args:
            points: ``[N, 3]`` low-poly surface points (metres).
            normals: ``[N, 3]`` unit low-poly normals there.
            low_face: ``[N]`` low-poly triangle of each point (enables part agreement).

        Returns:
            (dense face ``[N]`` int64 into the concatenated parts, barycentrics ``[N, 3]`` float64).
        """
        p = np.asarray(points, dtype=np.float64)
        n = np.asarray(normals, dtype=np.float64)
        face, bary, dist = nearest_hit(self._rays, self._face_normals, p, n, self.cage)
        miss = face < 0
        if miss.any():
            cf, cb, cd = self._closest.query(p[miss])
            face[miss], bary[miss], dist[miss] = cf, cb, cd
        if self.agree and low_face is not None and len(self.parts) > 1:
            face, bary = self._agree(p, n, face, bary, dist, np.asarray(low_face, dtype=np.int64))
        return face, bary

    def _agree(
        self,
        p: np.ndarray,
        n: np.ndarray,
        face: np.ndarray,
        bary: np.ndarray,
        dist: np.ndarray,
        low_face: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Move texels onto their low-poly triangle's majority part where that part overlaps them.

        A texel is moved only when its rays also hit the majority part, and no farther than 0.5% of the
        diagonal beyond its own hit: overlapping shells (a visor over a face) are unified, while parts
        that merely border each other (the layers of a cake) keep their own colours.
        """
        n_parts = len(self.parts)
        part = self.part_of_face[face]
        _, low_idx = np.unique(low_face, return_inverse=True)
        votes = np.zeros((low_idx.max() + 1, n_parts), dtype=np.int64)
        np.add.at(votes, (low_idx, part), 1)
        major = np.argmax(votes, axis=1)[low_idx]
        wrong = np.flatnonzero(part != major)
        slack = 0.005 * self.diagonal
        for target in np.unique(major[wrong]).tolist():
            rows = wrong[major[wrong] == target]
            mesh = self.parts[target].mesh
            if target not in self._part_rays:
                verts, faces = np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces)
                self._part_rays[target] = (RayCaster(verts, faces), face_normals(verts, faces)[1])
            rays, normals = self._part_rays[target]
            cf, cb, cd = nearest_hit(rays, normals, p[rows], n[rows], self.cage)
            ok = (cf >= 0) & (cd <= dist[rows] + slack)
            rows, cf, cb = rows[ok], cf[ok], cb[ok]
            face[rows] = cf + self.face_offset[target]
            bary[rows] = cb
        return face, bary

    def attributes(self, face: np.ndarray, bary: np.ndarray) -> dict[str, np.ndarray]:
        """Sample every part's attributes at dense (face, barycentric) points; see ``SourcePart.sample``."""
        part = self.part_of_face[face]
        out: dict[str, np.ndarray] = {}
        for i in np.unique(part).tolist():
            rows = np.flatnonzero(part == i)
            vals = self.parts[i].sample(face[rows] - self.face_offset[i], bary[rows])
            for key, val in vals.items():
                if key not in out:
                    out[key] = np.zeros((len(face),) + val.shape[1:], dtype=np.float32)
                out[key][rows] = val
        return out

    def bake_attributes(
        self, points: np.ndarray, normals: np.ndarray, low_face: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Project low-poly surface points onto the dense surface and sample its attributes there.

        Returns a dict with ``base_color`` ``[N, 4]`` sRGB, ``metallic`` ``[N]``, ``roughness`` ``[N]``,
        ``normal`` ``[N, 3]`` world-space shading normal, and ``occlusion`` ``[N]`` when the parts have it.
        """
        face, bary = self.project(points, normals, low_face)
        return self.attributes(face, bary)

    # -- the Field protocol (closest-point based) -----------------------------------------------------
    def density(self, points: np.ndarray) -> np.ndarray:
        """Minus the unsigned distance to the surface (metres); not meant for isosurface extraction."""
        _, _, dist = self._closest.query(points)
        return (-dist).astype(np.float32)

    def color(self, points: np.ndarray) -> np.ndarray:
        """sRGB base colour of the closest surface point, ``[N, 3]`` float32."""
        face, bary, _ = self._closest.query(points)
        return self.attributes(face, bary)["base_color"][:, :3]

    def material(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(metallic, roughness) of the closest surface point, ``[N]`` float32 each."""
        face, bary, _ = self._closest.query(points)
        attrs = self.attributes(face, bary)
        return attrs["metallic"], attrs["roughness"]


class FieldSurfacePart:
    """A dense isosurface whose attributes come from the field it was extracted from.

    ``generate`` bakes through this part so that colours are read on the dense surface and the normal
    map carries the dense isosurface's detail (its area-weighted vertex normals, interpolated) onto the
    decimated mesh.

    Args:
        mesh: the dense, cleaned isosurface (canonical frame).
        field: the backend's field (``color``, ``material``; ``alpha`` when its ``alpha_mode`` is not opaque).
    """

    def __init__(self, mesh: Any, field: Any) -> None:
        self.mesh = mesh
        self.field = field
        self._normals = vertex_normals(mesh.vertices, mesh.faces).astype(np.float64)

    def sample(self, face: np.ndarray, bary: np.ndarray) -> dict[str, np.ndarray]:
        """Attributes at dense (face ``[N]``, barycentric ``[N, 3]``) points; see :meth:`SurfaceField.attributes`."""
        idx = np.asarray(self.mesh.faces)[face]
        points = np.einsum("nk,nkd->nd", bary, np.asarray(self.mesh.vertices, dtype=np.float64)[idx])
        pts = points.astype(np.float32)
        color, metallic, roughness, opacity = sample_pbr(self.field, pts, has_real_alpha(self.field))
        alpha = opacity if opacity is not None else np.ones(len(pts), dtype=np.float32)
        normal = np.einsum("nk,nkd->nd", bary, self._normals[idx])
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-20)
        rgba = np.concatenate([color, alpha[:, None]], axis=1)
        return {"base_color": rgba, "metallic": metallic, "roughness": roughness, "normal": normal.astype(np.float32)}
