"""The data model of a loaded mesh file: a :class:`SourceScene` of world-space :class:`SourcePart` objects.

:func:`meshforge.io.meshes.load_mesh` builds these from GLB/glTF (:mod:`.gltf_reader`) and OBJ/PLY/STL
(:mod:`.trimesh_formats`); :meth:`SourceScene.from_asset` and :meth:`SourceScene.from_mesh` wrap meshforge's own
assets, so metrics and diagnostics read every surface the same way. Besides the model, this module holds what the
readers share: moving geometry by a world matrix (:func:`transform_geometry`), decoding texture images
(:func:`decode_image_rgba`) and collecting warnings (:func:`add_warning`).

Conventions of the data (those of :mod:`meshforge.types`): positions in the file's units (metres for glTF),
counter-clockwise front faces, glTF UVs (origin top-left, v down), vertex colours sRGB-encoded. Material factors
are stored as in glTF: ``base_color_factor`` is *linear* RGBA.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np

from ..geometry.color import linear_to_srgb, srgb_to_linear
from ..geometry.normals import vertex_normals
from ..geometry.tangents import compute_tangents
from ..geometry.texture import CLAMP_TO_EDGE, REPEAT, sample_texture
from ..types import Asset, Material, Mesh

__all__ = [
    "MAP_NAMES",
    "MAX_TEXTURE_PIXELS",
    "SourcePart",
    "SourceScene",
    "add_warning",
    "decode_image_rgba",
    "transform_geometry",
    "unit_rows",
]

#: the texture maps of a part, in the order a part's UV set is chosen from (the first textured one)
MAP_NAMES = ("base_color", "metallic_roughness", "normal", "occlusion")
#: the largest texture image accepted, in pixels (width × height); larger ones are dropped with a warning
MAX_TEXTURE_PIXELS = 16384 * 16384

# Pillow formats accepted for embedded textures (glTF core allows PNG and JPEG; EXT_texture_webp adds WebP).
_IMAGE_FORMATS = ["PNG", "JPEG", "WEBP"]


def unit_rows(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-normalise ``v``; returns ``(unit rows (zero where the length is ~0), length)``."""
    length = np.linalg.norm(v, axis=-1)
    out = np.divide(v, length[..., None], out=np.zeros_like(v), where=length[..., None] > 1e-20)
    return out, length


# --------------------------------------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SourcePart:
    """One triangle primitive of a source file, in world space, with its material and texture maps.

    Attributes:
        mesh: geometry with node transforms applied. ``vertices`` ``[V, 3]`` float32 in the file's units
            (metres for glTF); ``faces`` ``[F, 3]`` int32, counter-clockwise front faces (the winding is
            flipped for mirroring transforms); ``normals`` ``[V, 3]`` unit float32 when the file has them;
            ``uv`` ``[V, 2]`` glTF convention (v down; the texture-coordinate set, with its
            ``KHR_texture_transform``, of the first textured map); ``colors`` ``[V, 4]`` sRGB-encoded RGBA
            in [0, 1] from ``COLOR_0`` (glTF stores linear values; converted).
        material: glTF PBR metallic-roughness parameters; ``base_color_factor`` is *linear* RGBA as in
            glTF 2.0 §3.9.2, metallic/roughness factors, alpha mode/cutoff, double-sidedness.
        base_color: ``[H, W, 4]`` uint8 sRGB-encoded RGBA texture, or None.
        metallic_roughness: ``[H, W, 3]`` uint8 texture, G roughness and B metallic (an ORM texture maps
            here unchanged: its R channel, occlusion, is ignored in this map), or None.
        normal: ``[H, W, 3]`` uint8 tangent-space normal texture (glTF convention: +Y up the texture).
        normal_scale: ``normalTexture.scale``: multiplies the X and Y of the decoded normal (§3.9.3).
        occlusion: ``[H, W]`` uint8 occlusion texture (R channel), or None.
        tangents: ``[V, 4]`` float32 ``TANGENT`` from the file (xyz unit, w ±1, transformed to world), or
            None (then :attr:`frame_tangents` computes them when a normal map needs a frame).
        unlit: the material uses ``KHR_materials_unlit``.
        name: display name (node / mesh name and primitive number).
        occlusion_strength: ``occlusionTexture.strength`` (§3.9.3).
        wrap: ``{map name: (wrapS, wrapT)}`` glTF sampler wrap modes; a map not listed repeats.
    """

    mesh: Mesh
    material: Material = field(default_factory=Material)
    base_color: np.ndarray | None = None
    metallic_roughness: np.ndarray | None = None
    normal: np.ndarray | None = None
    normal_scale: float = 1.0
    occlusion: np.ndarray | None = None
    tangents: np.ndarray | None = None
    unlit: bool = False
    name: str = "part"
    occlusion_strength: float = 1.0
    wrap: dict[str, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, channels in (("base_color", 4), ("metallic_roughness", 3), ("normal", 3)):
            arr = getattr(self, name)
            if arr is not None and (arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != channels):
                raise ValueError(f"SourcePart.{name} must be [H, W, {channels}] uint8, got {arr.shape} {arr.dtype}")
        occ = self.occlusion
        if occ is not None and (occ.dtype != np.uint8 or occ.ndim != 2):
            raise ValueError(f"SourcePart.occlusion must be [H, W] uint8, got {occ.shape} {occ.dtype}")
        tan = self.tangents
        if tan is not None and tan.shape != (self.mesh.n_vertices, 4):
            raise ValueError(f"SourcePart.tangents must be [{self.mesh.n_vertices}, 4], got {tan.shape}")

    # -- derived, cached ------------------------------------------------------------------------------

    def textures(self) -> dict[str, np.ndarray]:
        """The texture maps present, ``{map name: array}`` (usable only when the mesh has UVs)."""
        return {n: getattr(self, n) for n in MAP_NAMES if getattr(self, n) is not None}

    def texture_sizes(self) -> dict[str, list[int]]:
        """``{map name: [width, height]}`` of the texture maps present."""
        return {n: [int(a.shape[1]), int(a.shape[0])] for n, a in self.textures().items()}

    @cached_property
    def face_normals(self) -> np.ndarray:
        """``[F, 3]`` float64 unit geometric normals (right-hand rule on the CCW winding; 0 for degenerate faces)."""
        t = self.mesh.vertices.astype(np.float64)[self.mesh.faces]
        return unit_rows(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]))[0]

    @cached_property
    def _frame_normals(self) -> np.ndarray:
        if self.mesh.normals is not None:
            return self.mesh.normals.astype(np.float64)
        return vertex_normals(self.mesh.vertices, self.mesh.faces)

    @cached_property
    def frame_tangents(self) -> np.ndarray | None:
        """``[V, 4]`` float32 tangents for normal mapping: the file's ``TANGENT`` or, when absent, computed.

        Computed ones follow :func:`meshforge.geometry.tangents.compute_tangents` (Lengyel's method, glTF
        handedness in ``w``), from the vertex normals (area-weighted ones when the file has none) and the
        UVs. None when the mesh has no UVs.
        """
        if self.tangents is not None:
            return self.tangents
        if self.mesh.uv is None:
            return None
        return compute_tangents(self.mesh.vertices, self._frame_normals, self.mesh.uv, self.mesh.faces)

    @cached_property
    def _linear_colors(self) -> np.ndarray | None:
        c = self.mesh.colors
        if c is None:
            return None
        return np.concatenate([srgb_to_linear(c[:, :3]), np.clip(c[:, 3:4], 0.0, 1.0)], axis=1).astype(np.float64)

    def _wrap(self, name: str) -> tuple[int, int]:
        return self.wrap.get(name, (REPEAT, REPEAT))

    # -- sampling -------------------------------------------------------------------------------------

    def sample(self, face: np.ndarray, bary: np.ndarray) -> dict[str, np.ndarray]:
        """Material and shading values at surface points given by face index and barycentric weights.

        glTF 2.0 §3.9.2 defines the base colour as the product of the base-colour texture (sRGB-decoded to
        linear), ``baseColorFactor`` (linear) and ``COLOR_0`` (linear); this is done in linear space and
        the result re-encoded as sRGB (alpha multiplies directly). Vertex colours are interpolated in linear
        space, as a GPU interpolates ``COLOR_0``. Textures are sampled bilinearly with the part's wrap modes
        (:func:`sample_texture`). A part without UVs uses only its factors and vertex colours.

        Args:
            face: ``[N]`` int face indices into ``mesh.faces``.
            bary: ``[N, 3]`` float barycentric weights of the face's three vertices (rows sum to 1).

        Returns:
            A dict of float64 arrays:

            * ``"base_color"``: ``[N, 4]`` sRGB-encoded RGBA in [0, 1];
            * ``"metallic"``, ``"roughness"``: ``[N]`` factor × texture B / G channel;
            * ``"occlusion"``: ``[N]`` ``1 + strength·(R/255 − 1)`` (1 where there is no occlusion map);
            * ``"normal"``: ``[N, 3]`` unit world-space *shading* normal: the interpolated vertex normal (the
              geometric normal when the file has none) perturbed by the normal map through the tangent frame
              (``bitangent = cross(normal, tangent.xyz)·w``, glTF §3.7.2.1), the map's X, Y scaled by
              ``normal_scale``;
            * ``"geometric_normal"``: ``[N, 3]`` unit face normal (0 for degenerate faces);
            * ``"position"``: ``[N, 3]`` the world-space points.

        Raises:
            ValueError: mismatched shapes or face indices out of range.
        """
        face = np.asarray(face, dtype=np.int64).reshape(-1)
        bary = np.asarray(bary, dtype=np.float64).reshape(-1, 3)
        if len(face) != len(bary):
            raise ValueError(f"sample: {len(face)} faces but {len(bary)} barycentric rows")
        if face.size and (face.min() < 0 or face.max() >= self.mesh.n_faces):
            raise ValueError(f"sample: face index out of range [0, {self.mesh.n_faces})")
        n = len(face)
        mesh, mat = self.mesh, self.material
        f = mesh.faces[face]

        def interp(values: np.ndarray) -> np.ndarray:
            return np.einsum("nk,nkd->nd", bary, values[f].astype(np.float64))

        uv = interp(mesh.uv) if mesh.uv is not None else None
        out: dict[str, np.ndarray] = {"position": interp(mesh.vertices)}

        # Base colour (linear product, §3.9.2).
        rgb = np.ones((n, 3))
        alpha = np.ones(n)
        if self.base_color is not None and uv is not None:
            tex = sample_texture(self.base_color, uv, self._wrap("base_color")) / 255.0
            rgb = srgb_to_linear(tex[:, :3]).astype(np.float64)
            alpha = tex[:, 3]
        lin_colors = self._linear_colors
        if lin_colors is not None:
            vc = interp(lin_colors)
            rgb = rgb * vc[:, :3]
            alpha = alpha * vc[:, 3]
        factor = np.asarray(mat.base_color_factor, dtype=np.float64)
        rgb = rgb * factor[:3]
        alpha = np.clip(alpha * factor[3], 0.0, 1.0)
        out["base_color"] = np.concatenate([linear_to_srgb(rgb).astype(np.float64), alpha[:, None]], axis=1)

        # Metallic-roughness (§3.9.2: roughness in G, metallic in B) and occlusion (§3.9.3).
        metallic = np.full(n, float(mat.metallic_factor))
        roughness = np.full(n, float(mat.roughness_factor))
        if self.metallic_roughness is not None and uv is not None:
            mr = sample_texture(self.metallic_roughness, uv, self._wrap("metallic_roughness")) / 255.0
            metallic = metallic * mr[:, 2]
            roughness = roughness * mr[:, 1]
        out["metallic"] = metallic
        out["roughness"] = roughness
        occlusion = np.ones(n)
        if self.occlusion is not None and uv is not None:
            occ = sample_texture(self.occlusion, uv, self._wrap("occlusion")) / 255.0
            occlusion = 1.0 + float(self.occlusion_strength) * (occ - 1.0)
        out["occlusion"] = occlusion

        # Normals.
        geometric = self.face_normals[face]
        out["geometric_normal"] = geometric
        if mesh.normals is not None:
            normal, length = unit_rows(interp(mesh.normals))
            bad = length <= 1e-12
            normal[bad] = geometric[bad]
        else:
            normal = geometric.copy()
        tangents = self.frame_tangents if self.normal is not None else None
        if self.normal is not None and uv is not None and tangents is not None:
            t = interp(tangents[:, :3])
            w = np.where(interp(tangents[:, 3:4])[:, 0] < 0.0, -1.0, 1.0)
            t = t - normal * np.sum(normal * t, axis=1, keepdims=True)
            t, t_len = unit_rows(t)
            b = np.cross(normal, t) * w[:, None]
            m = sample_texture(self.normal, uv, self._wrap("normal")) / 255.0 * 2.0 - 1.0
            m[:, :2] *= float(self.normal_scale)
            m, _ = unit_rows(m)
            perturbed, p_len = unit_rows(m[:, 0:1] * t + m[:, 1:2] * b + m[:, 2:3] * normal)
            ok = (t_len > 1e-12) & (p_len > 1e-12)
            normal = np.where(ok[:, None], perturbed, normal)
        out["normal"] = normal
        return out


@dataclass(frozen=True, eq=False)
class SourceScene:
    """A loaded mesh file: world-space parts plus provenance.

    Attributes:
        parts: the triangle primitives, one per primitive and node instance, in scene order.
        name: display name (the file stem).
        sha256: hex digest of the main file's bytes.
        warnings: what was not carried over or had to be approximated (one sentence each).
        meta: facts about the file: ``format``, ``source``, ``bytes``, and for glTF ``generator``,
            ``extensions_used``, ``skins``, ``animations``, ``scene``, ``node_instances``.
    """

    parts: list[SourcePart]
    name: str = "mesh"
    sha256: str = ""
    warnings: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounds of the vertices used by faces: ``([3] min, [3] max)`` float64, file units."""
        cached = self.__dict__.get("_bounds")
        if cached is not None:
            return cached[0].copy(), cached[1].copy()
        lo = np.full(3, np.inf)
        hi = np.full(3, -np.inf)
        for part in self.parts:
            if part.mesh.n_faces == 0:
                continue
            used = np.zeros(part.mesh.n_vertices, dtype=bool)
            used[part.mesh.faces.ravel()] = True
            pts = part.mesh.vertices[used]
            lo = np.minimum(lo, pts.min(axis=0))
            hi = np.maximum(hi, pts.max(axis=0))
        if not np.all(np.isfinite(lo)):
            lo, hi = np.zeros(3), np.zeros(3)
        # Parts are not meant to change after loading, so the bounds are computed once.
        self.__dict__["_bounds"] = (lo.astype(np.float64), hi.astype(np.float64))
        return lo.astype(np.float64), hi.astype(np.float64)

    def diagonal(self) -> float:
        """Length of the bounding box's diagonal (file units)."""
        lo, hi = self.bounds()
        return float(np.linalg.norm(hi - lo))

    def n_faces(self) -> int:
        """Total number of triangles over all parts."""
        return int(sum(p.mesh.n_faces for p in self.parts))

    def n_vertices(self) -> int:
        """Total number of vertices over all parts."""
        return int(sum(p.mesh.n_vertices for p in self.parts))

    def transformed(self, matrix: np.ndarray) -> SourceScene:
        """A copy with every part moved by a 4×4 matrix (positions by M, normals by its inverse transpose,
        tangents by its linear part; a mirroring matrix flips the winding), e.g.
        :data:`~meshforge.io.meshes.Z_UP_TO_Y_UP`."""
        parts = []
        for part in self.parts:
            m = part.mesh
            v, f, n, t = transform_geometry(m.vertices, m.faces, m.normals, part.tangents, matrix)
            mesh = m.replace(
                vertices=v.astype(np.float32), faces=f, normals=None if n is None else n.astype(np.float32)
            )
            parts.append(replace(part, mesh=mesh, tangents=None if t is None else t.astype(np.float32)))
        return replace(self, parts=parts)

    @classmethod
    def from_asset(cls, asset: Asset) -> SourceScene:
        """Wrap an :class:`~meshforge.types.Asset` as a one-part scene (for metrics and diagnostics).

        The asset's textures sample with ``CLAMP_TO_EDGE``, as :func:`meshforge.export.glb.write_glb`
        writes its sampler; vertex colours are used only when there are no textures (as the exporter does).
        """
        tex = asset.textures
        mesh = asset.mesh
        if tex is not None and mesh.colors is not None:
            mesh = mesh.replace(colors=None)
        clamp = (CLAMP_TO_EDGE, CLAMP_TO_EDGE)
        part = SourcePart(
            mesh=mesh,
            material=asset.material,
            base_color=tex.base_color if tex is not None else None,
            metallic_roughness=tex.metallic_roughness if tex is not None else None,
            normal=tex.normal if tex is not None else None,
            occlusion=tex.occlusion if tex is not None else None,
            name=asset.name,
            wrap={n: clamp for n in MAP_NAMES},
        )
        return cls(parts=[part], name=asset.name, meta={"format": "asset"})

    @classmethod
    def from_mesh(cls, mesh: Mesh, name: str = "mesh") -> SourceScene:
        """Wrap a bare :class:`~meshforge.types.Mesh` as a one-part scene with the default material."""
        return cls(parts=[SourcePart(mesh=mesh, name=name)], name=name, meta={"format": "mesh"})


# --------------------------------------------------------------------------------------------------------
# Shared by the readers
# --------------------------------------------------------------------------------------------------------


def transform_geometry(
    vertices: np.ndarray,
    faces: np.ndarray,
    normals: np.ndarray | None,
    tangents: np.ndarray | None,
    matrix: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Apply a 4×4 world matrix: positions by M, normals by the inverse transpose, tangents by M's linear
    part; a mirroring matrix (det < 0) reverses the winding and the tangents' handedness."""
    m = np.asarray(matrix, dtype=np.float64)
    if np.allclose(m, np.eye(4), rtol=0.0, atol=0.0):
        return vertices, faces, normals, tangents
    lin = m[:3, :3]
    v = vertices.astype(np.float64) @ lin.T + m[:3, 3]
    det = float(np.linalg.det(lin))
    if det < 0.0:
        faces = faces[:, [0, 2, 1]]
    if normals is not None:
        try:
            nmat = np.linalg.inv(lin).T
        except np.linalg.LinAlgError:
            nmat = lin
        normals = unit_rows(normals.astype(np.float64) @ nmat.T)[0]
    if tangents is not None:
        t = unit_rows(tangents[:, :3].astype(np.float64) @ lin.T)[0]
        w = tangents[:, 3:4].astype(np.float64) * (-1.0 if det < 0.0 else 1.0)
        tangents = np.concatenate([t, w], axis=1)
    return v, faces, normals, tangents


def decode_image_rgba(blob: bytes) -> np.ndarray:
    """Decode PNG/JPEG/WebP bytes to ``[H, W, 4]`` uint8 (16-bit greyscale scaled, not clipped)."""
    from PIL import Image as PILImage

    with warnings.catch_warnings():
        warnings.simplefilter("error", PILImage.DecompressionBombWarning)
        im: Any = PILImage.open(io.BytesIO(blob), formats=_IMAGE_FORMATS)
        w, h = im.size
        if w * h > MAX_TEXTURE_PIXELS:
            raise ValueError(f"{w}×{h} pixels is more than the limit of {MAX_TEXTURE_PIXELS}")
        im.load()
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float64)
        grey = np.clip(np.rint(a * 255.0 / 65535.0), 0, 255).astype(np.uint8)
        return np.concatenate([np.repeat(grey[..., None], 3, axis=2), np.full(grey.shape + (1,), 255, np.uint8)], 2)
    if im.mode != "RGBA":
        im = im.convert("RGBA")
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def add_warning(notes: list[str], message: str) -> None:
    """Append ``message`` to a loader's warnings unless it is there already (each is said once)."""
    if message not in notes:
        notes.append(message)
