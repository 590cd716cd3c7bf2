"""Orchestration of the TRELLIS.2 pipeline with stand-in networks: noise order, cascade, token cap, OOM step-down."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from meshforge.backends.trellis2.pipeline import Trellis2Pipeline
from meshforge.backends.trellis2.random_weights import official_pipeline
from meshforge.backends.trellis2.sparse import SparseTensor


class _Cond:
    def __init__(self) -> None:
        self.model = torch.nn.Linear(1, 1)
        self.resolutions: list[int] = []

    def to(self, device: Any) -> _Cond:
        return self

    def __call__(self, images: list[Any], resolution: int) -> torch.Tensor:
        self.resolutions.append(resolution)
        return torch.full((len(images), 5, 4), resolution / 1024)


class _DenseFlow(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.resolution, self.in_channels = 4, 8
        self.first: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if self.first is None:
            self.first = x.clone()
        return 0.1 * x - cond.mean()  # pushes the latent up: a non-empty occupancy


class _SSDecoder(torch.nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.interpolate(z[:, :1], scale_factor=16)  # 64³ logits, as the real decoder gives


class _SparseFlow(torch.nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.first: SparseTensor | None = None
        self.concat: SparseTensor | None = None

    def forward(self, x: SparseTensor, t: torch.Tensor, cond: torch.Tensor, concat_cond: Any = None) -> SparseTensor:
        if self.first is None:
            self.first, self.concat = x, concat_cond
        return x * 0.5


class _ShapeDecoder(torch.nn.Module):
    def __init__(self, oom_at: int | None = None) -> None:
        super().__init__()
        self.resolution = 0
        self.oom_at = oom_at

    def set_resolution(self, resolution: int) -> None:
        self.resolution = resolution

    def upsample(self, slat: SparseTensor, upsample_times: int) -> torch.Tensor:
        c = slat.coords.clone()
        c[:, 1:] = c[:, 1:] * 16 + 8  # one fine voxel per latent voxel, at 512 units
        return c

    def forward(self, slat: SparseTensor, return_subs: bool = False) -> tuple[list[Any], list[str]]:
        if self.oom_at is not None and self.resolution == self.oom_at:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
        return [(torch.zeros(3, 3), torch.tensor([[0, 1, 2]]))], ["subs"]


class _TexDecoder(torch.nn.Module):
    def forward(self, slat: SparseTensor, guide_subs: Any = None) -> SparseTensor:
        assert guide_subs == ["subs"]
        return slat.replace(slat.feats[:, :6])


def _pipeline(oom_at: int | None = None) -> Trellis2Pipeline:
    models = {
        "sparse_structure_flow_model": _DenseFlow(),
        "sparse_structure_decoder": _SSDecoder(),
        "shape_slat_flow_model_512": _SparseFlow(32),
        "shape_slat_flow_model_1024": _SparseFlow(32),
        "shape_slat_decoder": _ShapeDecoder(oom_at),
        "tex_slat_flow_model_512": _SparseFlow(64),
        "tex_slat_flow_model_1024": _SparseFlow(64),
        "tex_slat_decoder": _TexDecoder(),
    }
    args = official_pipeline()["args"]
    for stage in ("sparse_structure", "shape_slat", "tex_slat"):
        args[f"{stage}_sampler"]["params"]["steps"] = 2
    return Trellis2Pipeline(models, _Cond(), args, device="cpu")  # type: ignore[arg-type]


def _picture() -> np.ndarray:
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[8:32, 10:30] = (200, 100, 50, 255)
    return rgba


@pytest.mark.parametrize("kind", ["512", "1024_cascade"])
def test_noise_is_drawn_in_the_reference_order(kind: str) -> None:
    pipe = _pipeline()
    out = pipe.run(_picture(), seed=7, pipeline_type=kind)
    m = pipe.models
    torch.manual_seed(7)
    ss_noise = torch.randn(1, 8, 4, 4, 4)
    assert m["sparse_structure_flow_model"].first is not None
    assert torch.equal(m["sparse_structure_flow_model"].first, ss_noise)
    n = out.coords.shape[0]
    assert n > 0 and out.coords.dtype == torch.int32
    first = "shape_slat_flow_model_512"
    assert torch.equal(m[first].first.feats, torch.randn(n, 32))
    if kind == "1024_cascade":
        hr = m["shape_slat_flow_model_1024"].first
        assert torch.equal(hr.feats, torch.randn(hr.feats.shape[0], 32))
        tex = m["tex_slat_flow_model_1024"]
        assert pipe.conditioner.resolutions == [512, 1024]  # type: ignore[attr-defined]
    else:
        tex = m["tex_slat_flow_model_512"]
        assert pipe.conditioner.resolutions == [512]  # type: ignore[attr-defined]
    assert torch.equal(tex.first.feats, torch.randn(tex.first.feats.shape[0], 32))
    # the texture flow is conditioned on the *normalised* shape latent
    norm = pipe.normalization["shape"]
    mean, std = torch.tensor(norm["mean"])[None], torch.tensor(norm["std"])[None]
    torch.testing.assert_close(tex.concat.feats, (out.shape_slat.feats - mean) / std)
    assert out.resolution == (512 if kind == "512" else 1024)
    assert out.voxels[0].feats.shape[1] == 6 and set(out.timings) >= {"condition", "decode_tex"}


def test_sparse_structure_is_pooled_to_the_ss_resolution() -> None:
    pipe = _pipeline()
    torch.manual_seed(0)
    cond = {"cond": torch.zeros(1, 5, 4), "neg_cond": torch.zeros(1, 5, 4)}
    coords = pipe.sample_sparse_structure(cond, 8)  # the 64³ decoder output pooled by 8
    assert int(coords[:, 1:].max()) < 8 and coords.shape[1] == 4


def test_token_cap_steps_the_resolution_down_by_128() -> None:
    pipe = _pipeline()
    coords = torch.tensor([[0, x, y, z] for x in range(4) for y in range(4) for z in range(4)], dtype=torch.int32)
    slat = SparseTensor(torch.zeros(len(coords), 32), coords)
    fine, res = pipe.cascade_coords(slat, 512, 1536, max_num_tokens=10**6)
    assert res == 1536
    # 512-unit coordinate c*16+8 → cell ((c*16+8.5) / 512 * 96)
    expected = ((coords[:, 1:] * 16 + 8 + 0.5) / 512 * 96).int()
    assert torch.equal(fine[:, 1:], torch.unique(torch.cat([coords[:, :1], expected], 1), dim=0)[:, 1:])
    _, res = pipe.cascade_coords(slat, 512, 1536, max_num_tokens=1)
    assert res == 1024  # never below 1024, even over the cap
    # 64 distinct cells < 65 tokens: 1536 is kept
    _, res = pipe.cascade_coords(slat, 512, 1536, max_num_tokens=65)
    assert res == 1536


def test_out_of_memory_steps_down_with_a_warning() -> None:
    pipe = _pipeline(oom_at=1536)
    out = pipe.run(_picture(), seed=1, pipeline_type="1536_cascade")
    assert out.pipeline_type == "1024_cascade" and out.resolution == 1024
    assert any("out of GPU memory at 1536_cascade" in w for w in out.warnings)


def test_frames_and_alpha_mode() -> None:
    from meshforge.backends.trellis2.backend import ROTATION, to_canonical, to_trellis
    from meshforge.fields.sparse_voxels import alpha_mode_of

    p = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    np.testing.assert_allclose(to_canonical(p), p @ ROTATION.T, atol=1e-6)
    np.testing.assert_allclose(to_trellis(to_canonical(p)), p, atol=1e-6)
    assert np.isclose(np.linalg.det(ROTATION), 1.0)  # a rotation: face winding is kept
    np.testing.assert_allclose(to_canonical(np.array([[0.0, 0.0, 1.0]])), [[0.0, 1.0, 0.0]])  # Z up → +Y up
    assert alpha_mode_of(np.ones(1000)) == "OPAQUE"
    assert alpha_mode_of(np.r_[np.ones(995), np.zeros(5)]) == "OPAQUE"  # < 1 % see-through
    assert alpha_mode_of(np.r_[np.ones(800), np.zeros(200)]) == "MASK"
    assert alpha_mode_of(np.r_[np.ones(800), np.full(200, 0.5)]) == "BLEND"
    assert alpha_mode_of(np.r_[np.full(1000, 1.4)]) == "OPAQUE"  # clamped


def test_field_from_output_frames_and_attributes() -> None:
    from meshforge.backends.trellis2.backend import field_from_output
    from meshforge.backends.trellis2.pipeline import Trellis2Output

    coords = torch.tensor([[0, 1, 2, 3], [0, 3, 3, 3]], dtype=torch.int32)
    attrs = torch.tensor([[0.2, 0.4, 0.6, 0.1, 0.9, 1.2], [1.5, -0.1, 0.5, 0.0, 0.5, 0.9]])
    out = Trellis2Output(
        meshes=[(torch.tensor([[0.1, 0.2, 0.3], [0.0, 0.0, 0.4], [0.2, -0.3, 0.0]]), torch.tensor([[0, 1, 2]]))],
        voxels=[SparseTensor(attrs, coords)],
        resolution=4,
        pipeline_type="512",
        coords=coords,
        shape_slat=SparseTensor(torch.zeros(2, 1), coords),
        tex_slat=SparseTensor(torch.zeros(2, 1), coords),
    )
    field = field_from_output(out)
    mesh = field.dense_surface()
    np.testing.assert_allclose(mesh.vertices[0], [0.1, 0.3, -0.2], atol=1e-6)  # (x, z, −y)
    assert mesh.faces.tolist() == [[0, 1, 2]]
    # the centre of voxel (1, 2, 3) in TRELLIS.2's frame, asked for in the canonical frame
    centre = np.array([[-0.5 + 1.5 / 4, -0.5 + 2.5 / 4, -0.5 + 3.5 / 4]], np.float32)
    canonical = np.stack([centre[:, 0], centre[:, 2], -centre[:, 1]], 1)
    np.testing.assert_allclose(field.color(canonical), [[0.2, 0.4, 0.6]], atol=1e-6)
    metallic, roughness = field.material(canonical)
    assert metallic.tolist() == pytest.approx([0.1]) and roughness.tolist() == pytest.approx([0.9])
    assert field.alpha(canonical).tolist() == [1.0]  # clamped
    assert field.density(canonical).tolist() == [1.0]
    assert field.density(np.zeros((1, 3), np.float32)).tolist() == [0.0]
    assert field.alpha_mode == "BLEND"  # one voxel of two at 0.9: partly see-through


def test_tiny_random_checkpoint_end_to_end(tmp_path: Any) -> None:
    """A tiny random checkpoint → the backend → a non-empty mesh with varied PBR."""
    pytest.importorskip("transformers")
    from meshforge.backends.trellis2.backend import Trellis2Backend
    from meshforge.backends.trellis2.random_weights import write_random_checkpoint
    from meshforge.types import Image

    folder = write_random_checkpoint(tmp_path / "w", "tiny", seed=0)
    backend = Trellis2Backend(weights=str(folder), device="cpu", pipeline_type="512", seed=1, steps=4)
    rgba = np.zeros((128, 128, 4), np.uint8)
    yy, xx = np.mgrid[:128, :128]
    rgba[(yy - 64) ** 2 + (xx - 64) ** 2 < 40**2] = (200, 120, 60, 255)
    field = backend(Image(rgba=rgba, name="disk", has_alpha=True))
    mesh = field.dense_surface()
    assert mesh.n_faces > 0 and np.abs(mesh.vertices).max() <= 0.5 + 1e-4
    colors = field.color(mesh.vertices[:: max(1, mesh.n_vertices // 500)])
    assert colors.std() > 0.01  # not a constant decoder
    assert field.alpha_mode == "OPAQUE"
    info = backend.info()
    assert info["resolution"] == 512 and info["pipeline_type"] == "512" and set(info["timings"]) >= {"condition"}


def test_backend_options_are_checked_before_loading(tmp_path: Any) -> None:
    from meshforge.backends.trellis2.backend import Trellis2Backend
    from meshforge.errors import BackendError, InputError

    nowhere = str(tmp_path / "nowhere")
    with pytest.raises(InputError, match="pipeline type"):
        Trellis2Backend(weights=nowhere, pipeline_type="2048")
    with pytest.raises(InputError, match="steps"):
        Trellis2Backend(weights=nowhere, steps=0)
    with pytest.raises(InputError, match="dtype 'fp8'"):
        Trellis2Backend(weights=nowhere, dtypes={"tex": "fp8"})
    with pytest.raises(InputError, match="stage 'vae'"):
        Trellis2Backend(weights=nowhere, dtypes={"vae": "fp32"})
    with pytest.raises(BackendError, match="models pull trellis2"):
        Trellis2Backend(weights=nowhere, dtypes={"tex": "fp32"}, device="cpu")
