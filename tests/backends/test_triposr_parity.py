"""TripoSR parity: our clean-room network against arrays produced by the reference implementation.

The fixture (``shared/fixtures/triposr``, see its README) is a tiny random-weight TripoSR run on CPU in float32;
every array is compared with the tolerances of its ``tolerances.json``. The official module tree is checked
against the manifest of the full checkpoint (549 keys) on the ``meta`` device, without any weights.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image as PILImage

from meshforge.backends.triposr.preprocess import composite_grey, reference_frame
from meshforge.types import Image

from .triposr_helpers import FIXTURES, area_and_signed_volume, manifest, nearest, weld

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("yaml")

from meshforge.backends.triposr.backend import TripoSRBackend  # noqa: E402
from meshforge.backends.triposr.config import ViTConfig, parse_config  # noqa: E402
from meshforge.backends.triposr.loading import build_model, check_state_dict, load_model, read_state_dict  # noqa: E402
from meshforge.backends.triposr.model import resize_condition  # noqa: E402
from meshforge.backends.triposr.render import render, spherical_camera_rays  # noqa: E402
from meshforge.backends.triposr.vit import legacy_interpolate_pos_encoding  # noqa: E402

MESH_TOL = json.loads((FIXTURES / "tolerances.json").read_text())["mesh"]


@pytest.fixture(scope="module")
def expected():
    with np.load(FIXTURES / "expected.npz") as data:
        return {k: data[k] for k in data.files}


def assert_close(name: str, actual, expected) -> None:
    """``|actual − expected| ≤ atol + rtol·|expected|`` with the fixture's tolerance for ``name``."""
    tol = json.loads((FIXTURES / "tolerances.json").read_text())["arrays"][name]
    a = np.asarray(actual.detach().cpu() if torch.is_tensor(actual) else actual, dtype=np.float32)
    b = expected[name]
    assert a.size == b.size, f"{name}: {a.shape} vs {b.shape}"
    a = a.reshape(b.shape)
    excess = np.abs(a - b) - (tol["atol"] + tol["rtol"] * np.abs(b))
    assert excess.max() <= 0, f"{name}: max |diff| {np.abs(a - b).max():.3e} over tolerance {tol}"


@pytest.fixture(scope="module")
def model():
    m, files = load_model(FIXTURES, device="cpu")
    assert files.checkpoint.name == "model.safetensors" and files.source == "folder"
    return m


@pytest.fixture(scope="module")
def encoded(model, expected):
    with torch.inference_mode():
        cond = resize_condition(torch.from_numpy(expected["composited_rgb_uint8"]), 512)
        return cond, model.encode(cond)


def rgba_input() -> np.ndarray:
    return np.asarray(PILImage.open(FIXTURES / "input.png").convert("RGBA"))


# ------------------------------------------------------------------------------------------- preprocessing


def test_reference_framing_and_grey_composite_are_exact(expected):
    framed = reference_frame(rgba_input(), 0.85)
    assert framed.shape == (503, 503, 4)  # the exclusive crop end drops the last foreground row and column
    np.testing.assert_array_equal(framed, expected["resized_foreground_rgba"])
    np.testing.assert_array_equal(composite_grey(framed), expected["composited_rgb_uint8"])  # truncation


def test_condition_image(encoded, expected):
    cond, _ = encoded
    assert cond.shape == (1, 512, 512, 3) and cond.dtype == torch.float32
    assert_close("rgb_cond", cond[:, None], expected)


def _triangle_resize_1d(x: np.ndarray, out: int, axis: int) -> np.ndarray:
    """float64 separable antialiased bilinear (triangle filter of support max(scale, 1), half-pixel centres)."""
    n = x.shape[axis]
    scale = n / out
    support = max(scale, 1.0)
    centres = (np.arange(out) + 0.5) * scale
    src = np.arange(n) + 0.5
    w = np.clip(1.0 - np.abs(src[None, :] - centres[:, None]) / support, 0.0, None)
    w /= w.sum(axis=1, keepdims=True)
    return np.moveaxis(np.tensordot(w, np.moveaxis(x, axis, 0), axes=(1, 0)), 0, axis)


def test_condition_resize_is_antialiased_when_shrinking():
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (1031, 1031, 3), dtype=np.uint8)
    ours = resize_condition(torch.from_numpy(rgb), 512)[0].numpy()
    ref = _triangle_resize_1d(_triangle_resize_1d(rgb.astype(np.float64) / 255.0, 512, 0), 512, 1)
    assert np.abs(ours - ref).max() < 2e-6
    plain = torch.nn.functional.interpolate(
        torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255, (512, 512), mode="bilinear", align_corners=False
    )[0].permute(1, 2, 0)
    assert np.abs(plain.numpy() - ref).max() > 1e-2  # without antialiasing the test would fail


# ------------------------------------------------------------------------------------------------ network


def test_legacy_position_embedding_interpolation(model, expected):
    table = model.image_tokenizer.model.embeddings.position_table(512, 512)
    assert table.shape == (1, 1025, 64)
    assert_close("vit_pos_embed_interp", table, expected)
    # the legacy scale-factor rule is not the same as resizing to the target size
    pe = model.image_tokenizer.model.embeddings.position_embeddings
    by_size = torch.nn.functional.interpolate(
        pe[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2), size=(32, 32), mode="bicubic", align_corners=False
    )
    assert (by_size.permute(0, 2, 3, 1).reshape(1, 1024, -1) - table[:, 1:]).abs().max() > 1e-3
    assert legacy_interpolate_pos_encoding(pe, 14, 14) is pe  # the training grid needs no interpolation


def test_vit_mlp_uses_exact_gelu(model):
    layer = model.image_tokenizer.model.encoder.layer[0]
    x = torch.randn(1, 5, 64, generator=torch.Generator().manual_seed(0)) * 3
    with torch.inference_mode():
        h = layer.layernorm_after(x)
        pre = layer.intermediate.dense(h)
        exact = x + layer.output.dense(torch.nn.functional.gelu(pre))
        tanh = x + layer.output.dense(torch.nn.functional.gelu(pre, approximate="tanh"))
        ours = x + layer.output.dense(
            torch.nn.functional.gelu(layer.intermediate.dense(layer.layernorm_after(x)), approximate=layer.approximate)
        )
    assert layer.approximate == "none"
    assert torch.equal(ours, exact) and not torch.equal(exact, tanh)


def test_network_intermediates(encoded, expected):
    _, out = encoded
    assert out["image_tokens"].shape == (1, 1025, 64)
    assert out["backbone_out"].shape == (1, 64, 192)
    assert out["scene_codes"].shape == (1, 3, 8, 16, 16)
    for name in ("image_tokens", "backbone_out", "scene_codes"):
        assert_close(name, out[name], expected)


def test_queries(model, encoded, expected):
    code = encoded[1]["scene_codes"][0]
    with torch.inference_mode():
        q = model.query(code, torch.from_numpy(expected["query_points"]), chunk=1000)  # chunking is invisible
    assert_close("query_density_raw", q["density_raw"], expected)
    assert_close("query_density", q["density"], expected)
    assert_close("query_rgb_raw", q["rgb_raw"], expected)
    assert_close("query_rgb", q["rgb"], expected)


def reference_grid_axis(n: int = 64):
    """The reference's grid coordinates: float32 ``linspace(0, 1)`` rescaled to ``[-0.87, 0.87]``."""
    return (torch.linspace(0, 1, n) - 0) / (1 - 0) * (0.87 - (-0.87)) + (-0.87)


def test_grid(model, encoded, expected):
    code = encoded[1]["scene_codes"][0]
    axis = reference_grid_axis()
    with torch.inference_mode():
        grid = model.query_grid(code, axis, chunk=50_000, keys=("density_raw", "density"))
        # the separable fast path equals point queries
        pts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
        direct = model.query(code, pts[::97])["density"]
    assert_close("grid_density_raw", grid["density_raw"], expected)
    assert_close("grid_density", grid["density"], expected)
    torch.testing.assert_close(grid["density"].reshape(-1)[::97], direct, rtol=1e-6, atol=1e-5)


def test_render(model, encoded, expected):
    rays_o, rays_d = spherical_camera_rays(1, 0.0, 1.9, 40.0, 32, 32)
    assert_close("render_rays_o", rays_o[0], expected)
    assert_close("render_rays_d", rays_d[0], expected)
    with torch.inference_mode():
        rgb = render(model, encoded[1]["scene_codes"][0], rays_o[0], rays_d[0])
    assert_close("render_rgb", rgb, expected)


def _skimage_mesh(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes at 25 of a 64³ native grid, in world units, faces wound outward."""
    from skimage.measure import marching_cubes

    verts, faces, _, _ = marching_cubes(grid, 25.0, method="lewiner", allow_degenerate=False)
    return (verts / 63.0 * 1.74 - 0.87).astype(np.float32), faces[:, ::-1]


def test_mesh_matches_the_reference_as_a_set(model, encoded, expected):
    """The README's comparison for a marching-cubes engine with another table (scikit-image's Lewiner)."""
    code = encoded[1]["scene_codes"][0]
    with torch.inference_mode():
        grid = model.query_grid(code, reference_grid_axis())["density"].numpy()
    ref_v, ref_f = weld(expected["mesh_vertices"], expected["mesh_faces"], MESH_TOL["weld_tol"])
    ours_v, ours_f = weld(*_skimage_mesh(grid), MESH_TOL["weld_tol"])
    assert (len(ref_v), len(ref_f)) == (7756, 14954)
    # vertices: one-to-one nearest-neighbour match, equal counts
    assert len(ours_v) == len(ref_v)
    dist, idx = nearest(ref_v, ours_v)
    assert dist.max() <= MESH_TOL["vertex_match_tol"], dist.max()
    assert len(np.unique(idx)) == len(ref_v)
    # faces: equal count, area and signed volume (winding) close
    assert len(ours_f) == len(ref_f)
    ref_area, ref_vol = area_and_signed_volume(ref_v, ref_f)
    area, vol = area_and_signed_volume(ours_v, ours_f)
    assert abs(area - ref_area) <= MESH_TOL["area_rtol"] * ref_area
    assert vol > 0 and abs(vol - ref_vol) <= MESH_TOL["signed_volume_rtol"] * abs(ref_vol)
    # colours at matched vertices (float and the uint8 that run.py writes)
    with torch.inference_mode():
        colors = model.query(code, torch.from_numpy(ours_v))["rgb"].numpy()
    _, ref_idx = nearest(expected["mesh_vertices"], ref_v[idx])
    ref_colors = expected["mesh_vertex_colors"][ref_idx]
    assert np.abs(colors - ref_colors).max() <= MESH_TOL["vertex_color_atol"]
    ref_u8 = expected["mesh_vertex_colors_uint8"][ref_idx, :3].astype(int)
    assert np.abs(np.rint(colors * 255).astype(int) - ref_u8).max() <= MESH_TOL["vertex_color_uint8_max_diff"]


# ------------------------------------------------------------------------ checkpoints and the official tree


def test_ckpt_and_safetensors_hold_the_same_tensors_and_give_the_same_codes(tmp_path, encoded):
    ckpt = read_state_dict(FIXTURES / "model.ckpt")
    st = read_state_dict(FIXTURES / "model.safetensors")
    assert sorted(ckpt) == sorted(st) and len(ckpt) == 97  # safetensors stores keys sorted
    assert all(torch.equal(ckpt[k], st[k]) for k in ckpt)
    assert float(ckpt["decoder.layers.6.bias"][0]) == pytest.approx(3.8082120418548584, abs=0)  # the shifted bias

    folder = tmp_path / "ckpt_only"
    folder.mkdir()
    shutil.copy(FIXTURES / "config.yaml", folder)
    shutil.copytree(FIXTURES / "dino_config", folder / "dino_config")
    shutil.copy(FIXTURES / "model.ckpt", folder)
    m, files = load_model(folder)
    assert files.checkpoint.name == "model.ckpt"
    with torch.inference_mode():
        codes = m(encoded[0])
    assert torch.equal(codes, encoded[1]["scene_codes"])


def test_official_module_tree_matches_the_manifest():
    man = manifest()
    cfg = parse_config(man["config"], "manifest")
    vit = ViTConfig.from_dict(man["dino_config_json"], "manifest")
    model = build_model(cfg, vit, "meta")
    state = model.state_dict()
    got = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()]
    want = [(t["key"], t["shape"], t["dtype"]) for t in man["tensors"]]
    assert got == want  # same keys, same order, same shapes and dtypes
    assert sum(v.numel() for v in state.values()) == man["num_elements"] == 419_275_628
    # a checkpoint with exactly the manifest's tensors loads strictly
    fake = {t["key"]: torch.empty(t["shape"], dtype=torch.float32, device="meta") for t in man["tensors"]}
    check_state_dict(model, fake, "manifest")
    result = model.load_state_dict(fake, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys


# ------------------------------------------------------------------------------ the backend and its field


@pytest.fixture(scope="module")
def field(expected):
    backend = TripoSRBackend(weights=str(FIXTURES), device="cpu")
    # the reference's own framed cut-out: the backend composites it and resizes 503 → 512 like the reference
    return backend(Image(rgba=expected["resized_foreground_rgba"], name="chair", has_alpha=True))


def test_backend_field_in_the_canonical_frame(field, encoded, expected):
    torch.testing.assert_close(field.scene_code, encoded[1]["scene_codes"][0], rtol=0, atol=0)
    rot = TripoSRBackend.ROTATION
    assert np.allclose(rot @ rot.T, np.eye(3)) and np.linalg.det(rot) == pytest.approx(1.0)
    # the reference's input camera (+x, up +z, picture right +y) → canonical +Z, up +Y, right +X
    assert np.allclose(rot @ [1, 0, 0], [0, 0, 1]) and np.allclose(rot @ [0, 0, 1], [0, 1, 0])
    assert np.allclose(rot @ [0, 1, 0], [1, 0, 0])
    canonical = (expected["query_points"].astype(np.float64) @ rot.T).astype(np.float32)
    assert_close("query_density", field.density(canonical)[:, None], expected)
    assert_close("query_rgb", field.color(canonical), expected)
    metallic, roughness = field.material(canonical[:3])
    assert metallic.tolist() == [0, 0, 0] and roughness.tolist() == pytest.approx([0.8] * 3)
    assert field.iso_level == 25.0 and field.bbox_max.tolist() == pytest.approx([0.87] * 3)


def test_field_density_grid_fast_path(field, expected):
    from meshforge.fields.base import grid_axes

    grid = field.density_grid(64)
    # canonical [i, j, k] (X, Y, Z) is the reference's native [k, i, j] (x = Z, y = X, z = Y)
    assert_close("grid_density", grid.transpose(2, 0, 1), expected)
    xs, ys, zs = grid_axes(field, 64)
    ii = np.array([0, 5, 31, 63, 17])
    jj = np.array([63, 0, 40, 2, 17])
    kk = np.array([1, 62, 9, 30, 17])
    pts = np.stack([xs[ii], ys[jj], zs[kk]], axis=1)
    np.testing.assert_allclose(grid[ii, jj, kk], field.density(pts), rtol=1e-6, atol=1e-5)


def test_pipeline_extraction_contains_the_reference_surface(field, expected):
    """meshforge's extraction closes the surface at the box; rotated back, it holds every reference vertex."""
    from meshforge.config import ExtractConfig
    from meshforge.fields.isosurface import extract

    mesh = extract(field, ExtractConfig(resolution=64))
    native = mesh.vertices.astype(np.float64) @ TripoSRBackend.ROTATION  # rows: canonical → native
    ref_v, _ = weld(expected["mesh_vertices"], expected["mesh_faces"], MESH_TOL["weld_tol"])
    dist, _ = nearest(native, ref_v)
    assert dist.max() <= MESH_TOL["vertex_match_tol"], dist.max()
    extra_dist, _ = nearest(ref_v, native)
    extra = native[extra_dist > MESH_TOL["vertex_match_tol"]]
    assert len(extra) and np.all(np.abs(extra).max(axis=1) >= 0.87 - 1e-6)  # caps lie on the box faces
