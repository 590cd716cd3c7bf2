"""TripoSR's fused Triton kernels (backends/triposr/kernels.py) against the plain torch path they replace.

The GPU tests (``@pytest.mark.gpu``, skipped without CUDA and Triton) build a network whose decoder has the
official size (120 → 9 × 64 SiLU → 4) and feed it random scene codes of the official shape ``[3, 40, 64, 64]``;
only the decoder and the renderer settings matter to the kernels, so the rest of the network is the tiny parity
fixture's. Decoder weights are drawn from ``N(0, 2.5 / fan_in)`` (biases ``N(0, 0.1)``) so that activations keep
their scale through the nine SiLU layers: raw density std 0.56, max |raw| about 9, colour std 0.1.

Tolerances, on the raw decoder outputs (for the density, ``|Δ log density| = |Δ raw|``, a relative error):

* ``fp32`` (float32 operands, ``input_precision="ieee"``, exact SiLU): ``1e-4 + 1e-4·|raw|``: only the order of
  the sums differs (``benchmarks/results/triposr_gpu.md`` measures 2.4e-6 relative on the real weights);
* ``fp16`` (16-bit matrix operands: an 11-bit significand, 4.9e-4 relative rounding per operand, float32
  accumulation; with or without the ``tanh.approx`` SiLU): ``5e-2 + 2e-2·|raw|``. Rounding the operands to
  float16 in a float32 torch emulation of these weights gives at most 1.3e-2 (5.5e-3·(1 + |raw|)); the real
  weights measure 4.2e-3 to 5.0e-3 relative (``benchmarks/results/triposr_gpu.md``).

Colours are compared after the sigmoid (slope at most 1/4): ``2e-5`` for fp32, ``1.5e-2`` for fp16 (the
emulation gives 2.5e-3; the backend measures at most 1.2e-3 on 4.7 M vertices of a real asset). A wrong plane,
axis or weight layout gives errors of the order of the signal (raw std 0.56, colour std 0.1), far above these.
"""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest

from .triposr_helpers import FIXTURES

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("yaml")

from meshforge.backends.triposr import kernels  # noqa: E402
from meshforge.backends.triposr.config import DecoderConfig, PostProcessorConfig, load_config_file  # noqa: E402
from meshforge.backends.triposr.loading import build_model, load_model  # noqa: E402

HAS_TRITON_GPU = torch.cuda.is_available() and importlib.util.find_spec("triton") is not None
needs_triton_gpu = pytest.mark.skipif(not HAS_TRITON_GPU, reason="needs a CUDA device and Triton")

#: (precision, fast SiLU, atol, rtol) of the raw decoder outputs; see the module docstring
RAW_TOLERANCES = [("fp32", False, 1e-4, 1e-4), ("fp16", False, 5e-2, 2e-2), ("fp16", True, 5e-2, 2e-2)]
#: largest colour difference after the sigmoid, per precision
COLOR_ATOL = {"fp32": 2e-5, "fp16": 1.5e-2}


@pytest.fixture(scope="module")
def gpu_model():
    """A network with the official decoder (random weights, ``N(0, 2.5 / fan_in)``) on CUDA, in eval mode."""
    small, _ = load_model(FIXTURES, device="cpu")
    cfg = replace(
        load_config_file(FIXTURES / "config.yaml"),
        post_processor=PostProcessorConfig(small.cfg.post_processor.in_channels, 40),
        decoder=DecoderConfig(in_channels=120, n_neurons=64, n_hidden_layers=9, activation="silu"),
    )
    torch.manual_seed(0)
    model = build_model(cfg, small.vit_cfg, "cuda").eval()
    with torch.no_grad():
        for layer in model.decoder.layers:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.normal_(0.0, math.sqrt(2.5 / layer.weight.shape[1]))
                layer.bias.normal_(0.0, 0.1)
    assert kernels.triton_grid_supported(model)
    return model


@pytest.fixture(scope="module")
def scene_code():
    gen = torch.Generator(device="cuda").manual_seed(1)
    return torch.randn((3, 40, 64, 64), generator=gen, device="cuda")


@pytest.fixture
def float32_matmul():
    """The torch reference in true float32 (no TF32 matrix products), whatever an earlier test left set."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def assert_raw_close(actual, expected, atol: float, rtol: float, what: str) -> None:
    excess = (actual - expected).abs() - (atol + rtol * expected.abs())
    assert actual.shape == expected.shape, f"{what}: {tuple(actual.shape)} vs {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    worst = (actual - expected).abs().max().item()
    assert excess.max().item() <= 0.0, f"{what}: max |diff| {worst:.3e} over atol {atol:g} + rtol {rtol:g}·|ref|"


@pytest.mark.gpu
@needs_triton_gpu
@pytest.mark.parametrize(("precision", "fast_act", "atol", "rtol"), RAW_TOLERANCES)
def test_grid_kernel_matches_the_torch_density_at_the_same_points(
    gpu_model, scene_code, float32_matmul, precision, fast_act, atol, rtol
):
    model = gpu_model
    r = 96
    radius = model.renderer.radius
    axis = torch.linspace(-radius, radius, r, device="cuda")
    with torch.inference_mode():
        # the kernel alone: raw density from the split first layer, against the float32 torch layers
        pxy, pxz, pyz = model.first_layer_planes(scene_code, axis)
        linears = [m for m in model.decoder.layers if isinstance(m, torch.nn.Linear)]
        hidden, last = linears[1:-1], linears[-1]
        raw = kernels.triton_density_grid(pxy, pxz, pyz, hidden, last, "silu", precision, fast_act)
        raw_torch = model._torch_density_grid(pxy, pxz, pyz, hidden, last, "silu", "fp32", 1 << 22)
        # the whole fast path, against model.query's density at the same R³ points
        fast = model.density_grid_fast(scene_code, axis, precision=precision, kernel="triton", fast_act=fast_act)
        points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
        queried = model.query(scene_code, points)
    assert raw.dtype == torch.float32 and raw.shape == (r, r, r)
    assert raw_torch.abs().max().item() > 1.0, "the random decoder gives no signal to compare"
    assert_raw_close(raw, raw_torch, atol, rtol, f"triton_density_grid {precision}")
    ref_raw = queried["density_raw"].reshape(r, r, r)
    # density = exp(raw + bias): compare its logarithm, i.e. the raw value the kernel computed
    fast_raw = torch.log(fast.double()).float() - model.renderer.density_bias
    assert_raw_close(fast_raw, ref_raw, atol, rtol, f"density_grid_fast {precision} vs query")


@pytest.mark.gpu
@needs_triton_gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_color_kernel_matches_the_torch_color_decode(gpu_model, scene_code, float32_matmul, precision):
    model = gpu_model
    radius = model.renderer.radius
    gen = torch.Generator(device="cuda").manual_seed(2)
    # points inside the cube and a margin outside it (zero padding: features blend towards zero)
    points = (torch.rand((200_000, 3), generator=gen, device="cuda") * 2.0 - 1.0) * (1.1 * radius)
    with torch.inference_mode():
        rgb = kernels.triton_color(model, scene_code, points, precision, fast_act=precision != "fp32")
        ref = model.query(scene_code, points)["rgb"]
    assert rgb.shape == ref.shape == (200_000, 3) and rgb.dtype == torch.float32
    assert ref.std().item() > 0.05, "the random decoder gives no colour signal to compare"
    worst = (rgb - ref).abs().max().item()
    assert worst <= COLOR_ATOL[precision], f"triton_color {precision}: max |diff| {worst:.3e}"


def test_model_runs_its_grid_path_without_triton():
    """A CPU-only install has no Triton: the network imports, ``kernels`` imports with no kernels, and the
    fast grid path falls back to the torch layers (the same values as the float32 reference grid)."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["triton"] = None  # as if not installed: "import triton" raises ImportError
        import torch
        from meshforge.backends.triposr.loading import load_model
        model, _ = load_model({str(FIXTURES)!r}, device="cpu")
        assert "meshforge.backends.triposr.kernels" not in sys.modules
        code = torch.randn(3, 8, 16, 16, generator=torch.Generator().manual_seed(0))
        axis = torch.linspace(-0.87, 0.87, 20)
        with torch.inference_mode():
            fast = model.density_grid_fast(code, axis, precision="fp32", kernel="auto")
            ref = model.query_grid(code, axis)["density"]
        from meshforge.backends.triposr import kernels
        assert not kernels.triton_grid_supported(model)
        assert kernels._grid_mlp_kernel is None and kernels._point_color_kernel is None
        torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_a_kernel_that_cannot_compile_leaves_the_torch_layers_to_answer(monkeypatch):
    """Triton needs a C compiler for its launcher and a supported GPU: where the fused grid kernel raises, the
    ``"auto"`` grid logs why and the torch layers answer (the float32 reference grid), and from then on the kernels
    are not tried; an explicit ``kernel="triton"`` still raises, as does running out of device memory."""
    from meshforge.backends.triposr import model as model_mod

    model, _ = load_model(FIXTURES, device="cpu")
    code = torch.randn(3, 8, 16, 16, generator=torch.Generator().manual_seed(0))
    axis = torch.linspace(-0.87, 0.87, 12)
    monkeypatch.setattr(kernels, "FAILURE", None)
    monkeypatch.setattr(model_mod, "_auto_triton", lambda m, c, p: kernels.FAILURE is None)  # as on a CUDA GPU
    calls = []

    def broken(*args):
        calls.append(len(args))
        raise RuntimeError("Failed to find C compiler.\nPlease specify via CC environment variable.")

    monkeypatch.setattr(kernels, "triton_density_grid", broken)
    with torch.inference_mode():
        ref = model.query_grid(code, axis)["density"]
        fast = model.density_grid_fast(code, axis, precision="fp32", kernel="auto")
        again = model.density_grid_fast(code, axis, precision="fp32", kernel="auto")
        torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)
        assert torch.equal(again, fast) and calls == [8]  # tried once
        assert kernels.FAILURE == "Failed to find C compiler. Please specify via CC environment variable."
        assert not kernels.triton_grid_supported(model)
        with pytest.raises(RuntimeError, match="C compiler"):
            model.density_grid_fast(code, axis, precision="fp32", kernel="triton")

        def out_of_memory(*args):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

        monkeypatch.setattr(kernels, "FAILURE", None)
        monkeypatch.setattr(kernels, "triton_density_grid", out_of_memory)
        with pytest.raises(torch.cuda.OutOfMemoryError):
            model.density_grid_fast(code, axis, precision="fp32", kernel="auto")
