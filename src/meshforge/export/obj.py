"""Wavefront OBJ + MTL + PNG writer.

Format references: the Wavefront OBJ and MTL specifications (Wavefront Advanced Visualizer manual,
appendix B1 "Object Files" and B3 "Material Library Files", e.g. https://paulbourke.net/dataformats/obj/
and https://paulbourke.net/dataformats/mtl/), the widely supported vertex-colour extension
``v x y z r g b``, and the PBR MTL extension (``Pr``/``Pm``/``map_Pr``/``map_Pm``/``norm``, as read by
tinyobjloader, Blender and others; http://exocortex.com/blog/extending_wavefront_mtl_to_support_pbr).
"""

from __future__ import annotations

import numpy as np

from meshforge.export._common import check_asset, safe_stem, unit_normals
from meshforge.export._png import encode_pngs
from meshforge.types import Asset


def _fmt_rows(fmt: str, rows: np.ndarray) -> str:
    """Format each row of a 2-D array with a printf-style pattern, newline-terminated."""
    if len(rows) == 0:
        return ""
    template = (fmt + "\n") * len(rows)
    return template % tuple(rows.reshape(-1).tolist())


def texture_names(stem: str) -> dict[str, str]:
    """File names of the texture PNGs written beside ``<stem>.obj``, by map name."""
    return {
        "base_color": f"{stem}_basecolor.png",
        "metallic_roughness": f"{stem}_metallicroughness.png",
        "normal": f"{stem}_normal.png",
    }


def write_obj_files(asset: Asset, stem: str | None = None, *, png_compress_level: int = 3) -> dict[str, bytes]:
    """Write an asset as OBJ + MTL (+ texture PNGs), returned as ``{file name: bytes}``.

    OBJ (``<stem>.obj``): ``mtllib``/``usemtl``, one ``v x y z`` per vertex (metres, canonical +Y-up
    frame, unchanged), with ``r g b`` appended (sRGB floats in [0, 1], alpha dropped) for a vertex-colour
    asset without textures; ``vt u v'`` with ``v' = 1 - v`` (OBJ's v axis points up, glTF's down);
    ``vn`` unit normals when the mesh has normals; faces ``f a/b/c`` with 1-based indices (``a/b``,
    ``a//c`` or ``a`` when UVs or normals are missing), counter-clockwise = front as in OBJ.

    MTL (``<stem>.mtl``): one material with ``Kd`` (base colour factor RGB), ``d`` (its alpha), ``Ks 0 0 0``,
    ``illum``, the PBR extension's ``Pr`` (roughness) and ``Pm`` (metallic), ``map_Kd <stem>_basecolor.png``
    when textured, plus ``map_Pr``/``map_Pm`` pointing at ``<stem>_metallicroughness.png`` with
    ``-imfchan g``/``-imfchan b`` (roughness in G, metallic in B), and ``norm <stem>_normal.png`` when
    there is a normal map. The occlusion map has no MTL key and is not written.

    Args:
        asset: the asset to write.
        stem: base file name (without extension); defaults to the asset name made file-safe.
        png_compress_level: zlib level 0–9 for the PNGs.

    Returns:
        ``{"<stem>.obj": ..., "<stem>.mtl": ..., "<stem>_basecolor.png": ..., ...}`` (PNGs only when
        the asset has textures), in that order.

    Raises:
        InputError: the asset fails the common checks (see ``export._common.check_asset``).
    """
    check_asset(asset)
    stem = safe_stem(stem if stem is not None else asset.name)
    mesh, material, textures = asset.mesh, asset.material, asset.textures
    names = texture_names(stem)
    mat_name = safe_stem(material.name, "material")

    parts = [f"# meshforge OBJ export: {mesh.n_vertices} vertices, {mesh.n_faces} faces\n"]
    parts.append(f"mtllib {stem}.mtl\no {safe_stem(asset.name)}\n")
    if mesh.colors is not None and textures is None:
        rows = np.concatenate([mesh.vertices.astype(np.float64), np.clip(mesh.colors[:, :3], 0.0, 1.0)], axis=1)
        parts.append(_fmt_rows("v %.7g %.7g %.7g %.5f %.5f %.5f", rows))
    else:
        parts.append(_fmt_rows("v %.7g %.7g %.7g", mesh.vertices.astype(np.float64)))
    has_uv = mesh.uv is not None
    has_n = mesh.normals is not None
    if mesh.uv is not None:
        uv = mesh.uv.astype(np.float64).copy()
        uv[:, 1] = 1.0 - uv[:, 1]
        parts.append(_fmt_rows("vt %.7g %.7g", uv))
    if mesh.normals is not None:
        normals = unit_normals(mesh.normals, mesh.vertices, mesh.faces).astype(np.float64)
        parts.append(_fmt_rows("vn %.7g %.7g %.7g", normals))
    parts.append(f"usemtl {mat_name}\ns off\n")
    idx = mesh.faces.astype(np.int64) + 1
    if has_uv and has_n:
        face_rows = np.repeat(idx, 3, axis=1)
        parts.append(_fmt_rows("f %d/%d/%d %d/%d/%d %d/%d/%d", face_rows))
    elif has_uv:
        parts.append(_fmt_rows("f %d/%d %d/%d %d/%d", np.repeat(idx, 2, axis=1)))
    elif has_n:
        parts.append(_fmt_rows("f %d//%d %d//%d %d//%d", np.repeat(idx, 2, axis=1)))
    else:
        parts.append(_fmt_rows("f %d %d %d", idx))
    obj_text = "".join(parts)

    r, g, b, a = (float(x) for x in material.base_color_factor)
    mtl = [
        "# meshforge MTL export",
        f"newmtl {mat_name}",
        f"Kd {r:.6f} {g:.6f} {b:.6f}",
        "Ka 0.000000 0.000000 0.000000",
        "Ks 0.000000 0.000000 0.000000",
        f"d {a:.6f}",
        "illum 2",
        f"Pr {float(material.roughness_factor):.6f}",
        f"Pm {float(material.metallic_factor):.6f}",
    ]
    files: dict[str, bytes] = {}
    pngs: dict[str, bytes] = {}
    if textures is not None:
        mtl.append(f"map_Kd {names['base_color']}")
        mtl.append(f"map_Pr -imfchan g {names['metallic_roughness']}")
        mtl.append(f"map_Pm -imfchan b {names['metallic_roughness']}")
        maps = {names["base_color"]: textures.base_color, names["metallic_roughness"]: textures.metallic_roughness}
        if textures.normal is not None:
            mtl.append(f"norm {names['normal']}")
            maps[names["normal"]] = textures.normal
        flags = [name == names["base_color"] for name in maps]
        encoded = encode_pngs(list(maps.values()), compress_level=png_compress_level, drop_opaque_alpha=flags)
        pngs = dict(zip(maps, encoded, strict=True))
    files[f"{stem}.obj"] = obj_text.encode("utf-8")
    files[f"{stem}.mtl"] = ("\n".join(mtl) + "\n").encode("utf-8")
    files.update(pngs)
    return files
