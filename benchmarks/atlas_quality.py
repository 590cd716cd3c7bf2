"""Benchmark: texture-atlas quality of the unwrap stage on the shared assets and pictures, before and after.

For every shared asset (``meshforge optimize ASSET --faces 20000``) and every shared picture (``meshforge
generate IMG``, default inflate backend, CPU) it runs the whole pipeline, writes the GLB, and measures the
written atlas with today's one set of definitions (:func:`meshforge.eval.diagnostics.diagnostics`):

* ``utilisation``: UV triangle area over the unit square (:func:`meshforge.geometry.raster.uv_utilisation`);
* ``stretch``: normalised area-weighted L2 stretch, Sander et al. 2001 (:func:`~meshforge.geometry.raster.uv_stretch`;
  1 is isometric);
* ``never written``: fraction of texels farther than 2 texels from every texel a UV triangle covers;

with the faces, charts and unwrap seconds from the run's report. ``--before REV`` runs the same on the source
tree of git revision ``REV`` (extracted with ``git archive`` into a temporary folder, run in a subprocess)
and puts both side by side; the CPU time of ``meshforge generate triposr__chair.png`` (median of
``--repeat`` runs of the command, wall clock, the trees taking turns) is measured for each tree.

    python benchmarks/atlas_quality.py [--before 2bcfd75] [--repeat 3] [--out benchmarks/results]

Writes ``atlas_quality.md`` and ``atlas_quality.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MESHFORGE_SHARED", REPO.parent.parent / "shared")) / "data"
if not SHARED.is_dir():
    SHARED = Path("/work/shared/data")
CHAIR = "triposr__chair.png"


def collect(out: Path) -> None:
    """Run every asset and picture with the meshforge on ``sys.path``; write ``<name>.glb`` and ``<name>.json``."""
    from meshforge.export import export
    from meshforge.optimize import OptimizeConfig, optimize
    from meshforge.pipeline import PipelineConfig, generate

    out.mkdir(parents=True, exist_ok=True)
    jobs: list[tuple[str, str, Path]] = [("optimize", p.stem, p) for p in sorted((SHARED / "assets").glob("*.glb"))]
    jobs += [("generate", p.stem, p) for p in sorted((SHARED / "images").iterdir()) if p.is_file()]
    for kind, name, path in jobs:
        if kind == "optimize":
            result = optimize(path, OptimizeConfig().with_options(faces=20_000))
        else:
            result = generate(path, "inflate", PipelineConfig(), device="cpu")
        (out / f"{name}.glb").write_bytes(export(result.asset, "glb"))
        unwrap = next(s for s in result.report.stages if s.name == "unwrap")
        row = {
            "kind": kind,
            "name": name,
            "faces": int(result.asset.mesh.n_faces),
            "charts": unwrap.counts.get("charts"),
            "engine": unwrap.counts.get("engine"),
            "packer": unwrap.counts.get("packer"),
            "unwrap_s": round(unwrap.seconds, 3),
        }
        (out / f"{name}.json").write_text(json.dumps(row))
        print(f"{kind} {name}: {row}", flush=True)


def measure(folder: Path) -> list[dict[str, Any]]:
    """Today's atlas figures of every GLB written by :func:`collect` into ``folder``."""
    from meshforge.eval.diagnostics import diagnostics
    from meshforge.io.meshes import load_mesh

    rows = []
    for meta in sorted(folder.glob("*.json")):
        row = json.loads(meta.read_text())
        (atlas,) = diagnostics(load_mesh(folder / f"{row['name']}.glb"))["uv"]
        row.update(
            utilisation=round(atlas["utilisation"], 4),
            stretch=None if atlas["stretch"] is None else round(atlas["stretch"], 4),
            never_written=round(atlas["never_written_fraction"], 4),
        )
        rows.append(row)
    return rows


def chair_seconds(trees: dict[str, Path], repeat: int) -> dict[str, list[float]]:
    """Wall seconds of ``meshforge generate triposr__chair.png`` (CPU, defaults) from each source tree,
    ``repeat`` times, the trees taking turns (so a change in the machine's load hits all of them alike)."""
    times: dict[str, list[float]] = {label: [] for label in trees}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeat):
            for label, src in trees.items():
                env = {**os.environ, "PYTHONPATH": str(src)}
                cmd = [sys.executable, "-m", "meshforge.cli", "generate", str(SHARED / "images" / CHAIR), "-o", tmp]
                t0 = time.perf_counter()
                subprocess.run([*cmd, "-q", "--device", "cpu"], env=env, check=True, stdout=subprocess.DEVNULL)
                times[label].append(round(time.perf_counter() - t0, 3))
    return times


def run_tree(src: Path, work: Path) -> dict[str, Any]:
    """Collect in a subprocess with ``src`` on the path, and measure here."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    subprocess.run([sys.executable, __file__, "--collect", str(work)], env=env, check=True)
    return {"rows": measure(work), "chair_s": []}


def _fmt(x: Any, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def markdown(after: dict[str, Any], before: dict[str, Any] | None, rev: str | None) -> str:
    head = [
        "# Atlas quality: utilisation, stretch, texels never written",
        "",
        "Written by `benchmarks/atlas_quality.py"
        + (f" --before {rev}" if rev else "")
        + f"` on {platform.machine()}, {os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d')}.",
        "Assets: `meshforge optimize ASSET --faces 20000`; pictures: `meshforge generate IMG` (inflate backend, "
        "CPU, defaults: 20,000 faces, 1024² maps). One set of definitions for both columns (today's code): "
        "utilisation = UV triangle area / unit square; stretch = normalised area-weighted L2 stretch (Sander "
        "et al. 2001, 1 = isometric); never written = texels farther than 2 texels from every covered texel.",
        "",
    ]
    b = {r["name"]: r for r in before["rows"]} if before else {}
    if before:
        cols = "| input | faces | charts before → after | utilisation before → after | stretch before → after | "
        cols += "never written before → after | unwrap s before → after |"
        lines = [cols, "|---|---:|---:|---:|---:|---:|---:|"]
    else:
        lines = ["| input | faces | charts | utilisation | stretch | never written | unwrap s |"]
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
    for r in after["rows"]:
        name = f"{r['name']} ({r['kind']})"
        o = b.get(r["name"])
        if o:
            lines.append(
                f"| {name} | {r['faces']:,} | {o['charts']} → {r['charts']} | {_fmt(o['utilisation'], '.3f')} → "
                f"**{_fmt(r['utilisation'], '.3f')}** | {_fmt(o['stretch'], '.4f')} → {_fmt(r['stretch'], '.4f')} | "
                f"{_fmt(o['never_written'], '.3f')} → {_fmt(r['never_written'], '.3f')} | "
                f"{o['unwrap_s']:.2f} → {r['unwrap_s']:.2f} |"
            )
        else:
            lines.append(
                f"| {name} | {r['faces']:,} | {r['charts']} | **{_fmt(r['utilisation'], '.3f')}** | "
                f"{_fmt(r['stretch'], '.4f')} | {_fmt(r['never_written'], '.3f')} | {r['unwrap_s']:.2f} |"
            )
    util = [r["utilisation"] for r in after["rows"]]
    tail = ["", f"Utilisation after: min {min(util):.3f}, median {statistics.median(util):.3f}, max {max(util):.3f}."]
    if before:
        ub = [r["utilisation"] for r in before["rows"]]
        tail[-1] += f" Before: min {min(ub):.3f}, median {statistics.median(ub):.3f}, max {max(ub):.3f}."
    for label, tree in (("before", before), ("after", after)):
        if tree and tree["chair_s"]:
            s = tree["chair_s"]
            tail.append(
                f"`meshforge generate {CHAIR}` (CPU, defaults), {label}: median {statistics.median(s):.2f} s of {s}."
            )
    return "\n".join(head + lines + tail) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", metavar="REV", help="git revision to compare with (e.g. 2bcfd75)")
    ap.add_argument("--repeat", type=int, default=3, help="chair timing runs per tree (0: none)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--collect", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.collect:
        collect(args.collect)
        return
    with tempfile.TemporaryDirectory() as tmp:
        before = None
        trees = {"after": REPO / "src"}
        if args.before:
            old = Path(tmp) / "before"
            old.mkdir()
            git = ["git", "-C", str(REPO), "archive", args.before, "src"]
            archive = subprocess.run(git, check=True, capture_output=True)
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
            trees = {"before": old / "src", **trees}
            before = run_tree(trees["before"], Path(tmp) / "before_out")
        after = run_tree(trees["after"], Path(tmp) / "after_out")
        timing = chair_seconds(trees, args.repeat)
        after["chair_s"] = timing["after"]
        if before is not None:
            before["chair_s"] = timing["before"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "atlas_quality.json").write_text(
        json.dumps({"before_rev": args.before, "before": before, "after": after}, indent=2) + "\n"
    )
    text = markdown(after, before, args.before)
    (args.out / "atlas_quality.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
