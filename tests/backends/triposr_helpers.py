"""Helpers for the TripoSR tests: fixture paths, mesh comparison as sets, and a full-size random checkpoint.

Torch is imported inside the functions that need it, so importing this module never requires torch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..conftest import shared_dir

FIXTURES = shared_dir() / "fixtures" / "triposr"
CHAIR = shared_dir() / "data" / "images" / "triposr__chair.png"

#: the official config.yaml layout, with the official values and the same interpolation; the image encoder
#: config is read from the folder ``dino_config`` beside it.
OFFICIAL_CONFIG_YAML = """\
cond_image_size: 512

image_tokenizer_cls: tsr.models.tokenizers.image.DINOSingleImageTokenizer
image_tokenizer:
  pretrained_model_name_or_path: dino_config

tokenizer_cls: tsr.models.tokenizers.triplane.Triplane1DTokenizer
tokenizer:
  plane_size: 32
  num_channels: 1024

backbone_cls: tsr.models.transformer.transformer_1d.Transformer1D
backbone:
  in_channels: ${tokenizer.num_channels}
  num_attention_heads: 16
  attention_head_dim: 64
  num_layers: 16
  cross_attention_dim: 768

post_processor_cls: tsr.models.network_utils.TriplaneUpsampleNetwork
post_processor:
  in_channels: 1024
  out_channels: 40

decoder_cls: tsr.models.network_utils.NeRFMLP
decoder:
  in_channels: 120 # 3 * 40
  n_neurons: 64
  n_hidden_layers: 9
  activation: silu

renderer_cls: tsr.models.nerf_renderer.TriplaneNeRFRenderer
renderer:
  radius: 0.87 # slightly larger than 0.5 * sqrt(3)
  feature_reduction: concat
  density_activation: exp
  density_bias: -1.0
  num_samples_per_ray: 128
"""


def manifest() -> dict[str, Any]:
    """The official state-dict manifest (keys, shapes, dtypes; the official and DINO configs)."""
    data: dict[str, Any] = json.loads((FIXTURES / "official_state_dict_manifest.json").read_text())
    return data


# ------------------------------------------------------------------------------------------ mesh comparison


def weld(vertices: np.ndarray, faces: np.ndarray, tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Union vertices closer than ``tol`` (transitively), drop faces that become degenerate."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    v = np.asarray(vertices, dtype=np.float64)
    pairs = cKDTree(v).query_pairs(tol, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(v), len(v)))
    _, label = connected_components(graph, directed=False)
    first = np.full(label.max() + 1, -1)
    for i in range(len(v) - 1, -1, -1):
        first[label[i]] = i
    new_v = v[first].astype(np.float32)
    new_f = label[np.asarray(faces)]
    keep = (new_f[:, 0] != new_f[:, 1]) & (new_f[:, 1] != new_f[:, 2]) & (new_f[:, 0] != new_f[:, 2])
    return new_v, new_f[keep]


def area_and_signed_volume(vertices: np.ndarray, faces: np.ndarray) -> tuple[float, float]:
    """Total area and ``Σ v0·(v1×v2)/6`` (float64)."""
    t = np.asarray(vertices, dtype=np.float64)[faces]
    cross = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
    area = 0.5 * np.linalg.norm(cross, axis=1).sum()
    volume = np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() / 6.0
    return float(area), float(volume)


def nearest(reference: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each point, the distance to and index of its nearest reference vertex."""
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(np.asarray(reference, dtype=np.float64)).query(np.asarray(points, dtype=np.float64))
    return dist, idx


# ------------------------------------------------------------------------------- full-size random checkpoint


def write_random_checkpoint(
    folder: Path,
    image: Path = CHAIR,
    *,
    seed: int = 0,
    inside_fraction: float = 0.12,
    probe_resolution: int = 32,
) -> float:
    """Write a randomly initialised FULL-size TripoSR weights folder: ``config.yaml`` (official values and
    layout), ``dino_config/config.json`` (ViT-B/16) and ``model.safetensors`` (1.68 GB of float32).

    With random weights TripoSR's density ``exp(raw − 1)`` essentially never reaches the marching-cubes level 25,
    so — as the parity fixture does — a constant is added to the density entry of the decoder's last bias,
    ``decoder.layers.18.bias[0]``, in the written checkpoint. The constant is chosen from the model itself: the
    picture ``image`` is prepared exactly as the meshforge pipeline prepares it (default preprocessing, the
    backend's grey composite), the network is run once, and the raw density on a ``probe_resolution³`` grid of
    the scene cube is shifted so that about ``inside_fraction`` of it lies above the level. The isosurface of
    that picture is then non-empty and not the whole cube.

    Peak memory is about twice the checkpoint (the model plus the serialised tensors), ~4 GB.

    Returns:
        The constant added to ``decoder.layers.18.bias[0]``.
    """
    import torch
    from safetensors.torch import save_file

    from meshforge.backends.triposr.config import ViTConfig, parse_config, resolve_interpolations
    from meshforge.backends.triposr.loading import build_model
    from meshforge.backends.triposr.model import resize_condition
    from meshforge.backends.triposr.preprocess import composite_grey
    from meshforge.config import PipelineConfig
    from meshforge.io.images import load_image
    from meshforge.preprocess import prepare

    yaml = __import__("yaml")
    folder = Path(folder)
    (folder / "dino_config").mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(OFFICIAL_CONFIG_YAML)
    dino = manifest()["dino_config_json"]
    (folder / "dino_config" / "config.json").write_text(json.dumps(dino, indent=2))

    cfg = parse_config(resolve_interpolations(yaml.safe_load(OFFICIAL_CONFIG_YAML)))
    vit = ViTConfig.from_dict(dino)
    torch.manual_seed(seed)
    model = build_model(cfg, vit, "cpu").eval()

    pipeline = PipelineConfig()
    prepared = prepare(load_image(Path(image), pipeline.input), pipeline.preprocess, cfg.cond_image_size)
    with torch.inference_mode():
        cond = resize_condition(torch.from_numpy(composite_grey(prepared.rgba)), cfg.cond_image_size)
        code = model(cond)[0]
        axis = torch.linspace(-cfg.renderer.radius, cfg.renderer.radius, probe_resolution)
        raw = model.query_grid(code, axis, keys=("density_raw",))["density_raw"]
    level = math.log(25.0) - cfg.renderer.density_bias  # exp(raw + bias) = 25
    shift = level - float(torch.quantile(raw.flatten().double(), 1.0 - inside_fraction))

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    last = f"decoder.layers.{2 * cfg.decoder.n_hidden_layers}.bias"
    state[last] = state[last].clone()
    state[last][0] += shift
    del model
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return shift
