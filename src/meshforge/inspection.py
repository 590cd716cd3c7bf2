"""The text ``meshforge inspect`` prints: a report of :func:`meshforge.eval.diagnostics.inspect_file` for people.

:mod:`meshforge.eval` computes (counts, topology, UV atlases, surface metrics) and returns JSON-ready dicts;
this module only renders them: :func:`format_inspection` as readable lines, and :func:`inspect_command`, what
the ``meshforge inspect`` command calls, as those lines or as indented JSON on a stream.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, TextIO

from .eval.diagnostics import inspect_file
from .eval.metrics import DEFAULT_SAMPLES

__all__ = ["format_inspection", "inspect_command"]


def _fmt_size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n = n / 1024  # type: ignore[assignment]
    return str(n)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100.0 * x:.2f} %"


def format_inspection(report: dict[str, Any]) -> str:
    """Render an :func:`inspect_file` report as readable text (several lines, no trailing newline)."""
    d = report["diagnostics"]
    c, t, b = d["counts"], d["topology"], d["bounds"]
    lines = [
        f"{report['file']}  ({report.get('format')}, {_fmt_size(report.get('bytes'))}, "
        f"sha256 {str(report.get('sha256', ''))[:12]})",
        f"  parts {c['parts']:,}  vertices {c['vertices']:,}  faces {c['faces']:,}",
        "  bounds [{}] – [{}]  diagonal {:.4g}".format(
            ", ".join(f"{x:.4g}" for x in b["min"]), ", ".join(f"{x:.4g}" for x in b["max"]), b["diagonal"]
        ),
        f"  topology: {t['components']:,} components, {t['boundary_edges']:,} boundary edges, "
        f"{t['nonmanifold_edges']:,} non-manifold edges, {t['inconsistent_edges']:,} inconsistently wound edges, "
        f"{'watertight' if t['watertight'] else 'not watertight'}",
        f"  faces: {t['degenerate_faces']:,} degenerate, {t['duplicate_faces']:,} duplicate, "
        f"{t['slivers_over_20']:,} slivers with aspect > 20, {t['slivers_over_100']:,} > 100",
    ]
    mats = d["materials"]
    lines.append(f"  materials ({len(mats)}):")
    for m in mats:
        f = m["base_color_factor"]
        tex = ", ".join(f"{k} {w}×{h}" for k, (w, h) in m["textures"].items()) or "no textures"
        flags = [m["alpha_mode"].lower()] + (["double-sided"] if m["double_sided"] else [])
        flags += ["unlit"] if m["unlit"] else []
        lines.append(
            f"    {m['name']}: base ({', '.join(f'{x:.3g}' for x in f)}) metallic {m['metallic_factor']:.3g} "
            f"roughness {m['roughness_factor']:.3g}, {', '.join(flags)}; {tex}; {m['parts']} part(s)"
        )
    for g in d["uv"]:
        names = ", ".join(g["parts"][:4]) + (f" (+{len(g['parts']) - 4})" if len(g["parts"]) > 4 else "")
        w, h = g["texture"]
        lines.append(
            f"  UV atlas {w}×{h} [{names}]: utilisation {_pct(g['utilisation'])}, stretch "
            + ("n/a" if g.get("stretch") is None else f"{g['stretch']:.3f}")
            + f", seam ratio {g['seam_ratio']:.1f}, overlap {_pct(g['overlap'])}, "
            f"texels never written {_pct(g['never_written_fraction'])}"
            + (f", {g['faces_outside_unit_square']:,} faces outside [0, 1]" if g["faces_outside_unit_square"] else "")
        )
    if "metrics" in report:
        m = report["metrics"]
        fs = ", ".join(f"F@{float(k) * 100:g}% {v:.4f}" for k, v in m["f_score"].items())
        psnr = m.get("color_psnr_db")
        lines.append(
            f"  vs {report['reference']['file']} (distances relative to its diagonal "
            f"{report['reference']['diagonal']:.4g}):"
        )
        lines.append(
            f"    chamfer {_pct(m['chamfer_rel'])}, hausdorff {_pct(m['hausdorff_rel'])}, {fs}, "
            f"normal consistency {m['normal_consistency']:.4f}, colour PSNR "
            + ("n/a" if psnr is None else f"{psnr:.2f} dB")
        )
    if "orientation" in report:
        o = report["orientation"]
        lines.append(
            f"    orientation: {o['facing_away_faces']:,} faces ({_pct(o['facing_away_area'])} of the area) face "
            f"away from the reference, {o['inconsistent_edges']:,} inconsistently wound edges"
        )
    for w in report.get("warnings", []):
        lines.append(f"  warning: {w}")
    secs = report.get("seconds", {})
    if secs:
        lines.append("  time: " + ", ".join(f"{k} {v:.2f} s" for k, v in secs.items()))
    return "\n".join(lines)


def inspect_command(
    path: str | os.PathLike[str],
    *,
    reference: str | os.PathLike[str] | None = None,
    as_json: bool = False,
    preview: str | os.PathLike[str] | None = None,
    n_samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    stream: TextIO | None = None,
) -> int:
    """What ``meshforge inspect FILE [--reference REF] [--json] [--preview out.png]`` does.

    Prints :func:`format_inspection` (or, with ``as_json``, the report as indented JSON) to ``stream``
    (default stdout) and returns the exit status 0. Errors are raised (:class:`InputError` for unusable
    files), for the CLI's usual one-line handling.
    """
    out = stream if stream is not None else sys.stdout
    report = inspect_file(path, reference=reference, preview=preview, n_samples=n_samples, seed=seed)
    if as_json:
        out.write(json.dumps(report, indent=2, allow_nan=False) + "\n")
    else:
        out.write(format_inspection(report) + "\n")
    return 0
