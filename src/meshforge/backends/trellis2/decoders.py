"""The TRELLIS.2 decoders by their reference class names (for building from checkpoint configs).

The official checkpoints ship a ``<name>.json`` next to each ``<name>.safetensors`` with
``{"name": <class name>, "args": {...}}``; :func:`decoder_from_config` builds our module from it,
ready for ``load_state_dict(..., strict=True)``.

- ``SparseStructureDecoder`` (:mod:`.ss_decoder`): dense 16³ latent → 64³ occupancy logits.
- ``SparseUnetVaeDecoder`` (:mod:`.slat_decoders`): texture SLat → PBR voxels (guided subdivision).
- ``FlexiDualGridVaeDecoder`` (:mod:`.slat_decoders`): shape SLat → meshes (predicted subdivision).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .slat_decoders import DecodedMesh, DualGridFields, FlexiDualGridVaeDecoder, SparseUnetVaeDecoder
from .ss_decoder import SparseStructureDecoder

DECODER_CLASSES: dict[str, type[nn.Module]] = {
    "SparseStructureDecoder": SparseStructureDecoder,
    "SparseUnetVaeDecoder": SparseUnetVaeDecoder,
    "FlexiDualGridVaeDecoder": FlexiDualGridVaeDecoder,
}

__all__ = [
    "DECODER_CLASSES",
    "DecodedMesh",
    "DualGridFields",
    "FlexiDualGridVaeDecoder",
    "SparseStructureDecoder",
    "SparseUnetVaeDecoder",
    "decoder_from_config",
]


def decoder_from_config(config: Mapping[str, Any], device: torch.device | str | None = None) -> nn.Module:
    """Build a decoder from a checkpoint config ``{"name": ..., "args": {...}}``.

    Args:
        config: the parsed ``<checkpoint>.json``.
        device: where to allocate the parameters. ``"meta"`` builds without memory; then
            ``model.to_empty(device=...)`` and ``load_state_dict(sd, strict=True)`` (a copying load,
            so each parameter keeps the model's dtype: float16 conv / linear weights in the
            blocks of ``use_fp16`` models, float32 elsewhere, whatever the file stores).

    Raises:
        ValueError: a ``name`` that is not one of :data:`DECODER_CLASSES`.
    """
    name = config.get("name")
    if name not in DECODER_CLASSES:
        raise ValueError(f"unknown decoder class {name!r}; expected one of {sorted(DECODER_CLASSES)}")
    args = dict(config.get("args", {}))
    if device is None:
        return DECODER_CLASSES[name](**args)
    with torch.device(device):
        return DECODER_CLASSES[name](**args)
