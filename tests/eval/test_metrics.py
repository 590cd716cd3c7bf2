"""Tests for meshforge.eval.metrics, meshforge.eval.diagnostics and meshforge.inspection: analytic cases, real
assets, inspect."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image as PILImage

from meshforge.errors import InputError
from meshforge.eval.diagnostics import (
    PREVIEW_BACKGROUND,
    aspect_ratios,
    diagnostics,
    inspect_file,
    preview_sheet,
    uv_coverage,
)
from meshforge.eval.metrics import (
    PSNR_CAP_DB,
    chamfer_distance,
    closest_point_on_triangles,
    closest_points,
    color_psnr,
    compare_surfaces,
    f_score,
    hausdorff,
    normal_consistency,
    psnr,
    sample_colors,
    sample_surface,
)
from meshforge.geometry.color import linear_to_srgb, srgb_to_linear
from meshforge.inspection import format_inspection, inspect_command
from meshforge.io.meshes import load_mesh
from meshforge.io.scene import SourcePart, SourceScene
from meshforge.types import Asset, Material, Mesh, Textures

N = 20_000  # samples per surface in these tests (the default is 100,000)


def sphere(radius: float = 1.0, subdivisions: int = 4) -> Mesh:
    s = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return Mesh(vertices=s.vertices, faces=s.faces)


def cube() -> tuple[np.ndarray, np.ndarray]:
    box = trimesh.creation.box()
    return np.asarray(box.vertices, dtype=np.float32), np.asarray(box.faces, dtype=np.int64)


def colored(mesh: Mesh, rgb: tuple[float, float, float]) -> Asset:
    colors = np.tile(np.array([*rgb, 1.0], dtype=np.float32), (mesh.n_vertices, 1))
    return Asset(mesh=mesh.replace(colors=colors))


# --------------------------------------------------------------------------------------------------------
# geometry metrics
# --------------------------------------------------------------------------------------------------------


def test_identical_surfaces() -> None:
    m = sphere(subdivisions=3)
    r = compare_surfaces(m, m, n_samples=N)
    assert r.chamfer_rel < 1e-12 and r.hausdorff_rel < 1e-12
    assert all(v == 1.0 for v in r.f_score.values())
    assert r.normal_consistency == pytest.approx(1.0, abs=1e-12)
    assert r.color_psnr_db == PSNR_CAP_DB
    assert r.exact_fraction == 1.0


def test_sphere_scaled_by_one_percent() -> None:
    """A unit sphere against itself scaled by 1.01: every point is 0.01·r from the other surface.

    Expected Chamfer = 0.01·r / D with D the reference's bounding-box diagonal (≈ 2√3·r, so ≈ 0.002887);
    for the tessellated spheres the offset is 0.01·h, h ≥ 0.999·r the distance of the face planes from
    the centre, so 1 % tolerance is generous.
    """
    ref = sphere(1.0)
    cand = ref.replace(vertices=ref.vertices * 1.01)
    diag = float(np.linalg.norm(np.ptp(ref.vertices, axis=0)))
    expected = 0.01 / diag
    assert expected == pytest.approx(0.01 / (2 * math.sqrt(3)), rel=2e-3)
    r = compare_surfaces(cand, ref, thresholds=(0.5 * expected, 2.0 * expected), n_samples=N)
    assert r.reference_diagonal == pytest.approx(diag)
    assert r.chamfer_rel == pytest.approx(expected, rel=0.01)
    assert r.accuracy_rel == pytest.approx(expected, rel=0.01)
    assert r.completeness_rel == pytest.approx(expected, rel=0.01)
    assert r.hausdorff_rel == pytest.approx(expected, rel=0.01)
    assert r.f_score[0.5 * expected] == 0.0  # threshold below the offset
    assert r.f_score[2.0 * expected] == 1.0  # threshold above it
    assert r.normal_consistency > 0.999
    # The single-metric helpers agree with the combined one.
    assert chamfer_distance(cand, ref, n_samples=N) == pytest.approx(r.chamfer_rel, rel=1e-9)
    assert hausdorff(cand, ref, n_samples=N) == pytest.approx(r.hausdorff_rel, rel=1e-9)
    assert f_score(cand, ref, 2.0 * expected, n_samples=N) == 1.0
    assert normal_consistency(cand, ref, n_samples=N) == pytest.approx(r.normal_consistency)


def test_distances_are_relative_to_reference_diagonal() -> None:
    ref = sphere(2.0, subdivisions=3)
    cand = ref.replace(vertices=ref.vertices + np.float32(0.0))
    shifted = Mesh(vertices=ref.vertices + np.array([0.0, 0.0, 0.02], dtype=np.float32), faces=ref.faces)
    small = compare_surfaces(shifted, ref, n_samples=N, color=False)
    big_ref = Mesh(vertices=ref.vertices * 10, faces=ref.faces)
    big = compare_surfaces(Mesh(vertices=shifted.vertices * 10, faces=ref.faces), big_ref, n_samples=N, color=False)
    assert small.chamfer_rel == pytest.approx(big.chamfer_rel, rel=1e-4)  # scale-free
    assert compare_surfaces(cand, ref, n_samples=N, color=False).chamfer_rel < 1e-12


def test_closest_point_on_triangles_brute_force() -> None:
    rng = np.random.default_rng(3)
    n = 400
    a, b, c = (rng.normal(size=(n, 3)) for _ in range(3))
    c[:40] = a[:40] + 2.0 * (b[:40] - a[:40])  # some degenerate (collinear) triangles
    p = rng.normal(size=(n, 3)) * 2.0
    closest, bary = closest_point_on_triangles(p, a, b, c)
    np.testing.assert_allclose(bary.sum(axis=1), 1.0, atol=1e-9)
    assert bary.min() >= 0.0
    np.testing.assert_allclose(closest, bary[:, :1] * a + bary[:, 1:2] * b + bary[:, 2:] * c, atol=1e-9)
    # Brute force over a dense barycentric grid: never beaten.
    g = np.linspace(0, 1, 61)
    u, v = np.meshgrid(g, g)
    keep = u + v <= 1
    w = np.stack([1 - u[keep] - v[keep], u[keep], v[keep]], axis=1)
    grid = np.einsum("gk,nkd->ngd", w, np.stack([a, b, c], axis=1))
    brute = np.linalg.norm(grid - p[:, None, :], axis=2).min(axis=1)
    got = np.linalg.norm(closest - p, axis=1)
    assert np.all(got <= brute + 1e-9)
    assert np.all(brute - got < 0.05)


def test_closest_points_exact_against_all_triangles() -> None:
    m = sphere(1.0, subdivisions=2)
    rng = np.random.default_rng(4)
    q = rng.normal(size=(500, 3))
    q = q / np.linalg.norm(q, axis=1, keepdims=True) * rng.uniform(0.5, 1.5, size=(500, 1))
    cp = closest_points(m, q, n_samples=2000, seed=1)
    tri = m.vertices.astype(np.float64)[m.faces]
    rep = np.repeat(q, len(tri), axis=0)
    t = np.tile(tri, (len(q), 1, 1))
    c, _ = closest_point_on_triangles(rep, t[:, 0], t[:, 1], t[:, 2])
    brute = np.linalg.norm(c - rep, axis=1).reshape(len(q), len(tri)).min(axis=1)
    np.testing.assert_allclose(cp.distance, brute, atol=1e-12)
    assert cp.exact.all()
    np.testing.assert_allclose(np.linalg.norm(cp.points - q, axis=1), cp.distance, atol=1e-12)


def test_sample_surface_area_weighted_and_seeded() -> None:
    # Two triangles with areas 0.5 and 1.5.
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [10, 0, 0], [13, 0, 0], [10, 1, 0]], dtype=np.float32)
    m = Mesh(vertices=v, faces=np.array([[0, 1, 2], [3, 4, 5]]))
    s = sample_surface(m, 40_000, seed=7)
    assert np.mean(s.face == 1) == pytest.approx(0.75, abs=0.01)
    assert np.all(s.bary >= 0) and np.allclose(s.bary.sum(axis=1), 1.0)
    first = s.points[s.face == 0]
    assert np.all(first[:, 0] + first[:, 1] <= 1 + 1e-9)
    # Uniform inside a face: the mean is the centroid.
    np.testing.assert_allclose(first.mean(axis=0), [1 / 3, 1 / 3, 0], atol=0.01)
    again = sample_surface(m, 40_000, seed=7)
    np.testing.assert_array_equal(s.points, again.points)
    assert not np.array_equal(sample_surface(m, 100, seed=8).points, s.points[:100])
    with pytest.raises(InputError, match="no area"):
        sample_surface(Mesh(vertices=v[:3], faces=np.array([[0, 0, 1]])), 10)


# --------------------------------------------------------------------------------------------------------
# colour
# --------------------------------------------------------------------------------------------------------


def test_color_psnr_constant_and_offset() -> None:
    m = sphere(subdivisions=2)
    grey = colored(m, (0.5, 0.5, 0.5))
    assert color_psnr(grey, grey, n_samples=N) == PSNR_CAP_DB  # identical: +inf, capped
    # Every sRGB channel off by 0.1: MSE = 0.01, PSNR = 10·log10(1 / 0.01) = 20 dB.
    lighter = colored(m, (0.6, 0.6, 0.6))
    assert color_psnr(lighter, grey, n_samples=N) == pytest.approx(20.0, abs=1e-3)
    # One channel off by 0.2: MSE = 0.04 / 3, PSNR = 10·log10(75) ≈ 18.75 dB.
    redder = colored(m, (0.7, 0.5, 0.5))
    assert color_psnr(redder, grey, n_samples=N) == pytest.approx(10 * math.log10(75.0), abs=1e-3)
    assert psnr(np.zeros(4), np.full(4, 0.5)) == pytest.approx(10 * math.log10(4.0))


def test_color_psnr_textured_asset_against_vertex_colors() -> None:
    """A texture-mapped asset and a vertex-coloured one with the same sRGB colour compare as identical."""
    m = sphere(subdivisions=2)
    uv = np.full((m.n_vertices, 2), 0.5, dtype=np.float32)
    tex = np.zeros((8, 8, 4), dtype=np.uint8)
    tex[...] = (51, 102, 204, 255)
    textured = Asset(
        mesh=m.replace(uv=uv),
        textures=Textures(base_color=tex, metallic_roughness=np.zeros((8, 8, 3), np.uint8)),
    )
    target = colored(m, (0.2, 0.4, 0.8))
    assert color_psnr(textured, target, n_samples=N) == pytest.approx(PSNR_CAP_DB)
    # The material's factor multiplies in linear space: factor 0.5 on linear red.
    halved = Asset(mesh=textured.mesh, textures=textured.textures, material=Material(base_color_factor=(0.5, 1, 1, 1)))
    s = sample_surface(halved, 10, seed=0)
    got = sample_colors(halved, s.part, s.face, s.bary)
    np.testing.assert_allclose(got[:, 0], linear_to_srgb(0.5 * srgb_to_linear(np.array(0.2))), atol=1e-6)


def test_spot_against_itself_and_shifted(shared_assets: Path) -> None:
    spot = load_mesh(shared_assets / "spot.glb")
    r = compare_surfaces(spot, spot, n_samples=N)
    assert r.chamfer_rel < 1e-12 and r.color_psnr_db == PSNR_CAP_DB and r.normal_consistency > 0.999999
    part = spot.parts[0]
    offset = np.array([0.01 * spot.diagonal(), 0, 0], dtype=np.float32)
    moved_part = SourcePart(
        mesh=part.mesh.replace(vertices=part.mesh.vertices + offset), material=part.material, base_color=part.base_color
    )
    moved = SourceScene(parts=[moved_part])
    r2 = compare_surfaces(moved, spot, n_samples=N, thresholds=(0.02,))
    assert 0.001 < r2.chamfer_rel < 0.01  # at most the 1 % shift, less where surfaces are parallel to it
    assert r2.hausdorff_rel == pytest.approx(0.01, rel=0.05)
    assert r2.f_score[0.02] == 1.0
    assert 15.0 < (r2.color_psnr_db or 0) < PSNR_CAP_DB


# --------------------------------------------------------------------------------------------------------
# diagnostics
# --------------------------------------------------------------------------------------------------------


def test_diagnostics_cube_defects() -> None:
    v, f = cube()
    good = diagnostics(Mesh(vertices=v, faces=f))
    t = good["topology"]
    assert good["counts"] == {"parts": 1, "vertices": 8, "faces": 12}
    assert t["watertight"] and t["components"] == 1 and t["boundary_edges"] == 0 and t["nonmanifold_edges"] == 0
    assert t["degenerate_faces"] == 0 and t["duplicate_faces"] == 0 and t["slivers_over_20"] == 0

    hole = diagnostics(Mesh(vertices=v, faces=f[1:]))["topology"]
    assert hole["boundary_edges"] == 3 and not hole["watertight"]

    dup = diagnostics(Mesh(vertices=v, faces=np.concatenate([f, f[:1]])))["topology"]
    assert dup["duplicate_faces"] == 1 and dup["nonmanifold_edges"] == 3 and not dup["watertight"]

    # A separate needle triangle: longest edge 1, height 0.001 → aspect 1000.
    sliver_v = np.concatenate([v, np.array([[2, 0, 0], [3, 0, 0], [2.5, 0.001, 0]], dtype=np.float32)])
    sliver = diagnostics(Mesh(vertices=sliver_v, faces=np.concatenate([f, [[8, 9, 10]]])))["topology"]
    assert sliver["slivers_over_20"] == 1 and sliver["slivers_over_100"] == 1
    assert sliver["components"] == 2 and sliver["boundary_edges"] == 3
    assert sliver["max_aspect"] == pytest.approx(1000.0, rel=1e-3)

    degenerate = diagnostics(Mesh(vertices=v, faces=np.concatenate([f, [[0, 0, 1]]])))["topology"]
    assert degenerate["degenerate_faces"] == 1

    # Split seams (duplicated positions) are welded: still one closed component.
    split = diagnostics(Mesh(vertices=v[f].reshape(-1, 3), faces=np.arange(36).reshape(12, 3)))["topology"]
    assert split["watertight"] and split["components"] == 1


def test_aspect_ratio_values() -> None:
    eq = np.array([[0, 0, 0], [1, 0, 0], [0.5, math.sqrt(3) / 2, 0]])
    assert aspect_ratios(eq, np.array([[0, 1, 2]]))[0] == pytest.approx(2 / math.sqrt(3))
    assert aspect_ratios(eq, np.array([[0, 0, 1]]))[0] == np.inf


def test_uv_overlap_utilisation_and_unwritten() -> None:
    # Two triangles over the lower-left half of the atlas; the second one stacked on the first.
    uv = np.array([[0, 0], [1, 0], [0, 1]], dtype=np.float64)
    faces = np.array([[0, 1, 2], [0, 1, 2]])
    covered, overlapped = uv_coverage(uv, faces, 64, 64)
    assert covered.mean() == pytest.approx(0.5, abs=0.02)
    assert overlapped.sum() == covered.sum()
    # Side by side (a full square), no overlap even along the shared diagonal.
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float64)
    covered, overlapped = uv_coverage(square, np.array([[0, 1, 2], [0, 2, 3]]), 64, 64)
    assert covered.all() and not overlapped.any()

    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], dtype=np.float32)
    tex = Textures(base_color=np.zeros((64, 64, 4), np.uint8), metallic_roughness=np.zeros((64, 64, 3), np.uint8))
    half = Asset(
        mesh=Mesh(vertices=v, faces=np.array([[0, 1, 2]]), uv=np.array([[0, 0], [0.5, 0], [0, 0.5], [0, 0]])),
        textures=tex,
    )
    g = diagnostics(half)["uv"][0]
    assert g["texture"] == [64, 64] and g["utilisation"] == pytest.approx(0.125, abs=0.01)
    assert g["overlap"] == 0.0
    # "Never written": more than 2 texels from every covered texel. Bounds from the exact geometry: texel
    # centres within 1 texel of the triangle (x + y ≤ 32 in texels) are written, beyond 3 texels are not.
    c = np.arange(64) + 0.5
    x, y = np.meshgrid(c, c)
    dist = np.maximum((x + y - 32.0) / math.sqrt(2.0), 0.0)
    assert int((dist > 3).sum()) <= g["texels_never_written"] <= int((dist > 1).sum())
    assert g["never_written_fraction"] == pytest.approx(g["texels_never_written"] / 4096)
    mask = np.zeros((64, 64), bool)
    mask[:10] = True
    assert diagnostics(half, bake_coverage=mask)["uv"][0]["texels_never_written"] == 54 * 64


def test_diagnostics_real_assets(shared_assets: Path) -> None:
    spot = diagnostics(load_mesh(shared_assets / "spot.glb"))
    assert spot["topology"]["watertight"] and spot["topology"]["components"] == 1
    assert spot["uv"][0]["texture"] == [1024, 1024] and spot["uv"][0]["overlap"] == 0.0
    cake = diagnostics(load_mesh(shared_assets / "kenney_cakeBirthday.glb"))
    assert len(cake["materials"]) == 7 and cake["uv"] == []
    assert sum(m["parts"] for m in cake["materials"]) == 42


# --------------------------------------------------------------------------------------------------------
# inspect
# --------------------------------------------------------------------------------------------------------


def test_inspect_file_and_command(shared_assets: Path, tmp_path: Path) -> None:
    fox = shared_assets / "Fox.glb"
    preview = tmp_path / "fox.png"
    report = inspect_file(fox, reference=fox, n_samples=5000, preview=preview, preview_size=64)
    json.dumps(report, allow_nan=False)
    assert report["format"] == "glb" and report["diagnostics"]["counts"]["faces"] == 576
    assert any("skin and animation are not carried over" in w for w in report["warnings"])
    assert report["metrics"]["chamfer_rel"] < 1e-12 and report["metrics"]["color_psnr_db"] == PSNR_CAP_DB
    with PILImage.open(preview) as im:
        assert im.size == (6 * 64, 2 * 64)
    text = format_inspection(report)
    assert "faces 576" in text and "watertight" in text and "chamfer" in text and "warning:" in text
    out = io.StringIO()
    assert inspect_command(fox, as_json=True, stream=out) == 0
    assert json.loads(out.getvalue())["diagnostics"]["counts"]["parts"] == 1
    out = io.StringIO()
    assert inspect_command(fox, stream=out) == 0 and "fox_material" in out.getvalue()
    with pytest.raises(InputError, match="no such file"):
        inspect_file(tmp_path / "nope.glb")


def test_preview_sheet_multi_part(shared_assets: Path) -> None:
    truck = load_mesh(shared_assets / "CesiumMilkTruck.glb")
    sheet = preview_sheet(truck, size=48, views=((0, 0), (90, 0)), modes=("lit",))
    assert sheet.shape == (48, 96, 3) and sheet.dtype == np.uint8
    assert (sheet != PREVIEW_BACKGROUND).any(axis=2).mean() > 0.1  # something was drawn


def test_orientation_counts_reversed_faces_but_not_the_far_side_of_a_thin_panel():
    from meshforge.eval.metrics import orientation

    from ..mesh.test_clean_decimate import _disc

    disc = _disc()
    assert orientation(disc, disc) == {"inconsistent_edges": 0, "facing_away_faces": 0, "facing_away_area": 0.0}
    flipped = orientation(disc.replace(faces=disc.faces[:, ::-1]), disc)
    assert flipped["facing_away_faces"] == disc.n_faces and flipped["facing_away_area"] == pytest.approx(1.0)
    half = disc.faces.copy()
    half[::2] = half[::2, ::-1]
    mixed = orientation(disc.replace(faces=half), disc)
    assert mixed["inconsistent_edges"] > 0 and 0.3 < mixed["facing_away_area"] < 0.7
    # a double-sided panel (front facing +z, back facing -z, 0.1 % of the diagonal apart): a +z face
    # lying just behind the back sheet is closest to the back sheet yet agrees with the front one
    back = _disc(z=-1.0 - 2e-3)
    panel = Mesh(
        np.concatenate([disc.vertices, back.vertices]),
        np.concatenate([disc.faces, back.faces[:, ::-1] + disc.n_vertices]),
    )
    candidate = _disc(z=-1.0 - 3e-3)
    assert orientation(candidate, panel)["facing_away_faces"] == 0
    assert orientation(candidate, panel, tolerance=0.0)["facing_away_faces"] == candidate.n_faces
