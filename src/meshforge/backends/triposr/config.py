"""TripoSR configuration: the official ``config.yaml`` format and the DINO ViT config, parsed without torch.

The official checkpoint folder (Hugging Face ``stabilityai/TripoSR``) holds a ``config.yaml`` in the reference
implementation's OmegaConf format (Tochilkin et al. 2024, "TripoSR: Fast 3D Object Reconstruction from a Single
Image", reference code VAST-AI-Research/TripoSR): one section per component, each paired with a ``*_cls`` class
path, and a single interpolation ``${tokenizer.num_channels}``. We read it with PyYAML and resolve whole-value
``${a.b}`` interpolations ourselves (no omegaconf), check that every ``*_cls`` names the component we implement,
and reject unknown keys, so a config we would silently misread fails loudly instead.

The image encoder's own settings come from a Hugging Face ``ViTConfig`` JSON (DINO ViT-B/16, Caron et al. 2021,
"Emerging Properties in Self-Supervised Vision Transformers"; ViT, Dosovitskiy et al. 2021). Only the fields in
:class:`ViTConfig` matter; :data:`DINO_VITB16` holds the values of ``facebook/dino-vitb16`` so the official
weights load offline.

Errors are :class:`~meshforge.errors.BackendError` with a one-line message naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import BackendError

__all__ = [
    "CLASS_PATHS",
    "DINO_VITB16",
    "BackboneConfig",
    "DecoderConfig",
    "ImageTokenizerConfig",
    "PostProcessorConfig",
    "RendererConfig",
    "TriplaneTokenizerConfig",
    "TripoSRConfig",
    "ViTConfig",
    "load_config_file",
    "parse_config",
    "resolve_interpolations",
]

#: section name → the reference class path that ``<section>_cls`` must name.
CLASS_PATHS: dict[str, str] = {
    "image_tokenizer": "tsr.models.tokenizers.image.DINOSingleImageTokenizer",
    "tokenizer": "tsr.models.tokenizers.triplane.Triplane1DTokenizer",
    "backbone": "tsr.models.transformer.transformer_1d.Transformer1D",
    "post_processor": "tsr.models.network_utils.TriplaneUpsampleNetwork",
    "decoder": "tsr.models.network_utils.NeRFMLP",
    "renderer": "tsr.models.nerf_renderer.TriplaneNeRFRenderer",
}

_INTERPOLATION = re.compile(r"^\$\{([A-Za-z0-9_.]+)\}$")


@dataclass(frozen=True)
class ViTConfig:
    """The DINO ViT image encoder (Hugging Face ``ViTConfig`` fields that change keys, shapes or numbers).

    Attributes:
        hidden_size: token width D.
        num_hidden_layers: encoder layers.
        num_attention_heads: heads per layer (D must be divisible by it).
        intermediate_size: MLP hidden width.
        hidden_act: ``"gelu"`` (exact, erf) or ``"gelu_new"``/``"gelu_pytorch_tanh"`` (tanh approximation).
        layer_norm_eps: LayerNorm epsilon (1e-12 for DINO; not the 1e-6 of timm).
        image_size: the training image side; the position table has ``(image_size / patch_size)² + 1`` rows.
        patch_size: square patch side in pixels.
        num_channels: input channels (3).
        qkv_bias: whether query/key/value projections have a bias.
    """

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    qkv_bias: bool = True

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config.json") -> ViTConfig:
        """Build from a ``ViTConfig`` JSON dict; other keys (``architectures``, dropouts, ...) are ignored."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in raw:
                values[f.name] = _typed(raw[f.name], f.type, f"{source}: {f.name}")
        cfg = cls(**values)
        if cfg.hidden_size % cfg.num_attention_heads:
            raise BackendError(f"{source}: hidden_size {cfg.hidden_size} is not divisible by num_attention_heads")
        if cfg.image_size % cfg.patch_size:
            raise BackendError(f"{source}: image_size {cfg.image_size} is not a multiple of patch_size")
        if cfg.hidden_act not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
            raise BackendError(f"{source}: unsupported hidden_act {cfg.hidden_act!r}")
        return cfg

    @classmethod
    def from_file(cls, path: Path) -> ViTConfig:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot read the image encoder config {path}: {exc}") from None
        if not isinstance(raw, dict):
            raise BackendError(f"{path}: expected a JSON object")
        return cls.from_dict(raw, str(path))


#: ``facebook/dino-vitb16`` (the encoder of the official TripoSR config), as in its ``config.json``.
DINO_VITB16 = ViTConfig()


@dataclass(frozen=True)
class ImageTokenizerConfig:
    """``image_tokenizer``: where the ViT config comes from (a folder beside config.yaml, or a Hub id)."""

    pretrained_model_name_or_path: str = "facebook/dino-vitb16"
    enable_gradient_checkpointing: bool = False  # training only; ignored


@dataclass(frozen=True)
class TriplaneTokenizerConfig:
    """``tokenizer``: learned triplane tokens ``[3, num_channels, plane_size, plane_size]``."""

    plane_size: int
    num_channels: int


@dataclass(frozen=True)
class BackboneConfig:
    """``backbone``: the 1D transformer (pre-norm blocks: self-attention, cross-attention, GEGLU MLP).

    Only the reference's default block variant is implemented: the fields that select other variants must keep
    their defaults (checked by :func:`parse_config`).
    """

    in_channels: int
    num_attention_heads: int = 16
    attention_head_dim: int = 88
    num_layers: int = 1
    cross_attention_dim: int | None = None
    norm_num_groups: int = 32
    out_channels: int | None = None
    dropout: float = 0.0
    attention_bias: bool = False
    activation_fn: str = "geglu"
    only_cross_attention: bool = False
    double_self_attention: bool = False
    upcast_attention: bool = False
    norm_type: str = "layer_norm"
    norm_elementwise_affine: bool = True
    gradient_checkpointing: bool = False

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim


@dataclass(frozen=True)
class PostProcessorConfig:
    """``post_processor``: a 2×2 stride-2 transposed convolution per plane (``in_channels → out_channels``)."""

    in_channels: int
    out_channels: int


@dataclass(frozen=True)
class DecoderConfig:
    """``decoder``: the NeRF MLP, ``n_hidden_layers`` Linear+activation layers then a Linear to 4 outputs."""

    in_channels: int
    n_neurons: int
    n_hidden_layers: int
    activation: str = "relu"
    bias: bool = True
    weight_init: str | None = "kaiming_uniform"  # initialisation only; ignored when loading
    bias_init: str | None = None  # initialisation only; ignored when loading


@dataclass(frozen=True)
class RendererConfig:
    """``renderer``: the triplane NeRF query and volume-rendering settings."""

    radius: float
    feature_reduction: str = "concat"
    density_activation: str = "trunc_exp"
    density_bias: float = -1.0
    color_activation: str = "sigmoid"
    num_samples_per_ray: int = 128
    randomized: bool = False  # training only; ignored


@dataclass(frozen=True)
class TripoSRConfig:
    """The whole model: one section per component, as in the official ``config.yaml``."""

    cond_image_size: int
    image_tokenizer: ImageTokenizerConfig = field(default_factory=ImageTokenizerConfig)
    tokenizer: TriplaneTokenizerConfig = field(default_factory=lambda: TriplaneTokenizerConfig(32, 1024))
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(in_channels=1024))
    post_processor: PostProcessorConfig = field(default_factory=lambda: PostProcessorConfig(1024, 40))
    decoder: DecoderConfig = field(default_factory=lambda: DecoderConfig(120, 64, 9, "silu"))
    renderer: RendererConfig = field(default_factory=lambda: RendererConfig(0.87))


_SECTIONS: dict[str, type] = {
    "image_tokenizer": ImageTokenizerConfig,
    "tokenizer": TriplaneTokenizerConfig,
    "backbone": BackboneConfig,
    "post_processor": PostProcessorConfig,
    "decoder": DecoderConfig,
    "renderer": RendererConfig,
}


def resolve_interpolations(raw: dict[str, Any], source: str = "config.yaml") -> dict[str, Any]:
    """Replace every whole-value ``${a.b.c}`` string by the value at that dotted path of ``raw`` (recursively).

    Raises:
        BackendError: a reference to a missing key, a cycle, or an interpolation inside a longer string.
    """

    def lookup(path: str, stack: tuple[str, ...]) -> Any:
        if path in stack:
            raise BackendError(f"{source}: interpolation cycle through ${{{path}}}")
        node: Any = raw
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                raise BackendError(f"{source}: interpolation ${{{path}}} names a missing key")
            node = node[part]
        return resolve(node, (*stack, path))

    def resolve(value: Any, stack: tuple[str, ...]) -> Any:
        if isinstance(value, dict):
            return {k: resolve(v, stack) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v, stack) for v in value]
        if isinstance(value, str) and "${" in value:
            m = _INTERPOLATION.match(value.strip())
            if m is None:
                raise BackendError(f"{source}: unsupported interpolation {value!r} (only whole-value ${{a.b}})")
            return lookup(m.group(1), stack)
        return value

    out: dict[str, Any] = resolve(raw, ())
    return out


def _typed(value: Any, annotation: Any, where: str) -> Any:
    """Check/convert a YAML/JSON scalar against a dataclass field annotation (given as a string)."""
    ann = str(annotation).replace(" ", "")
    optional = ann.endswith("|None")
    base = ann.removesuffix("|None")
    if value is None:
        if optional:
            return None
        raise BackendError(f"{where} must not be null")
    if base == "bool":
        if isinstance(value, bool):
            return value
    elif base == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif base == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif base == "str":
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - all annotations are listed above
        raise TypeError(annotation)
    raise BackendError(f"{where} must be {base}, got {value!r}")


def _section(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise BackendError(f"{where} must be a mapping")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise BackendError(f"{where}: unknown key {unknown[0]!r}")
    values = {k: _typed(v, known[k].type, f"{where}.{k}") for k, v in raw.items()}
    missing = [
        n
        for n, f in known.items()
        if n not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise BackendError(f"{where}: missing key {missing[0]!r}")
    return cls(**values)


def parse_config(raw: dict[str, Any], source: str = "config.yaml") -> TripoSRConfig:
    """Validate a loaded (interpolation-resolved) ``config.yaml`` dict into a :class:`TripoSRConfig`.

    Raises:
        BackendError: unknown or missing keys, wrong types, a ``*_cls`` naming another component, or a setting
            of a variant this implementation does not provide.
    """
    if not isinstance(raw, dict):
        raise BackendError(f"{source}: expected a mapping at the top level")
    expected = {"cond_image_size", *CLASS_PATHS, *(f"{k}_cls" for k in CLASS_PATHS)}
    unknown = sorted(set(raw) - expected)
    if unknown:
        raise BackendError(f"{source}: unknown key {unknown[0]!r}")
    if "cond_image_size" not in raw:
        raise BackendError(f"{source}: missing key 'cond_image_size'")
    sections: dict[str, Any] = {}
    for name, path in CLASS_PATHS.items():
        cls_key = f"{name}_cls"
        if cls_key not in raw or name not in raw:
            raise BackendError(f"{source}: missing key {cls_key if cls_key not in raw else name!r}")
        if raw[cls_key] != path:
            raise BackendError(f"{source}: {cls_key} is {raw[cls_key]!r}; only {path!r} is implemented")
        sections[name] = _section(_SECTIONS[name], raw[name], f"{source}: {name}")
    cfg = TripoSRConfig(cond_image_size=_typed(raw["cond_image_size"], "int", f"{source}: cond_image_size"), **sections)
    _check_supported(cfg, source)
    return cfg


def _check_supported(cfg: TripoSRConfig, source: str) -> None:
    b = cfg.backbone
    unsupported = {
        "activation_fn": (b.activation_fn, "geglu"),
        "only_cross_attention": (b.only_cross_attention, False),
        "double_self_attention": (b.double_self_attention, False),
        "norm_type": (b.norm_type, "layer_norm"),
    }
    for key, (value, wanted) in unsupported.items():
        if value != wanted:
            raise BackendError(f"{source}: backbone.{key} = {value!r} is not implemented (only {wanted!r})")
    if b.out_channels not in (None, b.in_channels):
        raise BackendError(f"{source}: backbone.out_channels must equal in_channels")
    if b.in_channels % b.norm_num_groups:
        raise BackendError(f"{source}: backbone.in_channels is not divisible by norm_num_groups")
    if cfg.post_processor.in_channels != cfg.tokenizer.num_channels or b.in_channels != cfg.tokenizer.num_channels:
        raise BackendError(f"{source}: tokenizer, backbone and post_processor channel counts disagree")
    r = cfg.renderer
    if r.feature_reduction not in ("concat", "mean"):
        raise BackendError(f"{source}: renderer.feature_reduction must be 'concat' or 'mean'")
    planes = 3 if r.feature_reduction == "concat" else 1
    if cfg.decoder.in_channels != planes * cfg.post_processor.out_channels:
        raise BackendError(
            f"{source}: decoder.in_channels {cfg.decoder.in_channels} != {planes} × post_processor.out_channels"
        )
    if cfg.decoder.activation not in ("relu", "silu"):
        raise BackendError(f"{source}: decoder.activation must be 'relu' or 'silu'")
    if r.density_activation.lower() not in ("exp", "trunc_exp", "softplus", "sigmoid", "relu", "none"):
        raise BackendError(f"{source}: unsupported renderer.density_activation {r.density_activation!r}")
    if r.color_activation.lower() not in ("sigmoid", "none"):
        raise BackendError(f"{source}: unsupported renderer.color_activation {r.color_activation!r}")
    if r.radius <= 0 or r.num_samples_per_ray < 1:
        raise BackendError(f"{source}: renderer.radius and num_samples_per_ray must be positive")


def load_config_file(path: Path) -> TripoSRConfig:
    """Read, resolve and validate a ``config.yaml``.

    Raises:
        BackendError: unreadable file, invalid YAML, or see :func:`parse_config`.
        MissingDependency: PyYAML is not installed.
    """
    from ...errors import require

    yaml: Any = require("yaml", "reading TripoSR's config.yaml", "triposr")
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BackendError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())
        raise BackendError(f"{path}: invalid YAML: {first}") from None
    if not isinstance(raw, dict):
        raise BackendError(f"{path}: expected a mapping at the top level")
    return parse_config(resolve_interpolations(raw, str(path)), str(path))
