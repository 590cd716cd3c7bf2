"""UV unwrapping: a texture atlas for a decimated mesh.

The main engine is xatlas (Jonathan Young, MIT; python binding ``xatlas``), which segments the surface
into charts, parameterises each chart (LSCM, Lévy et al. 2002), and packs the charts into the atlas.
xatlas holds the GIL and cannot be interrupted, so with a time limit it runs in a forked child process
that is killed when the limit passes; the unwrap then falls back to the ``faces`` engine: every pair of
faces gets its own square cell of a regular grid (always valid, no overlaps, poorer texel use).
"""

from __future__ import annotations

import math
import multiprocessing
from typing import Any

import numpy as np

from ..config import UnwrapConfig
from ..errors import InputError, MissingDependency
from ..types import Mesh
from .normals import vertex_normals
from .raster import uv_utilisation
from .topology import face_areas


def _xatlas_unwrap(vertices: np.ndarray, faces: np.ndarray, cfg: UnwrapConfig) -> dict[str, Any]:
    try:
        import xatlas
    except ImportError:  # pragma: no cover
        raise MissingDependency("UV unwrapping needs 'xatlas': pip install xatlas") from None
    area = float(face_areas(vertices, faces).sum())
    chart = xatlas.ChartOptions()
    if cfg.max_chart_fraction > 0:
        chart.max_chart_area = area * cfg.max_chart_fraction
    pack = xatlas.PackOptions()
    pack.resolution = int(cfg.resolution)
    # xatlas may overshoot the resolution by ~25%; the atlas is scaled down to fit afterwards, so ask
    # for proportionally more padding to keep at least cfg.padding texels between charts.
    pack.padding = int(math.ceil(cfg.padding * 1.3))
    pack.bilinear = True
    pack.blockAlign = True
    pack.bruteForce = False
    atlas = xatlas.Atlas()
    atlas.add_mesh(vertices, faces)
    atlas.generate(chart, pack)
    vmapping, indices, uvs = atlas[0]
    return {
        "vmapping": np.asarray(vmapping, dtype=np.int64),
        "faces": np.asarray(indices, dtype=np.int64),
        "uv": np.asarray(uvs, dtype=np.float64),
        "width": int(atlas.width),
        "height": int(atlas.height),
        "atlas_count": int(atlas.atlas_count),
        "charts": int(atlas.chart_count),
    }


def _child(conn: Any, vertices: np.ndarray, faces: np.ndarray, cfg: UnwrapConfig) -> None:  # pragma: no cover
    try:
        conn.send(("ok", _xatlas_unwrap(vertices, faces, cfg)))
    except BaseException as exc:
        conn.send(("error", repr(exc)))
    finally:
        conn.close()


def _run_with_limit(vertices: np.ndarray, faces: np.ndarray, cfg: UnwrapConfig) -> dict[str, Any] | str:
    """Run xatlas in a forked child; the result dict, or a string saying why there is none."""
    if cfg.time_limit <= 0 or "fork" not in multiprocessing.get_all_start_methods():
        return _xatlas_unwrap(vertices, faces, cfg)
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, vertices, faces, cfg), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(cfg.time_limit):
            return f"xatlas exceeded the {cfg.time_limit:g} s time limit"
        status, payload = parent.recv()
    except EOFError:
        return f"xatlas stopped unexpectedly (exit code {proc.exitcode})"
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(timeout=5)
        parent.close()
    if status != "ok":
        return f"xatlas failed: {payload}"
    result: dict[str, Any] = payload
    return result


def face_grid_atlas(n_faces: int, resolution: int, padding: int) -> np.ndarray:
    """The fallback atlas: faces in pairs, each pair in one square cell of a regular grid.

    Returns:
        ``[F, 3, 2]`` float64 UVs in [0, 1] (glTF convention: v down), one triangle per face with its
        corners (0,0), (1,0), (0,1) or (1,1), (0,1), (1,0) of its cell, inset by ``padding`` texels.
    """
    cells = max(1, (n_faces + 1) // 2)
    g = int(math.ceil(math.sqrt(cells)))
    cell = resolution / g
    inset = min(padding + 0.5, cell * 0.2)
    idx = np.arange(n_faces)
    c = idx // 2
    ox = (c % g) * cell
    oy = (c // g) * cell
    lo, hi = inset, cell - inset * (1.0 + math.sqrt(2.0))
    lower = np.array([[lo, lo], [hi, lo], [lo, hi]])
    upper = np.array([[cell - lo, cell - lo], [cell - hi, cell - lo], [cell - lo, cell - hi]])
    tri = np.where((idx % 2 == 0)[:, None, None], lower[None], upper[None])
    tri = tri + np.stack([ox, oy], axis=1)[:, None, :]
    return tri / resolution


def unwrap(mesh: Mesh, cfg: UnwrapConfig) -> tuple[Mesh, dict[str, Any]]:
    """UV-unwrap a mesh into one atlas of ``cfg.resolution²`` texels.

    Vertices are split along chart seams; vertex normals (area-weighted, computed before splitting) are
    carried over so shading stays smooth across seams. Faces whose UV triangle has zero area are counted
    in the report (they take their colour from the seam fill of neighbouring texels).

    Args:
        mesh: a decimated, cleaned mesh (no UVs needed).
        cfg: ``resolution``, ``padding`` (texels), ``max_chart_fraction``, ``time_limit`` (s), ``engine``.

    Returns:
        ``(mesh with uv and normals, counts)``; counts hold ``engine`` (the one that produced the atlas),
        ``charts``, ``utilisation`` (:func:`~meshforge.mesh.raster.uv_utilisation`) and a ``fallback``
        reason when xatlas could not be used.

    Raises:
        InputError: unknown engine.
    """
    if cfg.engine not in ("xatlas", "faces"):
        raise InputError(f"unknown unwrap engine {cfg.engine!r} (choices: xatlas, faces)")
    normals = mesh.normals if mesh.normals is not None else vertex_normals(mesh.vertices, mesh.faces).astype(np.float32)
    counts: dict[str, Any] = {"engine": cfg.engine}
    result: dict[str, Any] | str | None = None
    if cfg.engine == "xatlas" and mesh.n_faces > 0:
        result = _run_with_limit(mesh.vertices, mesh.faces, cfg)
        if isinstance(result, dict) and result["atlas_count"] != 1:
            result = f"xatlas produced {result['atlas_count']} atlases"
    if isinstance(result, dict):
        scale = 1.0 / max(result["width"], result["height"])
        uv = result["uv"] * np.array([result["width"], result["height"]]) * scale
        vm = result["vmapping"]
        out = Mesh(
            vertices=mesh.vertices[vm],
            faces=result["faces"],
            normals=normals[vm],
            uv=uv.astype(np.float32),
            colors=None if mesh.colors is None else mesh.colors[vm],
        )
        counts.update(charts=result["charts"])
    else:
        if isinstance(result, str):
            counts["fallback"] = result
        counts["engine"] = "faces"
        tri_uv = face_grid_atlas(mesh.n_faces, cfg.resolution, cfg.padding)
        flat = mesh.faces.reshape(-1)
        out = Mesh(
            vertices=mesh.vertices[flat],
            faces=np.arange(flat.size, dtype=np.int32).reshape(-1, 3),
            normals=normals[flat],
            uv=tri_uv.reshape(-1, 2).astype(np.float32),
            colors=None if mesh.colors is None else mesh.colors[flat],
        )
        counts.update(charts=out.n_faces)
    t = out.uv[out.faces].astype(np.float64) if out.uv is not None else np.zeros((0, 3, 2))
    uv_area = 0.5 * np.abs(
        (t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1]) - (t[:, 2, 0] - t[:, 0, 0]) * (t[:, 1, 1] - t[:, 0, 1])
    )
    if out.uv is not None:
        counts["utilisation"] = round(uv_utilisation(out.uv, out.faces, cfg.resolution, cfg.resolution), 4)
    counts["uv_degenerate_faces"] = int((uv_area * cfg.resolution**2 < 1e-6).sum())
    return out, counts
