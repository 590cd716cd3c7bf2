"""The random checkpoint's sparse-structure decoder re-calibrated on a real picture's own structure latents."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from meshforge.backends.trellis2.conditioning import crop_object  # noqa: E402
from meshforge.backends.trellis2.pipeline import Trellis2Pipeline  # noqa: E402
from meshforge.backends.trellis2.random_weights import calibrate_structure, write_random_checkpoint  # noqa: E402

ROBOT = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "images" / "triposr__robot.png"


def occupancy(folder: Path, picture: object, seed: int) -> float:
    """Fraction of the decoder's 64³ (tiny: 32³) grid with logit > 0 for ``picture`` at ``seed``."""
    pipe = Trellis2Pipeline.from_folder(folder, device="cpu", low_vram=False)
    logits: list[torch.Tensor] = []
    decoder = pipe.models["sparse_structure_decoder"]
    hook = decoder.register_forward_hook(lambda _m, _a, out: logits.append(out.detach().float()))
    torch.manual_seed(seed)
    pipe.sample_sparse_structure(pipe.condition([picture], 512), 32)
    hook.remove()
    return float((logits[0] > 0).float().mean())


def test_calibration_hits_the_target_occupancy_on_the_picture_and_is_saved(tmp_path: Path) -> None:
    if not ROBOT.exists():
        pytest.fail(f"shared picture missing: {ROBOT}")
    folder = write_random_checkpoint(tmp_path / "w", "tiny", 3)
    picture = crop_object(np.asarray(Image.open(ROBOT).convert("RGBA")))
    bias = calibrate_structure(folder, [picture], seeds=(0, 42), occupancy=0.05)
    assert np.isfinite(bias)
    # the rewritten file (a fresh load) gives the target over the two calibration draws together
    per_seed = [occupancy(folder, picture, seed) for seed in (0, 42)]
    assert abs(np.mean(per_seed) - 0.05) < 0.005, per_seed
    assert all(0.0 < f < 0.2 for f in per_seed), per_seed


def test_pooled_calibration_targets_the_structure_token_count(tmp_path: Path) -> None:
    """With ``pooled_resolution`` the target is the share of the coarse grid the pipeline's max-pool keeps
    (its token count), not of the decoder's own grid."""
    folder = write_random_checkpoint(tmp_path / "w", "tiny", 5)
    picture = crop_object(np.asarray(Image.open(ROBOT).convert("RGBA")))
    calibrate_structure(folder, [picture], seeds=(7,), occupancy=0.25, pooled_resolution=16)
    pipe = Trellis2Pipeline.from_folder(folder, device="cpu", low_vram=False)
    torch.manual_seed(7)
    coords = pipe.sample_sparse_structure(pipe.condition([picture], 512), 16)
    assert abs(coords.shape[0] / 16**3 - 0.25) < 0.01, coords.shape
