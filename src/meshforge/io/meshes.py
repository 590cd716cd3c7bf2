"""Loading dense source meshes (GLB/glTF, OBJ, PLY, STL) for the ``optimize`` job and for evaluation.

A file becomes a :class:`SourceScene`: a flat list of :class:`SourcePart` objects, one per triangle
primitive and scene-graph instance, in world space (node transforms applied), each with its own
:class:`~meshforge.types.Material` and texture maps. Everything after parsing (transforms, winding,
colour spaces, texture sampling, tangent frames) is our code.

Parsing:

* **GLB / glTF** are read by our own code: the GLB container (glTF 2.0 §4.4), the JSON, buffers (the BIN
  chunk, ``data:`` URIs, or files beside a ``.gltf``), accessors (§3.6.2: byte strides, normalized
  integers, sparse accessors), the node hierarchy (§3.5) and materials (§3.9), images decoded by Pillow.
  trimesh's glTF loader was checked against the shared assets and loses things this job needs: it
  quantises ``baseColorFactor`` to 8 bits (the cake's ``0.258823544`` becomes ``66/255``), drops
  ``TANGENT``, the normal-texture ``scale``, occlusion ``strength``, sampler wrap modes, ``texCoord``
  sets, ``KHR_texture_transform`` and ``KHR_materials_unlit``, does not de-normalise normalized integer
  accessors (``COLOR_0`` as ``UNSIGNED_BYTE``, ``KHR_mesh_quantization``) and gives no mapping from its
  geometries back to glTF primitives and material indices — so the JSON is the source of truth here.
* **OBJ (+MTL, textures), PLY, STL** are parsed by trimesh (``process=False``, so vertices and faces stay
  as in the file); OBJ texture coordinates (v up) are converted to glTF's (v down).

Conventions of the result (those of :mod:`meshforge.types`): positions in the file's units (metres for
glTF), counter-clockwise front faces, glTF UVs (origin top-left, v down), vertex colours sRGB-encoded.
Material factors are stored as in glTF: ``base_color_factor`` is *linear* RGBA.

Materials where the file has none follow each format's convention: a glTF primitive without a material
gets glTF's default material (glTF 2.0 §3.9.6: white, metallic 1, roughness 1), with a warning since it
renders as bare metal; OBJ, PLY and STL have no metalness, so their surfaces are dielectric (metallic 0)
with roughness :data:`DEFAULT_ROUGHNESS`, unless an MTL gives ``Pm``/``Pr`` or ``Ns`` (see
:func:`_trimesh_material`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import logging
import math
import os
import re
import struct
import warnings
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np

from ..errors import InputError, one_line
from ..geometry.color import linear_to_srgb, srgb_to_linear
from ..geometry.normals import vertex_normals
from ..geometry.tangents import compute_tangents
from ..geometry.texture import CLAMP_TO_EDGE, MIRRORED_REPEAT, REPEAT, WRAP_MODES, sample_texture
from ..gltf import (
    CHUNK_BIN,
    CHUNK_JSON,
    COMPONENT_DTYPES,
    GLB_MAGIC,
    TYPE_WIDTHS,
    UNSIGNED_BYTE,
    UNSIGNED_INT,
    UNSIGNED_SHORT,
)
from ..types import Asset, Material, Mesh

__all__ = [
    "CLAMP_TO_EDGE",
    "DEFAULT_MATERIAL_WARNING",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_ROUGHNESS",
    "MIRRORED_REPEAT",
    "REPEAT",
    "SKIN_WARNING",
    "SUPPORTED_FORMATS",
    "SourcePart",
    "SourceScene",
    "Z_UP_TO_Y_UP",
    "load_mesh",
    "sample_texture",
]

#: default limit on the size of a mesh file (and of each external resource), in bytes: 512 MiB
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
#: formats :func:`load_mesh` reads (the file extension, or the ``fmt`` argument)
SUPPORTED_FORMATS: tuple[str, ...] = ("glb", "gltf", "obj", "ply", "stl")
#: the warning given for skinned or animated inputs (glTF ``skins``, ``animations``)
SKIN_WARNING = "skin and animation are not carried over: the mesh is loaded in its rest pose (as stored, not skinned)"
#: roughness of OBJ/PLY/STL surfaces whose file says nothing about it (a neutral, semi-matte dielectric)
DEFAULT_ROUGHNESS = 0.5
#: the warning given when a glTF primitive has no material (glTF 2.0 §3.9.6 default material)
DEFAULT_MATERIAL_WARNING = (
    "a primitive has no material, so glTF's default material is used (white, metallic 1, roughness 1: it "
    "renders as bare metal); give it a material in the source to change that"
)
#: rotation from a Z-up frame (scans, CAD, Blender: +Z up, front facing −Y) to glTF's +Y up (front facing
#: +Z): −90° about X, (x, y, z) → (x, z, −y)
Z_UP_TO_Y_UP = np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1.0]])
#: the largest texture image accepted, in pixels (width × height); larger ones are dropped with a warning
MAX_TEXTURE_PIXELS = 16384 * 16384
#: most scene-graph node instances followed (guards against exponential instancing in a node DAG)
MAX_NODE_INSTANCES = 1_000_000
#: most vertices all parts together may have after instancing (guards against instancing bombs)
MAX_TOTAL_VERTICES = 100_000_000

_MAP_NAMES = ("base_color", "metallic_roughness", "normal", "occlusion")

# glTF 2.0 §3.6.2.2 accessor component types, §3.6.2.3 element types, §3.7.2.1 primitive modes.
_POINTS, _LINES, _LINE_LOOP, _LINE_STRIP, _TRIANGLES, _TRIANGLE_STRIP, _TRIANGLE_FAN = range(7)

# Extensions that compress geometry: without a decoder the positions cannot be read at all.
_GEOMETRY_COMPRESSION = ("KHR_draco_mesh_compression", "EXT_meshopt_compression")
# Extensions this loader understands (or may safely ignore for a rest-pose surface with PBR materials).
_KNOWN_EXTENSIONS = {
    "KHR_materials_unlit",
    "KHR_texture_transform",
    "KHR_mesh_quantization",
    "EXT_texture_webp",
    "KHR_materials_emissive_strength",
    "KHR_materials_pbrSpecularGlossiness",
    "KHR_lights_punctual",
}
# Pillow formats accepted for embedded textures (glTF core allows PNG and JPEG; EXT_texture_webp adds WebP).
_IMAGE_FORMATS = ["PNG", "JPEG", "WEBP"]
_PASS_THROUGH = (MemoryError, KeyboardInterrupt, SystemExit)


def _unit(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
        return {n: getattr(self, n) for n in _MAP_NAMES if getattr(self, n) is not None}

    def texture_sizes(self) -> dict[str, list[int]]:
        """``{map name: [width, height]}`` of the texture maps present."""
        return {n: [int(a.shape[1]), int(a.shape[0])] for n, a in self.textures().items()}

    @cached_property
    def face_normals(self) -> np.ndarray:
        """``[F, 3]`` float64 unit geometric normals (right-hand rule on the CCW winding; 0 for degenerate faces)."""
        t = self.mesh.vertices.astype(np.float64)[self.mesh.faces]
        return _unit(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]))[0]

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
            normal, length = _unit(interp(mesh.normals))
            bad = length <= 1e-12
            normal[bad] = geometric[bad]
        else:
            normal = geometric.copy()
        tangents = self.frame_tangents if self.normal is not None else None
        if self.normal is not None and uv is not None and tangents is not None:
            t = interp(tangents[:, :3])
            w = np.where(interp(tangents[:, 3:4])[:, 0] < 0.0, -1.0, 1.0)
            t = t - normal * np.sum(normal * t, axis=1, keepdims=True)
            t, t_len = _unit(t)
            b = np.cross(normal, t) * w[:, None]
            m = sample_texture(self.normal, uv, self._wrap("normal")) / 255.0 * 2.0 - 1.0
            m[:, :2] *= float(self.normal_scale)
            m, _ = _unit(m)
            perturbed, p_len = _unit(m[:, 0:1] * t + m[:, 1:2] * b + m[:, 2:3] * normal)
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
        tangents by its linear part; a mirroring matrix flips the winding), e.g. :data:`Z_UP_TO_Y_UP`."""
        parts = []
        for part in self.parts:
            m = part.mesh
            v, f, n, t = _transform(m.vertices, m.faces, m.normals, part.tangents, matrix)
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
            wrap={n: clamp for n in _MAP_NAMES},
        )
        return cls(parts=[part], name=asset.name, meta={"format": "asset"})

    @classmethod
    def from_mesh(cls, mesh: Mesh, name: str = "mesh") -> SourceScene:
        """Wrap a bare :class:`~meshforge.types.Mesh` as a one-part scene with the default material."""
        return cls(parts=[SourcePart(mesh=mesh, name=name)], name=name, meta={"format": "mesh"})


# --------------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------------


def load_mesh(
    source: str | os.PathLike[str] | bytes,
    *,
    fmt: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    name: str | None = None,
) -> SourceScene:
    """Load a mesh file into world-space parts with materials and textures.

    Formats: ``.glb`` and ``.gltf`` (external buffers and images are read from the ``.gltf``'s folder,
    never outside it; ``data:`` URIs are decoded), ``.obj`` (+ ``.mtl`` and its textures beside it), ``.ply``
    (vertex or face colours, texture coordinates), ``.stl`` (identical positions are welded so the mesh is
    connected). See the module docstring for what is read by whom.

    glTF specifics: the default scene (``scene``, else the first; without scenes, every root node) is
    flattened: every node instance of a mesh gives one part per triangle primitive, transformed by the
    node's world matrix (§3.5.3: ``T·R·S`` or ``matrix``); a transform with negative determinant flips the
    face winding; normals are transformed by the inverse transpose, tangents by the matrix (``w`` flipped
    with the winding). Triangle strips and fans become triangles; points and lines are skipped with a
    warning. A skinned mesh is loaded in its rest pose, i.e. the vertices as stored (the skin's bind pose;
    glTF §3.7.3 says the skinned node's own transform is ignored), and skinned or animated files get the
    warning :data:`SKIN_WARNING`; morph targets are ignored with a warning. Unknown required extensions
    give a warning; geometry compression (Draco, meshopt) is refused.

    Args:
        source: a path, or the file's bytes (then ``fmt`` may be needed; GLB, glTF JSON, PLY and STL are
            recognised from their content; a ``.gltf`` or ``.obj`` given as bytes cannot reach external files).
        fmt: the format (``"glb"``, ``"gltf"``, ``"obj"``, ``"ply"``, ``"stl"``), overriding the extension.
        max_bytes: limit on the file's size and on each external resource (default 512 MiB).
        name: display name (default: the file stem, or ``"mesh"`` for bytes).

    Returns:
        A :class:`SourceScene`; ``sha256`` is that of the main file's bytes.

    Raises:
        InputError: one line starting with the file's name: missing file, not a regular file, unknown or
            unsupported format, empty or larger than ``max_bytes``, not a mesh / corrupt / truncated file
            (bad GLB header or chunk lengths, invalid JSON, accessors or indices out of range, buffers shorter
            than declared), external resources that are missing or outside the file's folder, compressed
            geometry, no triangles, NaN or infinite positions.
    """
    data, label, stem, path = _read_source(source, max_bytes, name)
    kind = _resolve_format(fmt, path, data, label)
    digest = hashlib.sha256(data).hexdigest()
    meta: dict[str, Any] = {"format": kind, "source": str(path) if path is not None else "<bytes>", "bytes": len(data)}
    notes: list[str] = []
    try:
        if kind in ("glb", "gltf"):
            parts = _GltfLoader(data, kind, label, path, max_bytes, notes, meta).load()
        else:
            parts = _load_with_trimesh(data, kind, label, path, notes, meta)
    except (InputError, *_PASS_THROUGH):
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError, struct.error) as exc:
        # Malformed documents reach places no explicit check covers (e.g. a string where a number belongs).
        raise InputError(f"{label}: corrupt {kind.upper()} file ({type(exc).__name__}: {one_line(exc)})") from None
    _check_parts(parts, label)
    scene = SourceScene(parts=parts, name=name if name is not None else stem, sha256=digest, warnings=notes, meta=meta)
    diag = scene.diagonal()
    meta["diagonal"] = diag
    if kind in ("glb", "gltf") and diag > 100.0:
        _warn(notes, f"the model is {diag:.3g} units across; glTF units are metres, so the file may use centimetres")
    return scene


def _warn(notes: list[str], message: str) -> None:
    if message not in notes:
        notes.append(message)


def _read_source(
    source: str | os.PathLike[str] | bytes, max_bytes: int, name: str | None
) -> tuple[bytes, str, str, Path | None]:
    """Return ``(data, label for messages, default name, path or None)``."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        label = name or "mesh"
        if len(data) > max_bytes:
            raise InputError(f"{label}: {len(data)} bytes is larger than the limit of {max_bytes} bytes (max_bytes)")
        if not data:
            raise InputError(f"{label}: empty data, not a mesh")
        return data, label, "mesh", None
    try:
        path = Path(os.fspath(source))
    except TypeError:
        raise InputError(f"cannot load a mesh from a {type(source).__name__}; give a path or bytes") from None
    label = str(path)
    try:
        if not path.exists():
            raise InputError(f"{label}: no such file")
        if not path.is_file():
            raise InputError(f"{label}: not a file ({'a directory' if path.is_dir() else 'not a regular file'})")
        size = path.stat().st_size
        if size > max_bytes:
            raise InputError(f"{label}: file is {size} bytes, larger than the limit of {max_bytes} bytes (max_bytes)")
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{label}: cannot read the file ({one_line(exc)})") from None
    if not data:
        raise InputError(f"{label}: empty file, not a mesh")
    return data, label, path.stem, path


def _resolve_format(fmt: str | None, path: Path | None, data: bytes, label: str) -> str:
    supported = ", ".join("." + f for f in SUPPORTED_FORMATS)
    if fmt is not None:
        kind = fmt.lower().lstrip(".")
        if kind not in SUPPORTED_FORMATS:
            raise InputError(f"{label}: unsupported mesh format {fmt!r} (supported: {supported})")
        return kind
    if path is not None:
        kind = path.suffix.lower().lstrip(".")
        if kind not in SUPPORTED_FORMATS:
            shown = path.suffix or "(none)"
            raise InputError(f"{label}: unsupported mesh file extension {shown} (supported: {supported})")
        return kind
    # Bytes: recognise by content.
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n")
    if data[:4] == b"glTF":
        return "glb"
    if head.startswith(b"{"):
        return "gltf"
    if head[:3] == b"ply" and head[3:4] in (b"\n", b"\r"):
        return "ply"
    if len(data) >= 84 and 84 + 50 * struct.unpack_from("<I", data, 80)[0] == len(data):
        return "stl"
    if head[:5].lower() == b"solid":
        return "stl"
    if re.search(rb"(?m)^\s*(v|vt|vn|f)\s", data[:65536]):
        return "obj"
    raise InputError(f"{label}: cannot tell the mesh format from the content; pass fmt= (one of {supported})")


def _check_parts(parts: list[SourcePart], label: str) -> None:
    if not parts or sum(p.mesh.n_faces for p in parts) == 0:
        raise InputError(f"{label}: no triangles (the file has no triangle faces)")
    for part in parts:
        if not np.all(np.isfinite(part.mesh.vertices)):
            raise InputError(f"{label}: vertex positions contain NaN or infinite values (part {part.name!r})")
        for attr in ("normals", "uv", "colors"):
            arr = getattr(part.mesh, attr)
            if arr is not None and not np.all(np.isfinite(arr)):
                raise InputError(f"{label}: {attr} contain NaN or infinite values (part {part.name!r})")


def _transform(
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
        normals = _unit(normals.astype(np.float64) @ nmat.T)[0]
    if tangents is not None:
        t = _unit(tangents[:, :3].astype(np.float64) @ lin.T)[0]
        w = tangents[:, 3:4].astype(np.float64) * (-1.0 if det < 0.0 else 1.0)
        tangents = np.concatenate([t, w], axis=1)
    return v, faces, normals, tangents


# --------------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------------


def _decode_image_rgba(blob: bytes) -> np.ndarray:
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


# --------------------------------------------------------------------------------------------------------
# glTF
# --------------------------------------------------------------------------------------------------------


def _quat_matrix(q: list[float]) -> np.ndarray:
    x, y, z, w = (float(c) for c in q)
    n = math.sqrt(x * x + y * y + z * z + w * w)
    if n == 0.0 or not math.isfinite(n):
        return np.eye(3)
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _uv_transform(uv: np.ndarray, ext: dict[str, Any]) -> np.ndarray:
    """Apply ``KHR_texture_transform``: ``uv' = T · R · S · uv`` (offset, rotation, scale)."""
    ox, oy = (float(c) for c in ext.get("offset", [0.0, 0.0]))
    r = float(ext.get("rotation", 0.0))
    sx, sy = (float(c) for c in ext.get("scale", [1.0, 1.0]))
    c, s = math.cos(r), math.sin(r)
    m = np.array([[1, 0, ox], [0, 1, oy], [0, 0, 1]]) @ np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])
    m = m @ np.diag([sx, sy, 1.0])
    return np.asarray(uv, dtype=np.float64) @ m[:2, :2].T + m[:2, 2]


def _strip_faces(idx: np.ndarray) -> np.ndarray:
    n = len(idx) - 2
    if n <= 0:
        return np.zeros((0, 3), dtype=np.int64)
    i = np.arange(n)
    odd = i % 2 == 1
    a = np.where(odd, idx[i + 1], idx[i])
    b = np.where(odd, idx[i], idx[i + 1])
    f = np.stack([a, b, idx[i + 2]], axis=1)
    return f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])]


def _fan_faces(idx: np.ndarray) -> np.ndarray:
    n = len(idx) - 2
    if n <= 0:
        return np.zeros((0, 3), dtype=np.int64)
    i = np.arange(n)
    return np.stack([idx[i + 1], idx[i + 2], np.full(n, idx[0])], axis=1)


@dataclass
class _Primitive:
    """Decoded primitive data in the mesh's local frame (cached per (mesh, primitive) across instances)."""

    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray | None
    tangents: np.ndarray | None
    uv: np.ndarray | None
    colors: np.ndarray | None
    material: Material
    maps: dict[str, np.ndarray]
    wrap: dict[str, tuple[int, int]]
    normal_scale: float
    occlusion_strength: float
    unlit: bool


class _GltfLoader:
    """Reads a GLB or .gltf document into :class:`SourcePart` objects (see :func:`load_mesh`)."""

    def __init__(
        self,
        data: bytes,
        kind: str,
        label: str,
        path: Path | None,
        max_bytes: int,
        notes: list[str],
        meta: dict[str, Any],
    ) -> None:
        self.label = label
        self.base_dir = path.parent if path is not None else None
        self.max_bytes = max_bytes
        self.notes = notes
        self.meta = meta
        self.external_bytes = 0
        if kind == "glb":
            self.doc, self.bin_chunk = self._parse_glb(data)
        else:
            self.doc, self.bin_chunk = self._parse_json(data), None
        self._buffers: dict[int, bytes] = {}
        self._accessors: dict[int, np.ndarray] = {}
        self._images: dict[int, np.ndarray | None] = {}
        self._maps: dict[tuple[int, str], np.ndarray] = {}
        self._materials: dict[int | None, tuple[Material, dict[str, Any]]] = {}

    # -- errors ---------------------------------------------------------------------------------------

    def _corrupt(self, why: str) -> InputError:
        return InputError(f"{self.label}: corrupt glTF file ({why})")

    def _list(self, key: str) -> list[Any]:
        value = self.doc.get(key, [])
        if not isinstance(value, list):
            raise self._corrupt(f"'{key}' is not a list")
        return value

    def _item(self, key: str, index: Any) -> dict[str, Any]:
        items = self._list(key)
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(items):
            raise self._corrupt(f"{key} index {index!r} out of range (0..{len(items) - 1})")
        item = items[index]
        if not isinstance(item, dict):
            raise self._corrupt(f"{key}[{index}] is not an object")
        return item

    # -- container ------------------------------------------------------------------------------------

    def _parse_glb(self, data: bytes) -> tuple[dict[str, Any], bytes | None]:
        if len(data) < 12:
            raise InputError(f"{self.label}: not a GLB file (only {len(data)} bytes)")
        magic, version, length = struct.unpack_from("<III", data, 0)
        if magic != GLB_MAGIC:
            raise InputError(f"{self.label}: not a GLB file (bad magic bytes)")
        if version != 2:
            raise InputError(f"{self.label}: GLB version {version} is not supported (only glTF 2.0)")
        if length > len(data):
            raise InputError(f"{self.label}: truncated GLB file (header says {length} bytes, file has {len(data)})")
        offset = 12
        doc: dict[str, Any] | None = None
        bin_chunk: bytes | None = None
        while offset + 8 <= length:
            chunk_len, chunk_type = struct.unpack_from("<II", data, offset)
            start, end = offset + 8, offset + 8 + chunk_len
            if end > length:
                raise InputError(f"{self.label}: truncated GLB file (a chunk runs past the end)")
            if doc is None:
                if chunk_type != CHUNK_JSON:
                    raise InputError(f"{self.label}: corrupt GLB file (the first chunk is not JSON)")
                doc = self._parse_json(data[start:end])
            elif chunk_type == CHUNK_BIN and bin_chunk is None:
                bin_chunk = data[start:end]
            offset = end + (-end % 4 if end % 4 else 0)
        if doc is None:
            raise InputError(f"{self.label}: truncated GLB file (no JSON chunk)")
        return doc, bin_chunk

    def _parse_json(self, raw: bytes) -> dict[str, Any]:
        try:
            doc = json.loads(raw.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise InputError(f"{self.label}: not a glTF file (invalid JSON: {one_line(exc)})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("asset"), dict):
            raise InputError(f"{self.label}: not a glTF file (no 'asset' object)")
        version = str(doc["asset"].get("version", ""))
        if not version.startswith("2."):
            raise InputError(f"{self.label}: glTF version {version or '?'} is not supported (only glTF 2.0)")
        return doc

    def _resource(self, uri: str, what: str) -> bytes:
        """Bytes of a buffer/image URI: a ``data:`` URI or a relative file inside the .gltf's folder."""
        if uri.startswith("data:"):
            header, _, payload = uri.partition(",")
            try:
                raw = (
                    base64.b64decode(payload, validate=False)
                    if header.endswith(";base64")
                    else unquote(payload).encode()
                )
            except (binascii.Error, ValueError) as exc:
                raise self._corrupt(f"{what} has an invalid data URI ({one_line(exc)})") from None
            return raw
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", uri) and not re.match(r"^[a-zA-Z]:[\\/]", uri):
            raise InputError(f"{self.label}: {what} refers to {uri!r}; only relative files and data: URIs are read")
        if self.base_dir is None:
            raise InputError(f"{self.label}: {what} is an external file ({uri!r}), which cannot be read from bytes")
        base = self.base_dir.resolve()
        target = (base / unquote(uri)).resolve()
        if base != target and base not in target.parents:
            raise InputError(f"{self.label}: {what} ({uri!r}) lies outside the glTF file's folder; refused")
        try:
            size = target.stat().st_size
            if size > self.max_bytes or self.external_bytes + size > 4 * self.max_bytes:
                raise InputError(f"{self.label}: {what} ({uri!r}) is {size} bytes, more than the limit (max_bytes)")
            raw = target.read_bytes()
        except FileNotFoundError:
            raise InputError(f"{self.label}: {what} file {uri!r} not found beside it") from None
        except OSError as exc:
            raise InputError(f"{self.label}: cannot read {what} {uri!r} ({one_line(exc)})") from None
        self.external_bytes += len(raw)
        return raw

    def _buffer(self, index: int) -> bytes:
        if index in self._buffers:
            return self._buffers[index]
        buf = self._item("buffers", index)
        declared = buf.get("byteLength", 0)
        if "uri" in buf:
            data = self._resource(str(buf["uri"]), f"buffer {index}")
        elif index == 0 and self.bin_chunk is not None:
            data = self.bin_chunk
        else:
            raise self._corrupt(f"buffer {index} has no uri and there is no BIN chunk")
        if not isinstance(declared, int) or len(data) < declared:
            raise InputError(f"{self.label}: truncated glTF data (buffer {index} has {len(data)} of {declared} bytes)")
        self._buffers[index] = data
        return data

    def _view_bytes(self, index: int) -> tuple[bytes, int, int, int | None]:
        """``(buffer, start, end, byteStride)`` of a bufferView, bounds-checked."""
        view = self._item("bufferViews", index)
        data = self._buffer(view.get("buffer", -1))
        start = view.get("byteOffset", 0)
        length = view.get("byteLength", -1)
        if not isinstance(start, int) or not isinstance(length, int) or start < 0 or length < 0:
            raise self._corrupt(f"bufferView {index} has an invalid offset or length")
        if start + length > len(data):
            raise InputError(f"{self.label}: truncated glTF data (bufferView {index} runs past its buffer)")
        stride = view.get("byteStride")
        return data, start, start + length, stride if isinstance(stride, int) and stride > 0 else None

    def _read_array(
        self, view_index: int, byte_offset: int, count: int, dtype: np.dtype[Any], width: int, what: str
    ) -> np.ndarray:
        data, start, end, stride = self._view_bytes(view_index)
        item = dtype.itemsize * width
        stride = stride or item
        begin = start + byte_offset
        if count == 0:
            return np.zeros((0, width), dtype=dtype)
        last = begin + stride * (count - 1) + item
        if byte_offset < 0 or last > end:
            raise InputError(f"{self.label}: corrupt glTF file ({what} reads past the end of its bufferView)")
        arr = np.ndarray((count, width), dtype=dtype, buffer=data, offset=begin, strides=(stride, dtype.itemsize))
        return np.array(arr)  # copy: contiguous, aligned, writable

    def accessor(self, index: Any, *, normalize_ints: bool = True) -> np.ndarray:
        """Decode an accessor to ``[count, width]`` (float64 when normalized or float, else int64)."""
        if isinstance(index, int) and index in self._accessors:
            return self._accessors[index]
        acc = self._item("accessors", index)
        what = f"accessor {index}"
        ctype = acc.get("componentType")
        if ctype not in COMPONENT_DTYPES or acc.get("type") not in TYPE_WIDTHS:
            raise self._corrupt(f"{what} has an unknown componentType or type")
        dtype = np.dtype(COMPONENT_DTYPES[ctype])
        width = TYPE_WIDTHS[acc["type"]]
        count = acc.get("count", -1)
        if not isinstance(count, int) or count < 0:
            raise self._corrupt(f"{what} has an invalid count")
        # Buffer-backed data is bounds-checked against its bufferView; zero-filled (sparse-only) data is not.
        if "bufferView" not in acc and count * width * dtype.itemsize > self.max_bytes:
            raise InputError(f"{self.label}: {what} is too large ({count} elements, more than max_bytes)")
        if "bufferView" in acc:
            arr = self._read_array(acc["bufferView"], acc.get("byteOffset", 0), count, dtype, width, what)
        else:
            arr = np.zeros((count, width), dtype=dtype)
        sparse = acc.get("sparse")
        if isinstance(sparse, dict):
            n = sparse.get("count", 0)
            ind, val = sparse.get("indices", {}), sparse.get("values", {})
            if ind.get("componentType") not in (UNSIGNED_BYTE, UNSIGNED_SHORT, UNSIGNED_INT):
                raise self._corrupt(f"{what} has invalid sparse indices")
            idt = np.dtype(COMPONENT_DTYPES[ind["componentType"]])
            idx = self._read_array(ind.get("bufferView", -1), ind.get("byteOffset", 0), n, idt, 1, what)[:, 0]
            values = self._read_array(val.get("bufferView", -1), val.get("byteOffset", 0), n, dtype, width, what)
            if idx.size and int(idx.max()) >= count:
                raise self._corrupt(f"{what} has sparse indices out of range")
            arr[idx.astype(np.int64)] = values
        out: np.ndarray
        if dtype.kind == "f":
            out = arr.astype(np.float64)
        elif acc.get("normalized", False) and normalize_ints:
            # glTF 2.0 §3.11 (animation) / §3.6.2.2: normalized integer → float.
            maxval = float(np.iinfo(dtype).max)
            out = np.maximum(arr.astype(np.float64) / maxval, -1.0)
        else:
            out = arr.astype(np.int64)
        if isinstance(index, int):
            self._accessors[index] = out
        return out

    # -- materials and textures -----------------------------------------------------------------------

    def _image(self, index: int) -> np.ndarray | None:
        if index in self._images:
            return self._images[index]
        img = self._item("images", index)
        result: np.ndarray | None = None
        try:
            if "bufferView" in img:
                data, start, end, _ = self._view_bytes(img["bufferView"])
                blob = data[start:end]
            elif "uri" in img:
                blob = self._resource(str(img["uri"]), f"image {index}")
            else:
                raise ValueError("no bufferView or uri")
            result = _decode_image_rgba(blob)
        except InputError:
            raise
        except _PASS_THROUGH:
            raise
        except Exception as exc:
            _warn(
                self.notes,
                f"image {index} ({img.get('name', img.get('uri', ''))!s}) could not be decoded and is "
                f"left out ({one_line(exc)})",
            )
        self._images[index] = result
        return result

    def _texture_map(self, info: Any, kind: str) -> tuple[np.ndarray | None, tuple[int, int], dict[str, Any]]:
        """Resolve a textureInfo into ``(array in the map's layout, wrap modes, info)``."""
        if not isinstance(info, dict) or "index" not in info:
            return None, (REPEAT, REPEAT), {}
        tex = self._item("textures", info["index"])
        source = tex.get("source")
        ext = tex.get("extensions", {}) if isinstance(tex.get("extensions"), dict) else {}
        for name in ("EXT_texture_webp", "KHR_texture_basisu", "MSFT_texture_dds"):
            if source is None and isinstance(ext.get(name), dict):
                if name != "EXT_texture_webp":
                    _warn(self.notes, f"textures compressed with {name} cannot be decoded and are left out")
                    return None, (REPEAT, REPEAT), {}
                source = ext[name].get("source")
        wrap = (REPEAT, REPEAT)
        if "sampler" in tex:
            sampler = self._item("samplers", tex["sampler"])
            ws, wt = sampler.get("wrapS", REPEAT), sampler.get("wrapT", REPEAT)
            wrap = (ws if ws in WRAP_MODES else REPEAT, wt if wt in WRAP_MODES else REPEAT)
        if source is None:
            return None, wrap, info
        key = (int(source), kind)
        if key not in self._maps:
            rgba = self._image(int(source))
            if rgba is None:
                return None, wrap, info
            if kind == "base_color":
                arr = rgba
            elif kind == "occlusion":
                arr = np.ascontiguousarray(rgba[..., 0])
            else:
                arr = np.ascontiguousarray(rgba[..., :3])
            self._maps[key] = arr
        return self._maps[key], wrap, info

    def _material(self, index: int | None) -> tuple[Material, dict[str, Any]]:
        """``(Material, extra)`` with extra: maps, wrap, infos, normal_scale, occlusion_strength, unlit."""
        if index in self._materials:
            return self._materials[index]
        extra: dict[str, Any] = {"maps": {}, "wrap": {}, "infos": {}, "normal_scale": 1.0, "occlusion_strength": 1.0}
        if index is None:
            # glTF 2.0 §3.9.6: a primitive without a material uses the default material.
            _warn(self.notes, DEFAULT_MATERIAL_WARNING)
            extra["unlit"] = False
            self._materials[None] = (Material(name="default"), extra)
            return self._materials[None]
        mat = self._item("materials", index)
        ext = mat.get("extensions", {}) if isinstance(mat.get("extensions"), dict) else {}
        pbr = mat.get("pbrMetallicRoughness", {}) if isinstance(mat.get("pbrMetallicRoughness"), dict) else {}
        name = str(mat.get("name") or f"material_{index}")
        base_factor = pbr.get("baseColorFactor", [1.0, 1.0, 1.0, 1.0])
        metallic, roughness = pbr.get("metallicFactor", 1.0), pbr.get("roughnessFactor", 1.0)
        base_info, mr_info = pbr.get("baseColorTexture"), pbr.get("metallicRoughnessTexture")
        sg = ext.get("KHR_materials_pbrSpecularGlossiness")
        if isinstance(sg, dict) and "pbrMetallicRoughness" not in mat:
            _warn(
                self.notes,
                f"material {name!r} uses KHR_materials_pbrSpecularGlossiness; its diffuse colour is used "
                "as base colour, metallic 0, roughness 1 − glossiness",
            )
            base_factor = sg.get("diffuseFactor", [1.0, 1.0, 1.0, 1.0])
            base_info = sg.get("diffuseTexture")
            metallic, roughness = 0.0, 1.0 - float(sg.get("glossinessFactor", 1.0))
        try:
            factor = tuple(float(c) for c in base_factor)
            metallic, roughness = float(metallic), float(roughness)
        except (TypeError, ValueError):
            raise self._corrupt(f"material {index} has non-numeric factors") from None
        if len(factor) != 4 or not all(math.isfinite(c) for c in (*factor, metallic, roughness)):
            raise self._corrupt(f"material {index} has invalid factors")
        clipped = tuple(min(max(c, 0.0), 1.0) for c in factor)
        m_c, r_c = min(max(metallic, 0.0), 1.0), min(max(roughness, 0.0), 1.0)
        if clipped != factor or (m_c, r_c) != (metallic, roughness):
            _warn(self.notes, f"material {name!r} has factors outside [0, 1]; they are clipped")
        alpha_mode = str(mat.get("alphaMode", "OPAQUE"))
        if alpha_mode not in ("OPAQUE", "MASK", "BLEND"):
            _warn(self.notes, f"material {name!r} has an unknown alphaMode {alpha_mode!r}; OPAQUE is used")
            alpha_mode = "OPAQUE"
        material = Material(
            name=name,
            base_color_factor=(clipped[0], clipped[1], clipped[2], clipped[3]),
            metallic_factor=m_c,
            roughness_factor=r_c,
            alpha_mode=alpha_mode,
            alpha_cutoff=float(mat.get("alphaCutoff", 0.5)),
            double_sided=bool(mat.get("doubleSided", False)),
        )
        for kind, info in (
            ("base_color", base_info),
            ("metallic_roughness", mr_info),
            ("normal", mat.get("normalTexture")),
            ("occlusion", mat.get("occlusionTexture")),
        ):
            arr, wrap, used = self._texture_map(info, kind)
            if arr is not None:
                extra["maps"][kind] = arr
                extra["wrap"][kind] = wrap
                extra["infos"][kind] = used
        normal_info: dict[str, Any] = mat["normalTexture"] if isinstance(mat.get("normalTexture"), dict) else {}
        occ_info: dict[str, Any] = mat["occlusionTexture"] if isinstance(mat.get("occlusionTexture"), dict) else {}
        extra["normal_scale"] = float(normal_info.get("scale", 1.0))
        extra["occlusion_strength"] = float(occ_info.get("strength", 1.0))
        extra["unlit"] = "KHR_materials_unlit" in ext
        self._materials[index] = (material, extra)
        return self._materials[index]

    # -- primitives -----------------------------------------------------------------------------------

    def _primitive(self, mesh_index: int, prim_index: int, prim: dict[str, Any], where: str) -> _Primitive | None:
        attrs = prim.get("attributes", {})
        mode = prim.get("mode", _TRIANGLES)
        if mode not in (_TRIANGLES, _TRIANGLE_STRIP, _TRIANGLE_FAN):
            _warn(self.notes, "point and line primitives are skipped (only triangles are loaded)")
            return None
        if not isinstance(attrs, dict) or "POSITION" not in attrs:
            _warn(self.notes, f"{where} has no POSITION attribute and is skipped")
            return None
        ext = prim.get("extensions", {}) if isinstance(prim.get("extensions"), dict) else {}
        for name in _GEOMETRY_COMPRESSION:
            if name in ext:
                raise InputError(f"{self.label}: uses {name} (compressed geometry), which meshforge cannot decode")
        if prim.get("targets"):
            _warn(self.notes, "morph targets are not carried over (the base shape is used)")
        pos = self.accessor(attrs["POSITION"])
        if pos.shape[1] != 3:
            raise self._corrupt(f"{where} POSITION is not VEC3")
        nv = len(pos)
        if "indices" in prim:
            idx = self.accessor(prim["indices"], normalize_ints=False).reshape(-1)
            if idx.dtype.kind == "f":
                raise self._corrupt(f"{where} indices are not integers")
        else:
            idx = np.arange(nv, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= nv):
            raise self._corrupt(f"{where} has vertex indices out of range (0..{nv - 1})")
        if mode == _TRIANGLES:
            faces = idx[: len(idx) // 3 * 3].reshape(-1, 3)
        elif mode == _TRIANGLE_STRIP:
            faces = _strip_faces(idx)
        else:
            faces = _fan_faces(idx)

        def vertex_attr(name: str, widths: tuple[int, ...]) -> np.ndarray | None:
            if name not in attrs:
                return None
            arr = self.accessor(attrs[name])
            if len(arr) != nv or arr.shape[1] not in widths:
                raise self._corrupt(f"{where} {name} has {len(arr)}×{arr.shape[1]} values for {nv} vertices")
            return arr.astype(np.float64)

        normals = vertex_attr("NORMAL", (3,))
        tangents = vertex_attr("TANGENT", (4,))
        colors = vertex_attr("COLOR_0", (3, 4))
        material, extra = self._material(prim.get("material"))
        maps: dict[str, np.ndarray] = dict(extra["maps"])
        # The UV set (and transform) of the first textured map is the part's uv.
        uv = None
        chosen: dict[str, Any] | None = None
        for kind in _MAP_NAMES:
            if kind in extra["infos"]:
                chosen = extra["infos"][kind]
                break
        tex_coord = int(chosen.get("texCoord", 0)) if chosen else 0
        transform = None
        if chosen:
            tt = (
                chosen.get("extensions", {}).get("KHR_texture_transform")
                if isinstance(chosen.get("extensions"), dict)
                else None
            )
            if isinstance(tt, dict):
                transform = tt
                tex_coord = int(tt.get("texCoord", tex_coord))
        raw_uv = vertex_attr(f"TEXCOORD_{tex_coord}", (2,))
        if raw_uv is not None:
            uv = _uv_transform(raw_uv, transform) if transform else raw_uv
        if maps and uv is None:
            _warn(self.notes, f"{where} has textures but no TEXCOORD_{tex_coord}; its textures are left out")
            maps = {}
        if chosen and maps:

            def signature(info: dict[str, Any]) -> tuple[Any, ...]:
                e = info.get("extensions", {}) if isinstance(info.get("extensions"), dict) else {}
                return int(info.get("texCoord", 0)), json.dumps(e.get("KHR_texture_transform"), sort_keys=True)

            if any(signature(extra["infos"][k]) != signature(chosen) for k in maps):
                _warn(
                    self.notes,
                    f"material {material.name!r} uses different UV sets or transforms per texture; "
                    "all its maps are sampled with the first map's UVs",
                )
        if colors is not None:
            rgb = linear_to_srgb(np.clip(colors[:, :3], 0.0, 1.0)).astype(np.float64)
            a = np.clip(colors[:, 3:4], 0.0, 1.0) if colors.shape[1] == 4 else np.ones((nv, 1))
            colors = np.concatenate([rgb, a], axis=1)
        if normals is not None:
            normals = _unit(normals)[0]
        return _Primitive(
            vertices=pos,
            faces=faces.astype(np.int64),
            normals=normals,
            tangents=tangents,
            uv=uv,
            colors=colors,
            material=material,
            maps=maps,
            wrap={k: v for k, v in extra["wrap"].items() if k in maps},
            normal_scale=float(extra["normal_scale"]),
            occlusion_strength=float(extra["occlusion_strength"]),
            unlit=bool(extra["unlit"]),
        )

    # -- scene graph ----------------------------------------------------------------------------------

    def _local_matrix(self, node: dict[str, Any], index: int) -> np.ndarray:
        try:
            if "matrix" in node:
                m = np.array(node["matrix"], dtype=np.float64).reshape(4, 4).T  # column-major (§3.5.2)
            else:
                m = np.eye(4)
                s = np.diag([float(c) for c in node.get("scale", [1.0, 1.0, 1.0])])
                r = _quat_matrix(node.get("rotation", [0.0, 0.0, 0.0, 1.0]))
                m[:3, :3] = r @ s
                m[:3, 3] = [float(c) for c in node.get("translation", [0.0, 0.0, 0.0])]
        except (TypeError, ValueError):
            raise self._corrupt(f"node {index} has an invalid transform") from None
        if not np.all(np.isfinite(m)):
            raise self._corrupt(f"node {index} has a non-finite transform")
        return m

    def _instances(self) -> list[tuple[int, np.ndarray]]:
        """``(node index, world matrix)`` for every node instance of the default scene, depth-first."""
        nodes = self._list("nodes")
        scenes = self._list("scenes")
        if scenes:
            scene_index = self.doc.get("scene", 0)
            roots = self._item("scenes", scene_index).get("nodes", [])
            self.meta["scene"] = scene_index
            if len(scenes) > 1:
                _warn(self.notes, f"the file has {len(scenes)} scenes; only scene {scene_index} is loaded")
        else:
            children = {c for n in nodes if isinstance(n, dict) for c in n.get("children", [])}
            roots = [i for i in range(len(nodes)) if i not in children]
        stack: list[tuple[Any, np.ndarray, frozenset[int]]] = [(r, np.eye(4), frozenset()) for r in reversed(roots)]
        out: list[tuple[int, np.ndarray]] = []
        while stack:
            index, parent, path = stack.pop()
            node = self._item("nodes", index)
            if index in path:
                raise self._corrupt(f"node {index} is its own ancestor (a cycle in the node hierarchy)")
            world = parent @ self._local_matrix(node, index)
            out.append((index, world))
            if len(out) > MAX_NODE_INSTANCES:
                raise InputError(f"{self.label}: too many node instances (more than {MAX_NODE_INSTANCES})")
            inner = path | {index}
            stack.extend((c, world, inner) for c in reversed(node.get("children", [])))
        return out

    def load(self) -> list[SourcePart]:
        doc = self.doc
        used = [str(e) for e in doc.get("extensionsUsed", []) or []]
        required = [str(e) for e in doc.get("extensionsRequired", []) or []]
        self.meta.update(
            {
                "generator": str(doc["asset"].get("generator", "")),
                "extensions_used": used,
                "skins": len(self._list("skins")),
                "animations": len(self._list("animations")),
            }
        )
        for name in required:
            if name in _GEOMETRY_COMPRESSION:
                raise InputError(f"{self.label}: uses {name} (compressed geometry), which meshforge cannot decode")
            if name not in _KNOWN_EXTENSIONS:
                _warn(self.notes, f"required extension {name} is not supported; the model may load incorrectly")
        if self.meta["skins"] or self.meta["animations"]:
            _warn(self.notes, SKIN_WARNING)
        parts: list[SourcePart] = []
        cache: dict[tuple[int, int], _Primitive | None] = {}
        instances = self._instances()
        self.meta["node_instances"] = len(instances)
        if self._list("meshes") and not any("mesh" in self._item("nodes", i) for i, _ in instances):
            # No node of the scene shows a mesh: load every mesh untransformed rather than nothing.
            _warn(self.notes, "no scene node refers to a mesh; every mesh is loaded untransformed")
            self.doc["nodes"] = [*self._list("nodes")] + [{"mesh": i} for i in range(len(self._list("meshes")))]
            first = len(self._list("nodes")) - len(self._list("meshes"))
            instances = [(first + i, np.eye(4)) for i in range(len(self._list("meshes")))]
        total_vertices = 0
        for node_index, world in instances:
            node = self._item("nodes", node_index)
            if "mesh" not in node:
                continue
            mesh_index = node["mesh"]
            gl_mesh = self._item("meshes", mesh_index)
            prims = gl_mesh.get("primitives", [])
            skinned = "skin" in node
            base_name = str(node.get("name") or gl_mesh.get("name") or f"mesh_{mesh_index}")
            for k, prim in enumerate(prims):
                if not isinstance(prim, dict):
                    raise self._corrupt(f"mesh {mesh_index} primitive {k} is not an object")
                key = (int(mesh_index), k)
                if key not in cache:
                    cache[key] = self._primitive(mesh_index, k, prim, f"mesh {mesh_index} primitive {k}")
                p = cache[key]
                if p is None or len(p.faces) == 0:
                    continue
                # A skinned mesh's rest pose is its stored vertices (glTF §3.7.3: the node transform is ignored).
                matrix = np.eye(4) if skinned else world
                total_vertices += len(p.vertices)
                if total_vertices > MAX_TOTAL_VERTICES:
                    raise InputError(
                        f"{self.label}: too large: node instancing expands to more than {MAX_TOTAL_VERTICES} vertices"
                    )
                v, f, n, t = _transform(p.vertices, p.faces, p.normals, p.tangents, matrix)
                mesh = Mesh(vertices=v, faces=f, normals=n, uv=p.uv, colors=p.colors)
                parts.append(
                    SourcePart(
                        mesh=mesh,
                        material=p.material,
                        base_color=p.maps.get("base_color"),
                        metallic_roughness=p.maps.get("metallic_roughness"),
                        normal=p.maps.get("normal"),
                        normal_scale=p.normal_scale,
                        occlusion=p.maps.get("occlusion"),
                        tangents=None if t is None else t.astype(np.float32),
                        unlit=p.unlit,
                        name=base_name if len(prims) == 1 else f"{base_name}/{k}",
                        occlusion_strength=p.occlusion_strength,
                        wrap=dict(p.wrap),
                    )
                )
        return parts


# --------------------------------------------------------------------------------------------------------
# OBJ / PLY / STL through trimesh
# --------------------------------------------------------------------------------------------------------


def _pil_to_array(image: Any) -> np.ndarray | None:
    """A PIL image (as trimesh gives textures) → ``[H, W, 4]`` uint8, or None."""
    if image is None:
        return None
    try:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return _decode_image_rgba(buf.getvalue())
    except _PASS_THROUGH:
        raise
    except Exception:
        return None


def _load_with_trimesh(
    data: bytes, kind: str, label: str, path: Path | None, notes: list[str], meta: dict[str, Any]
) -> list[SourcePart]:
    """Parse OBJ / PLY / STL with trimesh (``process=False``) and convert to :class:`SourcePart` objects.

    OBJ materials: ``map_Kd`` becomes the base-colour texture, whose factor is then white (Kd ignored, as
    Blender's importer does: exporters commonly write Kd 0.8 beside a texture); a material without a
    texture uses Kd as ``base_color_factor`` (taken as linear, as Blender and trimesh's glTF exporter treat
    it) and ``d`` as alpha. Metallic and roughness: see :func:`_trimesh_material`; a surface without a
    material (every PLY and STL, an OBJ without ``usemtl``) is dielectric with roughness
    :data:`DEFAULT_ROUGHNESS`. Vertex colours (OBJ ``v x y z r g b``, PLY ``red green blue alpha``) are taken as
    sRGB-encoded; PLY face colours are turned into vertex colours by giving every face its own vertices.
    """
    try:
        import trimesh
        import trimesh.resolvers
    except ImportError as exc:  # pragma: no cover - trimesh is a runtime dependency
        from ..errors import MissingDependency

        raise MissingDependency("loading OBJ/PLY/STL needs the package 'trimesh': pip install trimesh") from exc
    resolver = trimesh.resolvers.FilePathResolver(str(path)) if path is not None else None
    log = logging.getLogger("trimesh")
    level = log.level
    try:
        # trimesh logs parse problems ("unable to convert colors!") itself; we report through InputError.
        log.setLevel(logging.CRITICAL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded: Any = trimesh.load(
                io.BytesIO(data), file_type=kind, resolver=resolver, process=False, force="scene"
            )
    except _PASS_THROUGH:
        raise
    except Exception as exc:
        raise InputError(f"{label}: not a valid {kind.upper()} file ({one_line(exc)})") from None
    finally:
        log.setLevel(level)
    meta["loader"] = f"trimesh {trimesh.__version__}"
    header = data[:4096]
    if kind == "obj":
        has_normals = re.search(rb"(?m)^\s*vn\s", data) is not None
        if path is None and re.search(rb"(?m)^\s*mtllib\s", data):
            _warn(notes, "the OBJ's material library cannot be read when loading from bytes; materials are left out")
    elif kind == "ply":
        end = header.find(b"end_header")
        has_normals = re.search(rb"property\s+\w+\s+nx\b", header[: end if end > 0 else len(header)]) is not None
    else:
        has_normals = False
    # trimesh gives texture-coordinate meshes a synthetic 2×2 "empty" material; only materials the file
    # really names count: OBJ ``usemtl`` (images loaded from the MTL carry their file path), PLY ``TextureFile``.
    if kind == "obj":
        uses_materials = re.search(rb"(?m)^\s*usemtl\s", data) is not None
    else:
        uses_materials = kind == "ply" and b"texturefile" in header.lower()
    parts: list[SourcePart] = []
    skipped = 0
    for node in loaded.graph.nodes_geometry:
        matrix, geom_name = loaded.graph[node]
        geom = loaded.geometry[geom_name]
        if not isinstance(geom, trimesh.Trimesh) or len(geom.faces) == 0:
            skipped += 1
            continue
        vertices = np.asarray(geom.vertices, dtype=np.float64)
        faces = np.asarray(geom.faces, dtype=np.int64)
        if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
            raise InputError(f"{label}: corrupt {kind.upper()} file (face indices out of range)")
        normals = np.asarray(geom.vertex_normals, dtype=np.float64) if has_normals else None
        if normals is not None and normals.shape != vertices.shape:
            normals = None
        uv: np.ndarray | None = None
        colors: np.ndarray | None = None
        base_color = mr = normal_map = occlusion = None
        material = _dielectric("default")
        visual: Any = geom.visual
        vkind = getattr(visual, "kind", None)
        if vkind == "texture" or type(visual).__name__ == "TextureVisuals":
            raw_uv = getattr(visual, "uv", None)
            if raw_uv is not None and len(raw_uv) == len(vertices):
                uv = np.asarray(raw_uv, dtype=np.float64).copy()
                uv[:, 1] = 1.0 - uv[:, 1]  # OBJ/PLY texture coordinates have v up; glTF's v points down
            if uses_materials:
                material, base_color, mr, normal_map, occlusion = _trimesh_material(visual.material, kind)
            if uv is None and any(x is not None for x in (base_color, mr, normal_map, occlusion)):
                _warn(notes, "a textured material has no texture coordinates; its textures are left out")
                base_color = mr = normal_map = occlusion = None
        elif vkind == "vertex":
            vc = np.asarray(visual.vertex_colors, dtype=np.float64)
            if len(vc) == len(vertices):
                colors = vc[:, :4] / 255.0
        elif vkind == "face":
            fc = np.asarray(visual.face_colors, dtype=np.float64)[:, :4] / 255.0
            vertices = vertices[faces].reshape(-1, 3)
            if normals is not None:
                normals = normals[faces].reshape(-1, 3)
            colors = np.repeat(fc, 3, axis=0)
            faces = np.arange(len(vertices), dtype=np.int64).reshape(-1, 3)
        if kind == "stl":
            from ..geometry.topology import weld

            welded_v, welded_f = weld(vertices.astype(np.float32), faces)
            vertices, faces = welded_v.astype(np.float64), welded_f.astype(np.int64)
        v, f, n, _ = _transform(vertices, faces, normals, None, np.asarray(matrix, dtype=np.float64))
        mesh = Mesh(vertices=v, faces=f, normals=n, uv=uv, colors=colors)
        parts.append(
            SourcePart(
                mesh=mesh,
                material=material,
                base_color=base_color,
                metallic_roughness=mr,
                normal=normal_map,
                occlusion=occlusion,
                name=str(geom_name),
            )
        )
    if skipped:
        _warn(notes, f"{skipped} geometries without triangles (points or lines) are skipped")
    return parts


def _dielectric(name: str) -> Material:
    """The material of a surface whose format has no metalness: metallic 0, :data:`DEFAULT_ROUGHNESS`."""
    return Material(name=name, metallic_factor=0.0, roughness_factor=DEFAULT_ROUGHNESS)


def _mtl_number(mat: Any, key: str) -> float | None:
    """A scalar MTL statement trimesh kept in ``SimpleMaterial.kwargs`` (``Pm 0.5`` → 0.5), or None."""
    raw = getattr(mat, "kwargs", {}).get(key)
    if isinstance(raw, (list, tuple)):
        raw = raw[0] if len(raw) else None
    try:
        value = float(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None
    return value if value is not None and math.isfinite(value) else None


def _trimesh_material(
    mat: Any, kind: str
) -> tuple[Material, np.ndarray | None, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Convert a trimesh SimpleMaterial / PBRMaterial: ``(Material, base, mr, normal, occlusion)``.

    An OBJ/MTL material (trimesh's SimpleMaterial) is dielectric unless its MTL says otherwise:

    * metallic = the PBR extension's ``Pm`` (http://exocortex.com/blog/extending_wavefront_mtl_to_support_pbr),
      else 0 (MTL's Phong model has no metalness);
    * roughness = ``Pr``, else from the Phong specular exponent ``Ns`` as Blender's OBJ importer maps it,
      ``1 − sqrt(clamp(Ns, 0, 1000) / 1000)`` (``Ns 250`` → 0.5; ``Ns 1000`` → 0), else
      :data:`DEFAULT_ROUGHNESS`;

    all clipped to [0, 1]. The extension's texture statements (``map_Pm``, ``map_Pr``, ``norm``) are not read.
    """
    if mat is None:
        return _dielectric("default"), None, None, None, None
    name = str(getattr(mat, "name", None) or "material")
    if type(mat).__name__ == "PBRMaterial":
        base = _pil_to_array(getattr(mat, "baseColorTexture", None))
        mr_rgba = _pil_to_array(getattr(mat, "metallicRoughnessTexture", None))
        nrm = _pil_to_array(getattr(mat, "normalTexture", None))
        occ = _pil_to_array(getattr(mat, "occlusionTexture", None))
        raw = getattr(mat, "baseColorFactor", None)
        factor = np.ones(4) if raw is None else np.asarray(raw, dtype=np.float64).reshape(-1)
        if factor.dtype.kind != "f" or factor.max() > 1.0:
            factor = factor / 255.0
        if len(factor) == 3:
            factor = np.append(factor, 1.0)
        metallic = getattr(mat, "metallicFactor", None)
        roughness = getattr(mat, "roughnessFactor", None)
        material = Material(
            name=name,
            base_color_factor=tuple(float(min(max(c, 0.0), 1.0)) for c in factor[:4]),  # type: ignore[arg-type]
            # OBJ and PLY have no metalness: what the file does not give is dielectric
            metallic_factor=float(0.0 if metallic is None else min(max(metallic, 0.0), 1.0)),
            roughness_factor=float(DEFAULT_ROUGHNESS if roughness is None else min(max(roughness, 0.0), 1.0)),
            alpha_mode=str(getattr(mat, "alphaMode", None) or "OPAQUE"),
            double_sided=bool(getattr(mat, "doubleSided", False)),
        )
        return (
            material,
            base,
            None if mr_rgba is None else np.ascontiguousarray(mr_rgba[..., :3]),
            None if nrm is None else np.ascontiguousarray(nrm[..., :3]),
            None if occ is None else np.ascontiguousarray(occ[..., 0]),
        )
    # SimpleMaterial (OBJ/MTL): diffuse colour and an optional diffuse image (OBJ: only one read from a file).
    image = getattr(mat, "image", None)
    if kind == "obj" and image is not None and not getattr(image, "info", {}).get("file_path"):
        image = None
    base = _pil_to_array(image)
    diffuse = np.asarray(getattr(mat, "diffuse", [255, 255, 255, 255]), dtype=np.float64).reshape(-1) / 255.0
    alpha = float(diffuse[3]) if len(diffuse) >= 4 else 1.0
    rgb = (1.0, 1.0, 1.0) if base is not None else tuple(float(c) for c in diffuse[:3])
    metallic = _mtl_number(mat, "pm")
    roughness = _mtl_number(mat, "pr")
    ns = _mtl_number(mat, "ns")
    if roughness is None and ns is not None:
        roughness = 1.0 - math.sqrt(min(max(ns, 0.0), 1000.0) / 1000.0)
    material = Material(
        name=name,
        base_color_factor=(rgb[0], rgb[1], rgb[2], alpha),
        metallic_factor=min(max(metallic, 0.0), 1.0) if metallic is not None else 0.0,
        roughness_factor=min(max(roughness, 0.0), 1.0) if roughness is not None else DEFAULT_ROUGHNESS,
        alpha_mode="BLEND" if alpha < 1.0 else "OPAQUE",
    )
    return material, base, None, None, None
