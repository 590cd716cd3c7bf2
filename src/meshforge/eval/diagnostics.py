"""Mesh and texture-atlas diagnostics, multi-part previews, and the ``meshforge inspect`` helpers.

:func:`diagnostics` counts what makes a mesh good or bad as a game asset: parts, vertices, faces, connected
components, boundary and non-manifold edges, watertightness, degenerate, duplicate and sliver faces, UV
overlap, atlas utilisation, texels never written, materials and texture sizes. :func:`inspect_file` loads a
file (:func:`meshforge.io.meshes.load_mesh`), runs the diagnostics and, given a reference, the surface
metrics of :mod:`meshforge.eval.metrics`; :mod:`meshforge.inspection` turns that report into the text
``meshforge inspect`` prints.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from ..geometry.color import linear_to_srgb, srgb_to_linear
from ..geometry.raster import (
    DILATION_TEXELS,
    MAX_UV_RASTER,
    never_written,
    rasterize,
    uv_coverage,
    uv_seam_length,
    uv_seam_ratio,
    uv_stretch,
    uv_utilisation,
)
from ..geometry.topology import topology, weld
from ..gltf import jsonable
from ..io.meshes import DEFAULT_MAX_BYTES, load_mesh
from ..io.scene import SourcePart, SourceScene
from ..types import Asset, Camera, Mesh
from .metrics import DEFAULT_SAMPLES, DEFAULT_THRESHOLDS, Surface, as_scene, compare_surfaces, orientation
from .render import DEFAULT_VIEW_NAMES, DEFAULT_VIEWS, project, view_rotation

#: background of preview sheets: a neutral mid-grey (sRGB 128), on which white and black meshes both show
PREVIEW_BACKGROUND: tuple[int, int, int] = (128, 128, 128)

__all__ = [
    "DEGENERATE_REL_AREA",
    "DILATION_TEXELS",
    "MAX_UV_RASTER",
    "SLIVER_ASPECTS",
    "aspect_ratios",
    "diagnostics",
    "inspect_file",
    "preview_sheet",
    "uv_coverage",
    "uv_seam_length",
    "uv_seam_ratio",
    "uv_stretch",
    "uv_utilisation",
]

#: a face is degenerate when it repeats a vertex (after welding equal positions) or its area is at most
#: this fraction of the squared bounding-box diagonal
DEGENERATE_REL_AREA = 1e-12
#: sliver thresholds on the aspect ratio (longest edge / height on it)
SLIVER_ASPECTS = (20.0, 100.0)


def aspect_ratios(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Per-face aspect ratio ``longest edge / height on that edge`` (= ``longest² / (2·area)``).

    An equilateral triangle has ``2/√3 ≈ 1.155``; degenerate faces get ``inf``.

    Returns:
        ``[F]`` float64.
    """
    t = np.asarray(vertices, dtype=np.float64)[np.asarray(faces)]
    e = np.stack([t[:, 1] - t[:, 0], t[:, 2] - t[:, 1], t[:, 0] - t[:, 2]], axis=1)
    longest = np.linalg.norm(e, axis=2).max(axis=1)
    twice_area = np.linalg.norm(np.cross(e[:, 0], -e[:, 2]), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(twice_area > 0.0, longest**2 / twice_area, np.inf)
    return np.asarray(out, dtype=np.float64)


def _texture_key(part: SourcePart) -> tuple[int, np.ndarray] | None:
    """Identity of a part's texture set (the first map present), so parts sharing an atlas are grouped."""
    for name in ("base_color", "metallic_roughness", "normal", "occlusion"):
        arr = getattr(part, name)
        if arr is not None:
            return id(arr), arr
    return None


def _uv_groups(
    scene: SourceScene, *, bake_coverage: np.ndarray | None, dilation: float, max_raster: int
) -> list[dict[str, Any]]:
    groups: dict[int, tuple[np.ndarray, list[int]]] = {}
    for i, part in enumerate(scene.parts):
        key = _texture_key(part)
        if key is None or part.mesh.uv is None:
            continue
        groups.setdefault(key[0], (key[1], []))[1].append(i)
    out: list[dict[str, Any]] = []
    for texture, members in groups.values():
        th, tw = int(texture.shape[0]), int(texture.shape[1])
        scale = min(1.0, max_raster / max(th, tw))
        rw, rh = max(1, round(tw * scale)), max(1, round(th * scale))
        uvs, faces, positions, offset, outside = [], [], [], 0, 0
        seen: set[bytes] = set()
        for i in members:
            m = scene.parts[i].mesh
            assert m.uv is not None
            # Instances of one primitive (the same UVs and faces) are counted once, not as overlap.
            digest = hashlib.blake2b(m.uv.tobytes() + m.faces.tobytes(), digest_size=16).digest()
            if digest in seen:
                continue
            seen.add(digest)
            uvs.append(m.uv.astype(np.float64))
            positions.append(m.vertices.astype(np.float64))
            faces.append(m.faces.astype(np.int64) + offset)
            offset += m.n_vertices
            fu = m.uv[m.faces]
            outside += int(np.any((fu < -1e-6) | (fu > 1.0 + 1e-6), axis=(1, 2)).sum())
        uv_all, f_all = np.concatenate(uvs), np.concatenate(faces)
        covered, overlapped = uv_coverage(uv_all, f_all, rw, rh)
        n_cov = int(covered.sum())
        entry: dict[str, Any] = {
            "parts": [scene.parts[i].name for i in members],
            "texture": [tw, th],
            "raster": [rw, rh],
            "faces_outside_unit_square": outside,
            "utilisation": uv_utilisation(uv_all, f_all),
            "stretch": _finite(uv_stretch(np.concatenate(positions), uv_all, f_all)),
            "seam_ratio": uv_seam_ratio(np.concatenate(positions), uv_all, f_all),
            "overlap": (int(overlapped.sum()) / n_cov) if n_cov else 0.0,
            "overlapped_texels": int(overlapped.sum()),
        }
        if bake_coverage is not None and len(groups) == 1:
            written = np.asarray(bake_coverage, dtype=bool)
            entry["never_written_source"] = "bake coverage"
        else:
            # Texels within `dilation` texels (Euclidean, centre to centre) of a covered texel count as written.
            written = ~never_written(covered, dilation)
            entry["never_written_source"] = f"uv raster dilated by {dilation:g} texels"
        entry["texels_never_written"] = int((~written).sum())
        entry["never_written_fraction"] = float((~written).mean())
        out.append(entry)
    return out


def _finite(x: float) -> float | None:
    return None if not np.isfinite(x) else x


def diagnostics(
    obj: Surface,
    *,
    bake_coverage: np.ndarray | None = None,
    dilation: float = DILATION_TEXELS,
    max_raster: int = MAX_UV_RASTER,
) -> dict[str, Any]:
    """Counts and checks of a mesh, scene or asset (all parts together), as a JSON-ready dict.

    Definitions:

    * ``counts``: ``parts``, ``vertices`` (as stored, i.e. split at UV/normal seams), ``faces``.
    * ``topology`` (on all parts concatenated, equal positions welded, unreferenced vertices dropped — so UV
      seams do not count as boundaries): ``components`` (vertex-connected), ``boundary_edges`` (edges of one
      face), ``nonmanifold_edges`` (edges of three or more faces), ``inconsistent_edges`` (a directed edge
      used twice: neighbours wound oppositely), ``watertight`` (no boundary or non-manifold edge),
      ``degenerate_faces`` (a repeated vertex, or area ≤ :data:`DEGENERATE_REL_AREA` × diagonal²),
      ``duplicate_faces`` (faces beyond the first with the same three vertices, either winding),
      ``slivers_over_20`` / ``slivers_over_100`` (non-degenerate faces with :func:`aspect_ratios` above 20 /
      100), ``max_aspect``.
    * ``materials``: one entry per distinct material (name, factors — ``base_color_factor`` linear as in
      glTF — alpha mode, double-sidedness, unlit, texture sizes ``[width, height]``, number of parts).
    * ``uv``: one entry per texture atlas (parts sharing the same texture image are grouped; instances of
      one primitive count once), rasterised at the texture's resolution (at most ``max_raster`` per side,
      default :data:`MAX_UV_RASTER`; ``raster`` gives the size used, texel counts are of that raster):
      ``utilisation`` (:func:`~meshforge.geometry.raster.uv_utilisation`, as the unwrap stage reports it) =
      total UV triangle area / the unit square's; ``stretch``: the normalised area-weighted L2 stretch
      (:func:`~meshforge.geometry.raster.uv_stretch`, Sander et al. 2001; 1 is isometric, None without
      a face of nonzero 3D and UV area); ``seam_ratio``: the 3D length of the edges the atlas cuts over the square
      root of the surface area (:func:`~meshforge.geometry.raster.uv_seam_ratio`, as the unwrap stage
      reports it); ``overlap`` = texels covered by two or more UV
      triangles / covered texels (mirrored or stacked UV islands); ``texels_never_written`` and
      ``never_written_fraction``: texels farther than ``dilation`` texels from every covered texel — or,
      with ``bake_coverage`` (the baker's ``[H, W]`` bool mask of texels it wrote, one atlas only), the
      texels outside that mask; ``faces_outside_unit_square``: faces with UVs outside [0, 1] (they are
      rasterised as given, not wrapped).

    Args:
        obj: a SourceScene, Asset, Mesh or SourcePart.
        bake_coverage: optional ``[H, W]`` bool mask of written texels (from the bake), at the raster size.
        dilation: gutter width in texels for "never written" without ``bake_coverage``.
        max_raster: largest UV raster side.

    Returns:
        ``{"counts", "bounds", "topology", "materials", "textures", "uv"}`` (plain Python values).
    """
    scene = as_scene(obj)
    verts = [p.mesh.vertices for p in scene.parts]
    faces, offset = [], 0
    for p in scene.parts:
        faces.append(p.mesh.faces.astype(np.int64) + offset)
        offset += p.mesh.n_vertices
    v_all = np.concatenate(verts) if verts else np.zeros((0, 3), np.float32)
    f_all = np.concatenate(faces) if faces else np.zeros((0, 3), np.int64)
    lo, hi = scene.bounds()
    diag = float(np.linalg.norm(hi - lo))
    # Weld equal positions and drop unreferenced vertices, so seams and stray vertices do not count.
    wv, wf = weld(v_all, f_all) if len(f_all) else (v_all, f_all.astype(np.int32))
    used, inverse = np.unique(wf, return_inverse=True)
    wv, wf = wv[used], inverse.reshape(-1, 3).astype(np.int64)
    topo = topology(wv, wf, area_eps=DEGENERATE_REL_AREA * diag * diag)
    key = np.sort(wf, axis=1)
    duplicates = int(len(key) - len(np.unique(key, axis=0))) if len(key) else 0
    aspect = aspect_ratios(wv, wf)
    repeated = (wf[:, 0] == wf[:, 1]) | (wf[:, 1] == wf[:, 2]) | (wf[:, 2] == wf[:, 0])
    tri = wv.astype(np.float64)[wf]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    valid = ~repeated & (area > DEGENERATE_REL_AREA * diag * diag)
    topology_out: dict[str, Any] = {
        **topo.to_dict(),
        "duplicate_faces": duplicates,
        "slivers_over_20": int((aspect[valid] > SLIVER_ASPECTS[0]).sum()),
        "slivers_over_100": int((aspect[valid] > SLIVER_ASPECTS[1]).sum()),
        "max_aspect": float(aspect[valid].max()) if valid.any() else None,
    }
    topology_out.pop("faces", None)
    topology_out["welded_vertices"] = topology_out.pop("vertices")

    materials: dict[int, dict[str, Any]] = {}
    textures: dict[int, dict[str, Any]] = {}
    for part in scene.parts:
        mat = part.material
        mkey = hash((mat, part.unlit, tuple(id(a) for a in part.textures().values())))
        entry = materials.setdefault(
            mkey,
            {
                "name": mat.name,
                "base_color_factor": [float(c) for c in mat.base_color_factor],
                "metallic_factor": float(mat.metallic_factor),
                "roughness_factor": float(mat.roughness_factor),
                "alpha_mode": mat.alpha_mode,
                "double_sided": bool(mat.double_sided),
                "unlit": bool(part.unlit),
                "textures": part.texture_sizes(),
                "parts": 0,
            },
        )
        entry["parts"] += 1
        for name, arr in part.textures().items():
            textures.setdefault(id(arr), {"map": name, "size": [int(arr.shape[1]), int(arr.shape[0])]})
    texture_bytes = int(sum(t["size"][0] * t["size"][1] * 4 for t in textures.values()))
    return {
        "counts": {"parts": len(scene.parts), "vertices": scene.n_vertices(), "faces": scene.n_faces()},
        "bounds": {"min": lo.tolist(), "max": hi.tolist(), "diagonal": diag},
        "topology": topology_out,
        "materials": list(materials.values()),
        "textures": {"images": len(textures), "rgba8_bytes": texture_bytes},
        "uv": _uv_groups(scene, bake_coverage=bake_coverage, dilation=dilation, max_raster=max_raster),
    }


# --------------------------------------------------------------------------------------------------------
# Previews
# --------------------------------------------------------------------------------------------------------


def preview_sheet(
    obj: Surface,
    *,
    size: int = 256,
    views: Sequence[tuple[float, float]] = DEFAULT_VIEWS,
    modes: Sequence[str] = ("unlit", "lit"),
    background: tuple[int, int, int] = PREVIEW_BACKGROUND,
    labels: Sequence[str] | None = None,
) -> np.ndarray:
    """Render a multi-part scene (textures, vertex colours, normal maps) as a grid of orthographic views.

    One row per mode, one column per view, on a neutral grey ``background`` (sRGB); each tile is labelled
    in its top-left corner with its view and mode (``"front, unlit"``): ``labels`` names the views
    (default: :data:`~meshforge.eval.render.DEFAULT_VIEW_NAMES` for the default views, else
    ``"az A, el E"``).

    Any number of parts (an :class:`~meshforge.types.Asset` counts as one): all triangles are rasterised
    together with a z-buffer and each pixel's colour and shading
    normal come from :meth:`SourcePart.sample` of the part it shows. ``"lit"`` multiplies the linear base
    colour by ``0.18 + 0.95·max(0, n·l)`` (the normal-mapped normal; unlit materials are not shaded).
    Alpha is ignored (every surface is drawn opaque).

    Returns:
        ``[len(modes)·size, len(views)·size, 3]`` uint8 sRGB image.
    """
    scene = as_scene(obj)
    verts = np.concatenate([p.mesh.vertices.astype(np.float64) for p in scene.parts])
    faces, part_of, local, offset = [], [], [], 0
    for i, p in enumerate(scene.parts):
        faces.append(p.mesh.faces.astype(np.int64) + offset)
        part_of.append(np.full(p.mesh.n_faces, i))
        local.append(np.arange(p.mesh.n_faces))
        offset += p.mesh.n_vertices
    f = np.concatenate(faces)
    part_idx, local_idx = np.concatenate(part_of), np.concatenate(local)
    lo, hi = scene.bounds()
    centre = 0.5 * (lo + hi)
    v = verts - centre
    used = np.unique(f)
    extent = 2.05 * float(np.linalg.norm(v[used], axis=1).max()) if used.size else 1.0
    extent = extent if extent > 0 else 1.0
    light = np.array([-0.35, 0.5, 0.8])
    light /= np.linalg.norm(light)
    if labels is not None:
        names = list(labels)
    elif tuple(views) == DEFAULT_VIEWS:
        names = list(DEFAULT_VIEW_NAMES)
    else:
        names = [f"az {a:g}, el {e:g}" for a, e in views]
    if len(names) != len(views):
        raise ValueError(f"preview_sheet: {len(views)} views but {len(names)} labels")
    rows = []
    for mode in modes:
        tiles: list[np.ndarray] = []
        for name, (azimuth, elevation) in zip(names, views, strict=True):
            rot = view_rotation(azimuth, elevation)
            xy, depth = project(v, size, Camera(kind="orthographic", extent=extent), rot)
            r = rasterize(xy[f], size, size, depth[f])
            out = np.empty((size * size, 3))
            out[:] = np.asarray(background, dtype=np.float64) / 255.0
            flat = np.flatnonzero(r.face.ravel() >= 0)
            gface = r.face.ravel()[flat]
            bary = r.bary.reshape(-1, 3)[flat].astype(np.float64)
            bary /= np.maximum(bary.sum(axis=1, keepdims=True), 1e-12)
            for p in np.unique(part_idx[gface]):
                sel = np.flatnonzero(part_idx[gface] == p)
                part = scene.parts[int(p)]
                s = part.sample(local_idx[gface[sel]], bary[sel])
                color = s["base_color"][:, :3]
                if mode == "lit" and not part.unlit:
                    n = s["normal"] @ rot.T
                    lin = srgb_to_linear(color) * (0.18 + 0.95 * np.clip(n @ light, 0.0, 1.0))[:, None]
                    color = linear_to_srgb(lin)
                out[flat[sel]] = color
            tile = np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8).reshape(size, size, 3)
            tiles.append(_label(tile, f"{name}, {mode}"))
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` in the tile's top-left corner: white with a black outline, legible on any colour."""
    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFont

    size = tile.shape[0]
    image = PILImage.fromarray(tile)
    font = ImageFont.load_default(size=max(10, size // 16))
    ImageDraw.Draw(image).text((3, 1), text, fill=(255, 255, 255), font=font, stroke_width=1, stroke_fill=(0, 0, 0))
    return np.asarray(image)


# --------------------------------------------------------------------------------------------------------
# inspect
# --------------------------------------------------------------------------------------------------------


def inspect_file(
    path: str | os.PathLike[str],
    *,
    reference: str | os.PathLike[str] | SourceScene | Asset | Mesh | None = None,
    n_samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS,
    preview: str | os.PathLike[str] | None = None,
    preview_size: int = 256,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> dict[str, Any]:
    """Load a mesh file and report on it: provenance, warnings, :func:`diagnostics`, optional metrics.

    Args:
        path: the file (any format :func:`meshforge.io.meshes.load_mesh` reads).
        reference: a file or surface to compare with (:func:`meshforge.eval.metrics.compare_surfaces`;
            distances relative to the reference's bounding-box diagonal); None for no comparison.
        n_samples, seed, thresholds: see :func:`compare_surfaces`.
        preview: optional path of a PNG contact sheet (:func:`preview_sheet`) to write.
        preview_size: side of one preview tile in pixels.
        max_bytes: file size limit for loading.

    Returns:
        A JSON-ready dict: ``file``, ``name``, ``format``, ``bytes``, ``sha256``, ``warnings``, ``meta``,
        ``diagnostics``, ``seconds`` (``load``, ``diagnostics``, ``metrics``, ``preview``), and with a
        reference ``reference`` (``file``, ``sha256``, ``diagonal``, ``warnings``), ``metrics``
        (:meth:`SurfaceComparison.to_dict`) and ``orientation``
        (:func:`meshforge.eval.metrics.orientation`, as ``optimize`` reports it for its decimate stage);
        with a preview, ``preview`` (its path).

    Raises:
        InputError: the file or the reference cannot be loaded (one line, see ``load_mesh``), or the
            preview cannot be written.
    """
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    scene = load_mesh(path, max_bytes=max_bytes)
    seconds["load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    diag = diagnostics(scene)
    seconds["diagnostics"] = time.perf_counter() - t0
    report: dict[str, Any] = {
        "file": str(path),
        "name": scene.name,
        "format": scene.meta.get("format"),
        "bytes": scene.meta.get("bytes"),
        "sha256": scene.sha256,
        "warnings": list(scene.warnings),
        "meta": {k: v for k, v in scene.meta.items() if k not in ("format", "bytes")},
        "diagnostics": diag,
    }
    if reference is not None:
        t0 = time.perf_counter()
        if isinstance(reference, str | os.PathLike):
            ref_scene = load_mesh(reference, max_bytes=max_bytes)
            ref_file = str(reference)
        else:
            ref_scene = as_scene(reference)
            ref_file = ref_scene.name
        seconds["reference_load"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        comparison = compare_surfaces(scene, ref_scene, thresholds=thresholds, n_samples=n_samples, seed=seed)
        seconds["metrics"] = time.perf_counter() - t0
        report["reference"] = {
            "file": ref_file,
            "sha256": ref_scene.sha256,
            "diagonal": ref_scene.diagonal(),
            "warnings": list(ref_scene.warnings),
        }
        report["metrics"] = comparison.to_dict()
        report["orientation"] = orientation(scene, ref_scene)
    if preview is not None:
        t0 = time.perf_counter()
        sheet = preview_sheet(scene, size=preview_size)
        try:
            from PIL import Image as PILImage

            PILImage.fromarray(sheet).save(os.fspath(preview), format="PNG")
        except (OSError, ValueError) as exc:
            raise InputError(f"{preview}: cannot write the preview ({' '.join(str(exc).split())})") from None
        seconds["preview"] = time.perf_counter() - t0
        report["preview"] = str(preview)
    report["seconds"] = {k: round(v, 4) for k, v in seconds.items()}
    result: dict[str, Any] = jsonable(report)
    return result
