"""Reading GLB / glTF 2.0 into :class:`~.scene.SourcePart` objects: materials, textures, primitives, scene graph.

Our own code reads glTF (trimesh's loader was checked against the shared assets and loses things the optimize
job needs; see :mod:`meshforge.io.meshes`): :class:`GltfReader` builds on :class:`~.gltf_document.GltfDocument`
(container, buffers, accessors) and reads materials (glTF 2.0 §3.9: PBR metallic-roughness factors and textures,
``KHR_materials_unlit``, ``KHR_texture_transform``, ``KHR_materials_pbrSpecularGlossiness`` approximated),
images decoded by Pillow, triangle primitives (§3.7.2.1: triangles, strips and fans; ``NORMAL``, ``TANGENT``,
``TEXCOORD_n``, ``COLOR_0``) and the default scene's node hierarchy (§3.5), flattened into world-space parts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, one_line
from ..geometry.color import linear_to_srgb
from ..geometry.texture import REPEAT, WRAP_MODES
from ..types import Material, Mesh
from .gltf_document import GltfDocument
from .scene import MAP_NAMES, SourcePart, add_warning, decode_image_rgba, transform_geometry, unit_rows

__all__ = ["DEFAULT_MATERIAL_WARNING", "MAX_NODE_INSTANCES", "MAX_TOTAL_VERTICES", "SKIN_WARNING", "GltfReader"]

#: the warning given for skinned or animated inputs (glTF ``skins``, ``animations``)
SKIN_WARNING = "skin and animation are not carried over: the mesh is loaded in its rest pose (as stored, not skinned)"
#: the warning given when a glTF primitive has no material (glTF 2.0 §3.9.6 default material)
DEFAULT_MATERIAL_WARNING = (
    "a primitive has no material, so glTF's default material is used (white, metallic 1, roughness 1: it "
    "renders as bare metal); give it a material in the source to change that"
)
#: most scene-graph node instances followed (guards against exponential instancing in a node DAG)
MAX_NODE_INSTANCES = 1_000_000
#: most vertices all parts together may have after instancing (guards against instancing bombs)
MAX_TOTAL_VERTICES = 100_000_000

# glTF 2.0 §3.7.2.1 primitive modes.
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
_PASS_THROUGH = (MemoryError, KeyboardInterrupt, SystemExit)


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


class GltfReader(GltfDocument):
    """Reads a GLB or .gltf document into :class:`~.scene.SourcePart` objects (see
    :func:`meshforge.io.meshes.load_mesh`): images and texture maps, materials, primitives and the scene graph
    on top of :class:`~.gltf_document.GltfDocument`'s buffers and accessors (same arguments)."""

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
        super().__init__(data, kind, label, path, max_bytes, notes, meta)
        self._images: dict[int, np.ndarray | None] = {}
        self._maps: dict[tuple[int, str], np.ndarray] = {}
        self._materials: dict[int | None, tuple[Material, dict[str, Any]]] = {}

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
            result = decode_image_rgba(blob)
        except InputError:
            raise
        except _PASS_THROUGH:
            raise
        except Exception as exc:
            add_warning(
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
                    add_warning(self.notes, f"textures compressed with {name} cannot be decoded and are left out")
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
            add_warning(self.notes, DEFAULT_MATERIAL_WARNING)
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
            add_warning(
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
            add_warning(self.notes, f"material {name!r} has factors outside [0, 1]; they are clipped")
        alpha_mode = str(mat.get("alphaMode", "OPAQUE"))
        if alpha_mode not in ("OPAQUE", "MASK", "BLEND"):
            add_warning(self.notes, f"material {name!r} has an unknown alphaMode {alpha_mode!r}; OPAQUE is used")
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
            add_warning(self.notes, "point and line primitives are skipped (only triangles are loaded)")
            return None
        if not isinstance(attrs, dict) or "POSITION" not in attrs:
            add_warning(self.notes, f"{where} has no POSITION attribute and is skipped")
            return None
        ext = prim.get("extensions", {}) if isinstance(prim.get("extensions"), dict) else {}
        for name in _GEOMETRY_COMPRESSION:
            if name in ext:
                raise InputError(f"{self.label}: uses {name} (compressed geometry), which meshforge cannot decode")
        if prim.get("targets"):
            add_warning(self.notes, "morph targets are not carried over (the base shape is used)")
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
        for kind in MAP_NAMES:
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
            add_warning(self.notes, f"{where} has textures but no TEXCOORD_{tex_coord}; its textures are left out")
            maps = {}
        if chosen and maps:

            def signature(info: dict[str, Any]) -> tuple[Any, ...]:
                e = info.get("extensions", {}) if isinstance(info.get("extensions"), dict) else {}
                return int(info.get("texCoord", 0)), json.dumps(e.get("KHR_texture_transform"), sort_keys=True)

            if any(signature(extra["infos"][k]) != signature(chosen) for k in maps):
                add_warning(
                    self.notes,
                    f"material {material.name!r} uses different UV sets or transforms per texture; "
                    "all its maps are sampled with the first map's UVs",
                )
        if colors is not None:
            rgb = linear_to_srgb(np.clip(colors[:, :3], 0.0, 1.0)).astype(np.float64)
            a = np.clip(colors[:, 3:4], 0.0, 1.0) if colors.shape[1] == 4 else np.ones((nv, 1))
            colors = np.concatenate([rgb, a], axis=1)
        if normals is not None:
            normals = unit_rows(normals)[0]
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
                add_warning(self.notes, f"the file has {len(scenes)} scenes; only scene {scene_index} is loaded")
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
        """The default scene flattened into world-space parts, one per triangle primitive and node instance."""
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
                add_warning(self.notes, f"required extension {name} is not supported; the model may load incorrectly")
        if self.meta["skins"] or self.meta["animations"]:
            add_warning(self.notes, SKIN_WARNING)
        parts: list[SourcePart] = []
        cache: dict[tuple[int, int], _Primitive | None] = {}
        instances = self._instances()
        self.meta["node_instances"] = len(instances)
        if self._list("meshes") and not any("mesh" in self._item("nodes", i) for i, _ in instances):
            # No node of the scene shows a mesh: load every mesh untransformed rather than nothing.
            add_warning(self.notes, "no scene node refers to a mesh; every mesh is loaded untransformed")
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
                v, f, n, t = transform_geometry(p.vertices, p.faces, p.normals, p.tangents, matrix)
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
