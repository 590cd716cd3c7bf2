"""TRELLIS.2's PBR voxel field (:mod:`meshforge.fields.sparse_voxels`) and its ``.mfraw`` form.

On a full grid, sampling the sparse voxels is ordinary trilinear interpolation with clamped borders, so
``torch.nn.functional.grid_sample`` (an independent implementation) is the reference there; with missing
voxels the renormalised weights are computed by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from meshforge.backends.trellis2.dual_grid import flexible_dual_grid_to_mesh
from meshforge.errors import InputError, StageError
from meshforge.fields.base import Field
from meshforge.fields.sparse_voxels import GLTF_TO_TRELLIS, PBR_CHANNELS, SparseVoxelField
from meshforge.raw import Raw, dumps_raw, loads_raw, portable
from meshforge.types import Mesh

ORIGIN = (-0.5, -0.5, -0.5)


def dense_reference(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """``F.grid_sample`` (trilinear, border padding, voxel ``c`` centred at ``c + 0.5``) of a dense
    ``[X, Y, Z, C]`` volume at grid coordinates ``[P, 3]``."""
    r = np.asarray(values.shape[:3], dtype=np.float64)
    volume = torch.from_numpy(values).permute(3, 0, 1, 2)[None].double()  # [1, C, X, Y, Z]
    normalised = torch.from_numpy(2 * grid / r - 1).flip(-1).reshape(1, 1, 1, -1, 3)  # (z, y, x) → (W, H, D)
    out = F.grid_sample(volume, normalised, mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(values.shape[3], -1).t().numpy()


def test_a_full_block_samples_as_plain_trilinear_interpolation():
    rng = np.random.default_rng(0)
    values = rng.random((2, 2, 2, 6)).astype(np.float32)
    coords = np.argwhere(np.ones((2, 2, 2), bool))
    field = SparseVoxelField(coords, values[tuple(coords.T)], ORIGIN, 0.25)
    grid = rng.uniform(0.5, 1.5, (500, 3))  # between the eight centres: all neighbours present
    got = field.query((np.asarray(ORIGIN) + grid * 0.25).astype(np.float32))
    np.testing.assert_allclose(got, dense_reference(values, grid), atol=2e-6)
    # the plain formula at one point
    g = np.array([0.9, 1.2, 0.6])
    t = g - 0.5
    expected = sum(
        values[i, j, k] * (t[0] if i else 1 - t[0]) * (t[1] if j else 1 - t[1]) * (t[2] if k else 1 - t[2])
        for i in (0, 1)
        for j in (0, 1)
        for k in (0, 1)
    )
    np.testing.assert_allclose(field.query((np.asarray(ORIGIN) + g * 0.25)[None]), expected[None], atol=2e-6)


def test_a_full_grid_with_borders_matches_grid_sample_and_torch_matches_numpy():
    rng = np.random.default_rng(1)
    values = rng.random((5, 4, 6, 6)).astype(np.float32)
    coords = np.argwhere(np.ones(values.shape[:3], bool))
    order = rng.permutation(len(coords))
    field = SparseVoxelField(coords[order], values[tuple(coords[order].T)], ORIGIN, 0.125, chunk=97)
    grid = rng.uniform(0.0, 1.0, (3000, 3)) * np.array([5, 4, 6])  # the whole box, borders included
    points = (np.asarray(ORIGIN) + grid * 0.125).astype(np.float32)
    got = field.query(points)
    assert got.dtype == np.float32 and got.shape == (3000, 6)
    np.testing.assert_allclose(got, dense_reference(values, grid), atol=2e-6)
    got_t = field.query(torch.from_numpy(points))
    assert isinstance(got_t, torch.Tensor) and got_t.dtype == torch.float32
    np.testing.assert_allclose(got_t.numpy(), got, rtol=0, atol=1e-6)
    if torch.cuda.is_available():
        np.testing.assert_allclose(field.query(torch.from_numpy(points).cuda()).cpu().numpy(), got, atol=1e-6)


def test_missing_neighbours_renormalise_the_weights():
    # stored: (0,0,0) = a, (1,0,0) = b, (0,1,0) = c; query at grid (1.25, 0.75, 0.5):
    # x weights 0.25 (x=0) / 0.75 (x=1), y 0.75 (y=0) / 0.25 (y=1), z 1 (z=0) / 0 (z=1)
    # present: a 0.25·0.75 = 0.1875, b 0.75·0.75 = 0.5625, c 0.25·0.25 = 0.0625 → (3a + 9b + c) / 13
    a, b, c = ((np.arange(6, dtype=np.float32) + k * 10) / 100 for k in (1, 2, 3))
    field = SparseVoxelField(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]]), np.stack([a, b, c]), ORIGIN, 0.5)
    p = np.asarray(ORIGIN) + np.array([1.25, 0.75, 0.5]) * 0.5
    np.testing.assert_allclose(field.query(p[None].astype(np.float32))[0], (3 * a + 9 * b + c) / 13, atol=1e-7)
    # exactly on a stored centre (voxel (1, 0, 0) at grid (1.5, 0.5, 0.5)): that voxel alone
    centre = np.asarray(ORIGIN) + np.array([1.5, 0.5, 0.5]) * 0.5
    np.testing.assert_array_equal(field.query(centre[None].astype(np.float32))[0], b)


def test_points_away_from_every_voxel_take_the_nearest_or_zero():
    values = np.stack([np.full(6, 0.2, np.float32), np.full(6, 0.9, np.float32)])
    coords = np.array([[2, 2, 2], [9, 9, 9]])
    grid = np.array([[0.1, 0.1, 0.1], [13.0, 13.0, 13.0], [5.6, 5.6, 0.5]])  # no stored voxel among the 8 around
    far = (np.asarray(ORIGIN) + grid * 0.1).astype(np.float32)
    nearest = SparseVoxelField(coords, values, ORIGIN, 0.1)
    np.testing.assert_array_equal(nearest.query(far), values[[0, 1, 0]])
    np.testing.assert_array_equal(nearest.query(torch.from_numpy(far)).numpy(), values[[0, 1, 0]])
    zero = SparseVoxelField(coords, values, ORIGIN, 0.1, fallback="zero")  # the reference's behaviour
    np.testing.assert_array_equal(zero.query(far), np.zeros((3, 6), np.float32))


def test_the_field_protocol_in_the_canonical_frame():
    rng = np.random.default_rng(2)
    coords = np.unique(rng.integers(0, 16, (400, 3)), axis=0)
    attrs = rng.random((len(coords), 6)).astype(np.float32)
    scale = np.diag([2.0, 2.0, 2.0, 1.0])  # canonical metres → voxel frame: half size, and Y up → Z up
    transform = GLTF_TO_TRELLIS @ scale
    field = SparseVoxelField(coords, attrs, ORIGIN, 1 / 16, transform=transform)
    assert isinstance(field, Field)
    pts = rng.uniform(field.bbox_min, field.bbox_max, (300, 3)).astype(np.float32)
    inner = field.to_voxel_frame(pts)
    np.testing.assert_allclose(inner[:, 0], 2 * pts[:, 0], atol=1e-6)
    np.testing.assert_allclose(inner[:, 1], -2 * pts[:, 2], atol=1e-6)
    np.testing.assert_allclose(inner[:, 2], 2 * pts[:, 1], atol=1e-6)
    np.testing.assert_allclose(field.to_canonical(inner), pts, atol=1e-6)
    expected = np.clip(field.query(inner), 0, 1)
    np.testing.assert_array_equal(field.color(pts), expected[:, :3])
    metallic, roughness = field.material(pts)
    np.testing.assert_array_equal(metallic, expected[:, 3])
    np.testing.assert_array_equal(roughness, expected[:, 4])
    np.testing.assert_array_equal(field.alpha(pts), expected[:, 5])
    # the box holds every stored voxel's centre
    centres = field.to_canonical(np.asarray(ORIGIN) + (coords + 0.5) / 16)
    assert (centres >= field.bbox_min).all() and (centres <= field.bbox_max).all()
    with pytest.raises(StageError):
        field.density(pts)


def test_bad_inputs_are_refused():
    with pytest.raises(InputError, match="no voxels"):
        SparseVoxelField(np.zeros((0, 3), int), np.zeros((0, 6), np.float32), ORIGIN, 0.1)
    with pytest.raises(InputError, match="do not match"):
        SparseVoxelField(np.zeros((2, 3), int), np.zeros((3, 6), np.float32), ORIGIN, 0.1)
    with pytest.raises(InputError, match="fallback"):
        SparseVoxelField(np.zeros((1, 3), int), np.zeros((1, 6), np.float32), ORIGIN, 0.1, fallback="mean")
    with pytest.raises(InputError, match="singular"):
        SparseVoxelField(np.zeros((1, 3), int), np.zeros((1, 6), np.float32), ORIGIN, 0.1, transform=np.zeros((4, 4)))


def sphere_raw(attrs_dtype: type, offset: int = 0) -> Raw:
    rng = np.random.default_rng(4)
    g = np.stack(np.meshgrid(*[np.arange(12)] * 3, indexing="ij"), -1).reshape(-1, 3)
    shell = g[np.abs(np.linalg.norm(g + 0.5 - 6, axis=1) - 4) < 1.2]
    attrs = rng.random((len(shell), 6)).astype(attrs_dtype)
    field = SparseVoxelField(
        torch.from_numpy(shell + offset).int(),
        torch.from_numpy(attrs),
        np.asarray(ORIGIN) - offset / 12,
        1 / 12,
        transform=GLTF_TO_TRELLIS,
    )
    verts = rng.normal(size=(50, 3)).astype(np.float32)
    verts = 0.33 * verts / np.linalg.norm(verts, axis=1, keepdims=True)
    return Raw(surface=Mesh(vertices=verts, faces=np.array([[0, 1, 2], [2, 3, 4]])), attributes=field, name="s")


@pytest.mark.parametrize(("dtype", "offset"), [(np.float32, 0), (np.float16, 0), (np.float32, 70000)])
def test_mfraw_round_trip_gives_identical_queries(dtype, offset):
    raw = sphere_raw(dtype, offset)
    assert portable(raw) is raw
    data = dumps_raw(raw)
    back = loads_raw(data)
    field, again = raw.attributes, back.attributes
    assert isinstance(again, SparseVoxelField) and isinstance(field, SparseVoxelField)
    assert again.attrs.dtype == dtype
    assert PBR_CHANNELS == ("red", "green", "blue", "metallic", "roughness", "alpha")
    np.testing.assert_array_equal(again.coords, field.coords)
    np.testing.assert_array_equal(again.transform, field.transform)
    pts = np.random.default_rng(5).uniform(-0.6, 0.6, (2000, 3)).astype(np.float32)
    np.testing.assert_array_equal(again.color(pts), field.color(pts))
    np.testing.assert_array_equal(again.alpha(pts), field.alpha(pts))
    np.testing.assert_array_equal(again.query(pts), field.query(pts))
    np.testing.assert_array_equal(back.surface.vertices, raw.surface.vertices)
    assert again.voxel_size == field.voxel_size and again.fallback == field.fallback
    np.testing.assert_array_equal(again.bbox_min, field.bbox_min)


def test_a_broken_sparse_entry_is_one_input_error():
    import io
    import json
    import zipfile

    data = dumps_raw(sphere_raw(np.float32))
    src = zipfile.ZipFile(io.BytesIO(data))
    manifest = json.loads(src.read("manifest.json"))
    manifest["attributes"]["voxel_size"] = -1.0
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for info in src.infolist():
            body = json.dumps(manifest) if info.filename == "manifest.json" else src.read(info.filename)
            zf.writestr(info.filename, body)
    with pytest.raises(InputError, match="inconsistent"):
        loads_raw(out.getvalue(), "x.mfraw")


def test_finish_bakes_a_decoded_trellis_shape_from_its_sparse_voxels():
    """The path the backend takes: dual grid → mesh in TRELLIS.2's frame, voxels → field, both into a Raw
    in the canonical frame, then :func:`meshforge.finish` bakes from the voxels (colour = height)."""
    import meshforge
    from meshforge.config import PipelineConfig

    from .test_dual_grid import sphere_grid

    (coords, dual, flags), _, _ = sphere_grid(24, 0.3)
    vertices, faces = flexible_dual_grid_to_mesh(
        torch.from_numpy(coords),
        torch.from_numpy(dual),
        torch.from_numpy(flags),
        torch.ones(len(coords), 1),
        grid_size=24,
    )
    centres_z = (coords[:, 2] + 0.5) / 24 - 0.5  # TRELLIS.2 is Z-up: colour the voxels by height
    attrs = np.zeros((len(coords), 6), np.float32)
    attrs[:, 0] = centres_z + 0.5
    attrs[:, 3], attrs[:, 4], attrs[:, 5] = 0.25, 0.75, 1.0
    field = SparseVoxelField(coords, attrs, ORIGIN, 1 / 24, transform=GLTF_TO_TRELLIS)
    surface = Mesh(vertices=field.to_canonical(vertices), faces=faces.numpy().astype(np.int32))
    raw = Raw(surface=surface, attributes=field, name="sphere")
    cfg = PipelineConfig().with_options(faces=600, texture_size=128, textures=False)
    result = meshforge.finish(loads_raw(dumps_raw(raw)), cfg)
    mesh = result.asset.mesh
    assert mesh.n_faces <= 600 and mesh.colors is not None
    # canonical +Y is TRELLIS.2's +Z: the baked red follows the height
    red, height = mesh.colors[:, 0], mesh.vertices[:, 1]
    assert np.corrcoef(red, height)[0, 1] > 0.99
    np.testing.assert_allclose(red, np.clip(height + 0.5, 0, 1), atol=0.03)


def _canonical_field(channels: int = 6) -> tuple[SparseVoxelField, np.ndarray]:
    rng = np.random.default_rng(7)
    coords = np.unique(rng.integers(0, 16, (600, 3)), axis=0)
    attrs = rng.uniform(-0.1, 1.1, (len(coords), channels)).astype(np.float32)  # a little out of [0, 1]: clipped
    field = SparseVoxelField(coords, attrs, ORIGIN, 1 / 16, transform=GLTF_TO_TRELLIS @ np.diag([2.0, 2, 2, 1]))
    pts = rng.uniform(field.bbox_min, field.bbox_max, (2000, 3)).astype(np.float32)
    return field, pts


def test_pbr_gives_every_channel_of_one_lookup():
    from meshforge.fields.base import PBRAttributes

    field, pts = _canonical_field()
    assert isinstance(field, PBRAttributes)
    calls = []
    query = field.query
    field.query = lambda p: calls.append(len(p)) or query(p)  # type: ignore[method-assign]
    got = field.pbr(pts)
    assert calls == [len(pts)]  # one lookup for the four channels
    field.query = query  # type: ignore[method-assign]
    np.testing.assert_array_equal(got["base_color"], field.color(pts))
    metallic, roughness = field.material(pts)
    np.testing.assert_array_equal(got["metallic"], metallic)
    np.testing.assert_array_equal(got["roughness"], roughness)
    np.testing.assert_array_equal(got["alpha"], field.alpha(pts))
    assert got["base_color"].min() == 0.0 and got["base_color"].max() == 1.0  # clipped like color()
    five, pts5 = _canonical_field(5)
    assert sorted(five.pbr(pts5)) == ["base_color", "metallic", "roughness"]  # no alpha channel, no alpha


def _assert_pbr_tensor_matches(device: str) -> None:
    field, pts = _canonical_field()
    ref = field.pbr(pts)
    got = field.pbr_tensor(torch.from_numpy(pts).to(device))
    for key, value in ref.items():
        assert got[key].device.type == torch.device(device).type and got[key].dtype == torch.float32
        np.testing.assert_allclose(got[key].cpu().numpy(), value, rtol=0, atol=1e-6, err_msg=key)
    with pytest.raises(InputError, match=r"\[P, 3\]"):
        field.pbr_tensor(torch.zeros(4, 2, device=device))


def test_pbr_tensor_equals_pbr_on_cpu_tensors():
    _assert_pbr_tensor_matches("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pbr_tensor_equals_pbr_on_cuda():
    _assert_pbr_tensor_matches("cuda")
