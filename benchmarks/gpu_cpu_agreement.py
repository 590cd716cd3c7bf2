"""GPU and CPU finishing engines on the shared assets: the same `optimize`, compared file against file.

``meshforge optimize ASSET --finish-engine torch`` run on the GPU (the device) and ``--finish-engine cpu`` run
anywhere write ``<name>_gpu.glb`` and ``<name>_cpu.glb``; this script compares each pair with
:func:`meshforge.eval.diagnostics.inspect_file` (Chamfer distance of the GPU result against the CPU one,
relative to the CPU result's bounding-box diagonal; 100k surface samples), runs the Khronos glTF validator on
both, and reports faces, slivers (aspect > 100), degenerate faces and atlas utilisation (UV triangle area over
the atlas area) side by side. Issue #11's bar: Chamfer within 0.05 % of the diagonal, 0 errors / 0 warnings.

    # on the GPU machine
    for f in ../shared/data/assets/*.glb; do n=$(basename $f .glb)
      meshforge optimize $f --finish-engine torch --faces 20000 -o gpu/${n}_gpu.glb; done
    # anywhere
    for f in ../shared/data/assets/*.glb; do n=$(basename $f .glb)
      meshforge optimize $f --finish-engine cpu --faces 20000 -o cpu/${n}_cpu.glb; done
    python benchmarks/gpu_cpu_agreement.py --gpu gpu --cpu cpu --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from meshforge.eval.diagnostics import inspect_file  # noqa: E402
from meshforge.eval.validate import validate_gltf  # noqa: E402


def side(info: dict[str, Any], validation: dict[str, Any]) -> dict[str, Any]:
    diag = info["diagnostics"]
    groups = diag.get("uv") or []
    return {
        "faces": diag["counts"]["faces"],
        "degenerate_faces": diag["topology"]["degenerate_faces"],
        "slivers_over_100": diag["topology"]["slivers_over_100"],
        "utilisation": groups[0]["utilisation"] if len(groups) == 1 else None,
        "validator": [validation["errors"], validation["warnings"]],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", type=Path, required=True, help="folder of <name>_gpu.glb")
    ap.add_argument("--cpu", type=Path, required=True, help="folder of <name>_cpu.glb")
    ap.add_argument("--meta", default="", help="a line on where each side ran")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    a = ap.parse_args()
    rows = []
    for gpu in sorted(a.gpu.glob("*_gpu.glb")):
        name = gpu.name[: -len("_gpu.glb")]
        cpu = a.cpu / f"{name}_cpu.glb"
        if not cpu.exists():
            print(f"{name}: no {cpu}, skipped")
            continue
        ours = inspect_file(gpu, reference=cpu)
        ref = inspect_file(cpu)
        row = {
            "asset": name,
            "chamfer_rel": ours["metrics"]["chamfer_rel"],
            "hausdorff_rel": ours["metrics"]["hausdorff_rel"],
            "gpu": side(ours, validate_gltf(gpu)),
            "cpu": side(ref, validate_gltf(cpu)),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "gpu_cpu_agreement.json").write_text(json.dumps({"meta": a.meta, "rows": rows}, indent=1) + "\n")
    lines = [
        "# GPU (torch engine) against CPU (reference engine): `optimize --faces 20000` on the shared assets",
        "",
        a.meta,
        "",
        "| asset | Chamfer GPU↔CPU (% diag) | Hausdorff (% diag) | faces GPU / CPU | slivers>100 GPU / CPU "
        "| degenerate GPU / CPU | utilisation GPU / CPU | validator GPU / CPU (errors, warnings) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]

    def pair(r: dict[str, Any], key: str, fmt: str = "{}") -> str:
        return " / ".join(fmt.format(r[s][key]) if r[s][key] is not None else "–" for s in ("gpu", "cpu"))

    for r in rows:
        lines.append(
            f"| {r['asset']} | {100 * r['chamfer_rel']:.4f} | {100 * r['hausdorff_rel']:.3f} | {pair(r, 'faces')} "
            f"| {pair(r, 'slivers_over_100')} | {pair(r, 'degenerate_faces')} | {pair(r, 'utilisation', '{:.3f}')} "
            f"| {pair(r, 'validator')} |"
        )
    (a.out / "gpu_cpu_agreement.md").write_text("\n".join(lines) + "\n")
    print("wrote", a.out / "gpu_cpu_agreement.md")


if __name__ == "__main__":
    main()
