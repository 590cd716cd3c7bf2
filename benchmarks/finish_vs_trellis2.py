"""Finishing a TRELLIS.2-style decoded surface: meshforge's ``finish`` against TRELLIS.2's ``to_glb``, same run.

The reference is ``o_voxel.postprocess.to_glb`` of microsoft/TRELLIS.2 (the compiled o_voxel built from the
``o-voxel`` folder of ``--reference PATH``; its stack installed: CuMesh with cubvh, nvdiffrast, FlexGEMM, o-voxel):
hole filling, CuMesh QEM simplification (3× the target, clean-up, the target), CuMesh's chart clustering +
xatlas packing, nvdiffrast UV rasterisation, BVH projection onto the dense surface, FlexGEMM trilinear
sampling of the sparse attribute volume, OpenCV inpainting, trimesh's GLB writer. Ours is
:func:`meshforge.pipeline.finish` at its defaults (clean → decimate → unwrap → bake with a tangent-space normal
map from the dense surface → GLB bytes), the surface left on ``--device`` so the PyTorch engine runs.

**Inputs** (both sides get the same tensors; TRELLIS.2's frame, the box ``[-0.5, 0.5]³``, +Z up):

* ``smooth``: the marching-cubes isosurface (:func:`meshforge.fields.mc_torch.extract_closed`) of a smooth
  procedural density (an ellipsoid with four lobes and a low sine relief) at ``--smooth-resolution``³
  (448³: ~950k faces, the issue's smooth case);
* ``noisy``: the same density plus trilinear value noise (a random 48³ lattice, amplitude 0.05) at
  ``--noisy-resolution``³ (500³: ~1.3 M faces, the issue's noisy case: the bumpy surface random or early flow
  weights give);
* attributes: sparse voxels of a ``--grid``³ grid (512, TRELLIS.2's texture resolution at ``512``) — every
  voxel within one voxel of a dense vertex — holding a procedural base colour (smooth hue bands plus a
  checker), metallic (0 or 1 by region), roughness (a gradient) and alpha 1, as TRELLIS.2's texture
  decoder lays them out (``pbr_attr_layout``). Ours reads them through
  :class:`meshforge.fields.sparse_voxels.SparseVoxelField` (the reference's sampling rule).

Budgets ``--budgets`` (40k and 200k faces), ``--texture-size`` maps (1024²). Per run: wall seconds
(device-synchronised) from the surface tensors to GLB bytes, the output's faces, degenerate faces, slivers
(aspect ratio over 100), Chamfer distance to the dense surface (relative to the box diagonal), and the Khronos
validator's errors and warnings when ``--validate`` finds it (else the GLBs are kept under ``--out`` for it).
Median of ``--repeat`` after a warm-up. The reference runs at each of ``--reference-settings``: ``defaults``
(``to_glb``'s own: QEM simplification, no remeshing) and ``app`` (the remeshing that TRELLIS.2's ``app.py`` and
``example.py`` pass: ``remesh=True, remesh_band=1, remesh_project=0``); the faster one is its tuned figure. Both
sides also report the output atlas's UV utilisation, stretch and seam ratio as ``meshforge inspect`` gives them
(:func:`meshforge.eval.diagnostics.diagnostics`).

    python benchmarks/finish_vs_trellis2.py --reference devref/TRELLIS.2 --device cuda --out benchmarks/results
    python benchmarks/finish_vs_trellis2.py --device cpu --smooth-resolution 96 --noisy-resolution 80 \\
        --budgets 4000 --texture-size 256 --repeat 1 --out /tmp/fvt   # script check of our side, no reference
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from meshforge.eval.diagnostics import aspect_ratios, diagnostics  # noqa: E402
from meshforge.eval.metrics import chamfer_distance  # noqa: E402
from meshforge.fields.mc_torch import extract_closed  # noqa: E402
from meshforge.fields.sparse_voxels import GLTF_TO_TRELLIS, SparseVoxelField  # noqa: E402
from meshforge.geometry.topology import face_areas  # noqa: E402
from meshforge.types import DeviceMesh, Mesh  # noqa: E402

#: TRELLIS.2's attribute layout (``pbr_attr_layout`` of its pipeline.json)
LAYOUT = {"base_color": slice(0, 3), "metallic": slice(3, 4), "roughness": slice(4, 5), "alpha": slice(5, 6)}
#: TRELLIS.2 frame → glTF frame (what ``to_glb`` applies on export): (x, y, z) → (x, z, −y)
TRELLIS_TO_GLTF = np.linalg.inv(GLTF_TO_TRELLIS)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def density(resolution: int, device: torch.device, noise: float, seed: int = 0) -> torch.Tensor:
    """``[R, R, R]`` float32 density over [-0.5, 0.5]³ (inside > 0)."""
    axis = torch.linspace(-1.0, 1.0, resolution, device=device)
    gx, gy, gz = torch.meshgrid(axis, axis, axis, indexing="ij")
    x, y, z = gx / 1.15, gy / 1.15, gz / 1.15
    body = 1.0 - torch.sqrt((x / 0.75) ** 2 + (y / 0.5) ** 2 + (z / 0.45) ** 2)
    d = body
    for cx, cy, cz in ((0.55, 0.35, 0.2), (-0.55, 0.35, -0.2), (0.2, -0.45, 0.3), (-0.3, -0.4, -0.3)):
        d = torch.maximum(d, 0.3 - torch.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / 0.6)
    del body
    d = d + 0.02 * torch.sin(7.0 * x) * torch.sin(9.0 * y) * torch.sin(8.0 * z)
    if noise > 0:
        g = torch.Generator(device="cpu").manual_seed(seed)
        lattice = torch.rand((1, 1, 48, 48, 48), generator=g).to(device) * 2 - 1
        d = (
            d
            + noise
            * torch.nn.functional.interpolate(lattice, size=(resolution,) * 3, mode="trilinear", align_corners=True)[
                0, 0
            ]
        )
    return d.float()


def surface(resolution: int, noise: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The isosurface in TRELLIS.2's box: ``(vertices [V, 3] float32, faces [F, 3] int64)`` on ``device``."""
    grid = density(resolution, device, noise)
    out = extract_closed(grid, np.full(3, -0.5), np.full(3, 0.5), 0.0)
    assert out is not None
    v, f = out
    return v.float(), f.long()


def attributes(v: torch.Tensor, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse PBR voxels around the surface: ``(coords [M, 3] int32, attrs [M, 6] float32)`` on ``v``'s device."""
    base = torch.floor((v + 0.5) * grid).long().clamp(0, grid - 1)
    offsets = torch.stack(torch.meshgrid(*(torch.arange(-1, 2, device=v.device),) * 3, indexing="ij"), -1).reshape(
        -1, 3
    )
    cells = (base[:, None, :] + offsets[None]).reshape(-1, 3).clamp(0, grid - 1)
    key = (cells[:, 0] * grid + cells[:, 1]) * grid + cells[:, 2]
    key = torch.unique(key)
    coords = torch.stack([key // (grid * grid), (key // grid) % grid, key % grid], 1)
    p = (coords.float() + 0.5) / grid - 0.5  # voxel centres, TRELLIS.2 frame
    hue = 0.5 + 0.5 * torch.sin(6.0 * p[:, 2:3] + torch.tensor([0.0, 2.1, 4.2], device=v.device))
    checker = ((torch.floor(p[:, 0] * 16) + torch.floor(p[:, 1] * 16)) % 2)[:, None]
    color = (0.25 + 0.6 * hue) * (0.8 + 0.2 * checker)
    metallic = (p[:, 0:1] > 0.15).float()
    roughness = (0.2 + 0.7 * (p[:, 2:3] + 0.5)).clamp(0, 1)
    alpha = torch.ones_like(metallic)
    return coords.int(), torch.cat([color, metallic, roughness, alpha], 1).float()


def to_gltf(v: np.ndarray) -> np.ndarray:
    return (v @ TRELLIS_TO_GLTF[:3, :3].T).astype(np.float32)


def ours(
    v: torch.Tensor, f: torch.Tensor, coords: torch.Tensor, attrs: torch.Tensor, grid: int, budget: int, size: int
) -> bytes:
    """meshforge: the surface (in glTF's frame, on its device) → :func:`meshforge.pipeline.finish` → GLB bytes."""
    from meshforge import export
    from meshforge.config import PipelineConfig
    from meshforge.pipeline import finish
    from meshforge.raw import Raw

    m = torch.as_tensor(TRELLIS_TO_GLTF[:3, :3], dtype=v.dtype, device=v.device)
    field = SparseVoxelField(coords, attrs, origin=(-0.5, -0.5, -0.5), voxel_size=1.0 / grid, transform=GLTF_TO_TRELLIS)
    raw = Raw(surface=device_surface(v @ m.T, f), attributes=field, name="bench")
    cfg = PipelineConfig().with_options(faces=budget, texture_size=size)
    result = finish(raw, cfg)
    glb = export(result.asset, "glb")
    LAST_STAGES.clear()
    LAST_STAGES.update({s.name: round(s.seconds, 4) for s in result.report.stages})
    return glb


#: the stage times (s) of the last run of :func:`ours` (its report), for the row of the results
LAST_STAGES: dict[str, float] = {}


def device_surface(v: torch.Tensor, f: torch.Tensor) -> DeviceMesh:
    """The dense surface as the pipeline takes it from a GPU extraction: left on its device."""
    return DeviceMesh(v, f)


def reference(
    to_glb: Any,
    v: torch.Tensor,
    f: torch.Tensor,
    coords: torch.Tensor,
    attrs: torch.Tensor,
    grid: int,
    budget: int,
    size: int,
    settings: str = "defaults",
) -> bytes:
    """TRELLIS.2: ``to_glb`` → trimesh's GLB bytes.

    ``settings``: ``defaults`` (the function's own: no remeshing) or ``app`` (what TRELLIS.2's ``app.py`` and
    ``example.py`` pass: dual-contouring remeshing with ``remesh_band=1``, ``remesh_project=0``).
    """
    extra: dict[str, Any] = {}
    if settings == "app":
        extra = {"remesh": True, "remesh_band": 1, "remesh_project": 0}
    mesh = to_glb(
        vertices=v,
        faces=f.int(),
        attr_volume=attrs,
        coords=coords,
        attr_layout=LAYOUT,
        aabb=[[-0.5, -0.5, -0.5], [0.5, 0.5, 0.5]],
        grid_size=grid,
        decimation_target=budget,
        texture_size=size,
        **extra,
    )
    buf = io.BytesIO()
    mesh.export(buf, file_type="glb")
    return buf.getvalue()


def quality(glb: bytes, dense: Mesh, validate: bool) -> dict[str, Any]:
    from meshforge.io.meshes import load_mesh
    from meshforge.optimize import flatten

    path = Path(f"/tmp/fvt_{time.monotonic_ns()}.glb")
    path.write_bytes(glb)
    scene = load_mesh(path)
    low = flatten(scene)
    ar = aspect_ratios(low.vertices, low.faces)
    area = face_areas(low.vertices, low.faces)
    uv = {}
    atlases = diagnostics(scene)["uv"]  # the atlas figures as `meshforge inspect` gives them
    if atlases:  # both sides write one textured atlas
        g = atlases[0]
        uv = {
            "uv_utilisation": round(g["utilisation"], 4),
            "uv_stretch": None if g["stretch"] is None else round(g["stretch"], 4),
            "seam_ratio": round(g["seam_ratio"], 2),
        }
    row: dict[str, Any] = {
        "faces": int(low.n_faces),
        "degenerate_faces": int((area <= 1e-12).sum()),
        "slivers_over_100": int((ar > 100).sum()),
        "chamfer_rel": float(chamfer_distance(low, dense, n_samples=100_000)),
        "glb_bytes": len(glb),
        **uv,
    }
    if validate:
        from meshforge.eval.validate import validate_gltf

        rep = validate_gltf(glb)
        row["validator"] = f"{rep['errors']} errors / {rep['warnings']} warnings"
    path.unlink()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", help="the TRELLIS.2 folder (o-voxel and its compiled stack installed)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smooth-resolution", type=int, default=448)
    ap.add_argument("--noisy-resolution", type=int, default=500)
    ap.add_argument("--grid", type=int, default=512)
    ap.add_argument("--budgets", default="40000,200000")
    ap.add_argument("--texture-size", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument(
        "--reference-settings",
        default="defaults,app",
        help="to_glb settings to run: defaults (no remeshing) and/or app (app.py's remeshing)",
    )
    ap.add_argument("--validate", action="store_true", help="run the Khronos validator (needs Node.js)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    a = ap.parse_args()
    device = torch.device(a.device)
    to_glb = None
    if a.reference:
        # the installed, compiled o_voxel (its source folder has no _C and would shadow it); its file I/O
        # modules (plyfile, zstandard) are not used by to_glb and are stubbed when absent
        import types

        for name in ("plyfile", "zstandard"):
            try:
                __import__(name)
            except ImportError:
                sys.modules[name] = types.ModuleType(name)
        from o_voxel.postprocess import to_glb  # type: ignore[import-not-found]
    budgets = [int(b) for b in a.budgets.split(",")]
    a.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for name, res, noise in (("smooth", a.smooth_resolution, 0.0), ("noisy", a.noisy_resolution, 0.05)):
        run_surface(a, name, res, noise, device, to_glb, budgets, rows)
    write(a, rows)


def run_surface(
    a: argparse.Namespace,
    name: str,
    res: int,
    noise: float,
    device: torch.device,
    to_glb: Any,
    budgets: list[int],
    rows: list[dict[str, Any]],
) -> None:
    """Both sides on one surface, every budget; appends to ``rows`` and rewrites the results as it goes."""
    v, f = surface(res, noise, device)
    coords, attrs = attributes(v, a.grid)
    dense = Mesh(to_gltf(v.cpu().numpy()), f.cpu().numpy().astype(np.int32))
    print(f"{name}: {f.shape[0]:,} faces at {res}³, {coords.shape[0]:,} attribute voxels at {a.grid}³", flush=True)
    sides: list[tuple[str, Any]] = [("meshforge", lambda b: ours(v, f, coords, attrs, a.grid, b, a.texture_size))]
    if to_glb is not None:
        for setting in a.reference_settings.split(","):
            sides.append(
                (
                    f"TRELLIS.2 to_glb ({setting})",
                    lambda b, s=setting: reference(to_glb, v, f, coords, attrs, a.grid, b, a.texture_size, s),
                )
            )
    for budget in budgets:
        for side, fn in sides:
            try:
                fn(budget)  # warm-up
                times, glb = [], b""
                for _ in range(a.repeat):
                    sync(device)
                    t = time.perf_counter()
                    glb = fn(budget)
                    sync(device)
                    times.append(time.perf_counter() - t)
            except Exception as exc:  # report and go on
                print(f"{name} {budget} {side}: failed: {type(exc).__name__}: {exc}", flush=True)
                continue
            row = {
                "surface": name,
                "dense_faces": int(f.shape[0]),
                "budget": budget,
                "side": side,
                "seconds": statistics.median(times),
                **quality(glb, dense, a.validate),
            }
            if side == "meshforge":
                row["stages_last_run"] = dict(LAST_STAGES)  # (the GLB's encoding is not a stage of the report)
            tag = "ours" if side == "meshforge" else "ref_" + side.split("(")[-1].rstrip(")")
            stem = f"fvt_{name}_{budget // 1000}k_{tag}.glb"
            if a.texture_size <= 1024 and budget <= 40_000:
                (a.out / stem).write_bytes(glb)  # for the validator and a look, where it is not here
            rows.append(row)
            print(json.dumps(row), flush=True)
            write(a, rows)


def write(a: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    meta = {
        "device": torch.cuda.get_device_name() if a.device.startswith("cuda") else platform.processor() or "cpu",
        "torch": torch.__version__,
        "texture_size": a.texture_size,
        "grid": a.grid,
        "repeat": a.repeat,
    }
    (a.out / "finish_vs_trellis2.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [
        "# Finishing a TRELLIS.2-style surface: meshforge against TRELLIS.2's to_glb",
        "",
        "```",
        json.dumps(meta),
        "```",
        "",
        "| surface | dense faces | budget | side | s | faces | degenerate | slivers > 100 | Chamfer (rel.) "
        "| UV utilisation | UV stretch | seam ratio | validator |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['surface']} | {r['dense_faces']:,} | {r['budget']:,} | {r['side']} | {r['seconds']:.2f} | "
            f"{r['faces']:,} | {r['degenerate_faces']} | {r['slivers_over_100']} | {r['chamfer_rel']:.2e} | "
            f"{r.get('uv_utilisation', '')} | {r.get('uv_stretch', '')} | {r.get('seam_ratio', '')} | "
            f"{r.get('validator', 'not run here')} |"
        )
    (a.out / "finish_vs_trellis2.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
