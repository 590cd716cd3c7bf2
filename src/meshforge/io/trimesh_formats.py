"""Reading OBJ (+MTL, textures), PLY and STL through trimesh into :class:`~.scene.SourcePart` objects.

trimesh parses the files (``process=False``, so vertices and faces stay as in the file); this module turns its
geometries into parts: OBJ texture coordinates (v up) become glTF's (v down), vertex and face colours are taken as
sRGB-encoded, STL positions are welded so the mesh is connected, and materials follow :func:`_trimesh_material`:
these formats have no metalness, so a surface is dielectric (metallic 0) with roughness :data:`DEFAULT_ROUGHNESS`
unless an MTL gives ``Pm``/``Pr`` or ``Ns``.
"""

from __future__ import annotations

import io
import logging
import math
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, one_line
from ..types import Material, Mesh
from .scene import SourcePart, add_warning, decode_image_rgba, transform_geometry

__all__ = ["DEFAULT_ROUGHNESS", "load_with_trimesh"]

#: roughness of OBJ/PLY/STL surfaces whose file says nothing about it (a neutral, semi-matte dielectric)
DEFAULT_ROUGHNESS = 0.5
_PASS_THROUGH = (MemoryError, KeyboardInterrupt, SystemExit)


def _pil_to_array(image: Any) -> np.ndarray | None:
    """A PIL image (as trimesh gives textures) → ``[H, W, 4]`` uint8, or None."""
    if image is None:
        return None
    try:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return decode_image_rgba(buf.getvalue())
    except _PASS_THROUGH:
        raise
    except Exception:
        return None


def load_with_trimesh(
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
            add_warning(
                notes, "the OBJ's material library cannot be read when loading from bytes; materials are left out"
            )
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
                add_warning(notes, "a textured material has no texture coordinates; its textures are left out")
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
        v, f, n, _ = transform_geometry(vertices, faces, normals, None, np.asarray(matrix, dtype=np.float64))
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
        add_warning(notes, f"{skipped} geometries without triangles (points or lines) are skipped")
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
