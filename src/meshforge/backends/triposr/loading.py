"""Finding and loading TripoSR weights: a local folder or a Hugging Face repository.

``weights`` is either

* a **folder** holding ``config.yaml`` and ``model.safetensors`` or ``model.ckpt`` (the official layout;
  safetensors is preferred when both exist), or
* a **Hugging Face repo id** such as ``stabilityai/TripoSR`` (the default), resolved through the local
  ``huggingface_hub`` cache. A missing file is downloaded unless downloads are disabled (``download=False`` or
  the environment variable ``HF_HUB_OFFLINE=1``, read at call time); ``HF_HUB_CACHE`` (read at call time)
  overrides the cache folder.

A string that names an existing folder is a folder; otherwise an ``owner/name`` string is a repo id; anything
else is reported as a missing folder.

The image encoder's config is the folder ``<folder of config.yaml>/<pretrained_model_name_or_path>/config.json``
when it exists; otherwise ``facebook/dino-vitb16`` maps to the built-in :data:`~.config.DINO_VITB16` and any
other id is looked up in the Hugging Face cache only (never downloaded).

Pickled checkpoints are read only with ``torch.load(..., weights_only=True)`` (tensors and plain containers,
no code). Every tensor must match the model built from the config: same key set, same shapes (``strict``).

Errors are :class:`~meshforge.errors.BackendError` with one-line messages.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import BackendError, MissingDependency
from ..weights import state_dict_differences
from .config import DINO_VITB16, TripoSRConfig, ViTConfig, load_config_file

if TYPE_CHECKING:
    import torch

    from .model import TripoSRModel

__all__ = [
    "CHECKPOINT_NAMES",
    "CONFIG_NAME",
    "DEFAULT_REPO",
    "WeightFiles",
    "find_weights",
    "hub_offline",
    "load_model",
    "load_vit_config",
    "locate_weights",
    "read_state_dict",
]

#: the default Hugging Face repository of the official weights.
DEFAULT_REPO = "stabilityai/TripoSR"
CONFIG_NAME = "config.yaml"
#: checkpoint file names, in order of preference.
CHECKPOINT_NAMES = ("model.safetensors", "model.ckpt")
DINO_DEFAULT_ID = "facebook/dino-vitb16"

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class WeightFiles:
    """Where a set of weights lives.

    Attributes:
        config: path of ``config.yaml``.
        checkpoint: path of ``model.safetensors`` or ``model.ckpt``.
        source: ``"folder"`` or ``"hub"``.
        location: the folder, or the repo id.
    """

    config: Path
    checkpoint: Path
    source: str
    location: str


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set now (read at call time)."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def _hub_cache_dir() -> str | None:
    return os.environ.get("HF_HUB_CACHE") or None


def _is_repo_id(text: str) -> bool:
    return bool(_REPO_ID.match(text)) and ".." not in text


def _folder_files(folder: Path) -> WeightFiles:
    config = folder / CONFIG_NAME
    if not config.is_file():
        raise BackendError(f"TripoSR weights folder {folder} has no {CONFIG_NAME}")
    names = CHECKPOINT_NAMES if importlib.util.find_spec("safetensors") is not None else CHECKPOINT_NAMES[::-1]
    for name in names:  # without the safetensors package, a model.ckpt beside model.safetensors is used
        if (folder / name).is_file():
            return WeightFiles(config, folder / name, "folder", str(folder))
    raise BackendError(f"TripoSR weights folder {folder} has neither {' nor '.join(CHECKPOINT_NAMES)}")


def _cached(repo_id: str, filename: str, revision: str | None = None) -> Path | None:
    """The cached file of a hub repo, or None (no network, no exceptions)."""
    if importlib.util.find_spec("huggingface_hub") is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=_hub_cache_dir(), revision=revision)
    except Exception:  # invalid id etc.: simply "not cached"
        return None
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def find_weights(weights: str | os.PathLike[str] | None = None) -> WeightFiles | None:
    """Locate weights without raising, downloading or importing torch (for ``auto`` and ``models list``).

    Returns:
        The files, or None when the folder is incomplete or the repo's files are not all in the local cache.
    """
    try:
        return locate_weights(weights, download=False)
    except (BackendError, MissingDependency):
        return None


def locate_weights(
    weights: str | os.PathLike[str] | None = None, *, download: bool = True, revision: str | None = None
) -> WeightFiles:
    """Resolve ``weights`` (folder or repo id, None → :data:`DEFAULT_REPO`) to its config and checkpoint.

    Args:
        weights: a folder, a repo id, or None.
        download: allow downloading missing hub files (also disabled by ``HF_HUB_OFFLINE=1``).
        revision: hub revision (branch, tag or commit); None → ``main``.

    Raises:
        BackendError: missing folder/files; hub files not cached while downloads are disabled; download failure.
        MissingDependency: a repo id without ``huggingface_hub`` installed.
    """
    text = os.fspath(weights) if weights is not None else DEFAULT_REPO
    path = Path(text).expanduser()
    if path.is_dir():
        return _folder_files(path)
    if path.exists():
        raise BackendError(f"TripoSR weights must be a folder or a Hugging Face repo id, got the file {text}")
    if not _is_repo_id(text):
        raise BackendError(f"TripoSR weights folder not found: {text}")

    config = _cached(text, CONFIG_NAME, revision)
    checkpoint = next((p for p in (_cached(text, n, revision) for n in CHECKPOINT_NAMES) if p is not None), None)
    if config is not None and checkpoint is not None:
        return WeightFiles(config, checkpoint, "hub", text)
    if importlib.util.find_spec("huggingface_hub") is None:
        raise MissingDependency(
            f"TripoSR weights {text!r} from the Hugging Face hub need the package 'huggingface_hub': "
            "pip install 'meshforge[triposr]'"
        )
    if not download or hub_offline():
        why = "HF_HUB_OFFLINE is set" if hub_offline() else "downloads are disabled"
        raise BackendError(
            f"TripoSR weights {text!r} are not in the local Hugging Face cache and {why}: "
            f"run 'meshforge models pull triposr' with network access, or pass --weights FOLDER"
        )
    config = config or _download(text, CONFIG_NAME, revision)
    if checkpoint is None:
        checkpoint = _download(text, "model.ckpt", revision)  # the official repository ships model.ckpt
    return WeightFiles(config, checkpoint, "hub", text)


def _download(repo_id: str, filename: str, revision: str | None) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=_hub_cache_dir()))
    except Exception as exc:  # network, auth, missing repo/file: one line
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise BackendError(f"cannot download {filename} of {repo_id!r} from the Hugging Face hub: {reason}") from exc


def load_vit_config(config_path: Path, name: str) -> ViTConfig:
    """The image encoder config named by ``image_tokenizer.pretrained_model_name_or_path``.

    Looks in ``<folder of config.yaml>/<name>/config.json``, then the built-in ``facebook/dino-vitb16``, then the
    Hugging Face cache (never downloads).

    Raises:
        BackendError: none of those provide it, or it is invalid.
    """
    local = Path(config_path).parent / name / "config.json"
    if local.is_file():
        return ViTConfig.from_file(local)
    if name == DINO_DEFAULT_ID:
        return DINO_VITB16
    cached = _cached(name, "config.json") if _is_repo_id(name) else None
    if cached is not None:
        return ViTConfig.from_file(cached)
    raise BackendError(
        f"{config_path}: image encoder config {name!r} not found (looked for {local}, "
        f"the built-in {DINO_DEFAULT_ID!r} and the Hugging Face cache)"
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint as ``{key: float32 CPU tensor}``.

    ``.safetensors`` via :func:`safetensors.torch.load_file`; anything else via
    ``torch.load(path, map_location="cpu", weights_only=True)``, accepting a plain ``str → Tensor`` mapping or
    one nested under ``"state_dict"``.

    Raises:
        BackendError: unreadable, not a tensor mapping, or a non-floating tensor.
        MissingDependency: ``safetensors`` is needed and not installed.
    """
    import torch

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            if importlib.util.find_spec("safetensors") is None:
                raise MissingDependency(f"reading {path} needs the package 'safetensors': pip install safetensors")
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except MissingDependency:
        raise
    except Exception as exc:  # corrupt file, unsafe pickle, I/O error
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise BackendError(f"cannot read the TripoSR checkpoint {path}: {reason}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise BackendError(f"the TripoSR checkpoint {path} is not a mapping of names to tensors")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not value.is_floating_point():
            raise BackendError(f"the TripoSR checkpoint {path}: tensor {key!r} is {value.dtype}, not floating point")
        out[key] = value.to(torch.float32)
    return out


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict comparison of a checkpoint against the model's own ``state_dict`` (keys and shapes).

    Raises:
        BackendError: one line counting missing keys, unexpected keys and shape mismatches, with an example each.
    """
    own = model.state_dict()
    missing, unexpected, wrong = state_dict_differences(own, state)
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})")
    if wrong:
        k = wrong[0]
        parts.append(
            f"{len(wrong)} with the wrong shape (e.g. {k!r}: {tuple(state[k].shape)}, expected {tuple(own[k].shape)})"
        )
    raise BackendError(f"the TripoSR checkpoint {source} does not match its config: {'; '.join(parts)} tensors")


def build_model(cfg: TripoSRConfig, vit: ViTConfig, device: str | torch.device | None = None) -> TripoSRModel:
    """Construct the network (randomly initialised) on ``device`` (``"meta"`` allocates nothing)."""
    import torch

    from .model import TripoSRModel

    with torch.device(device or "cpu"):
        return TripoSRModel(cfg, vit)


def load_model(
    weights: str | os.PathLike[str] | None = None,
    *,
    device: str = "cpu",
    download: bool = True,
    revision: str | None = None,
) -> tuple[TripoSRModel, WeightFiles]:
    """Locate, read and load TripoSR weights into a fresh :class:`~.model.TripoSRModel` in eval mode.

    The model is built on the ``meta`` device and the checkpoint's tensors are assigned to it (no second copy
    of the 1.7 GB of weights), then moved to ``device``.

    Args:
        weights: folder or repo id (None → :data:`DEFAULT_REPO`); see the module docstring.
        device: a torch device string.
        download: allow downloading hub files (also disabled by ``HF_HUB_OFFLINE=1``).
        revision: hub revision.

    Returns:
        ``(model, files)``.

    Raises:
        BackendError: see :func:`locate_weights`, :func:`~.config.load_config_file`, :func:`read_state_dict`
            and :func:`check_state_dict`.
        MissingDependency: torch, PyYAML, safetensors or huggingface_hub missing where needed.
    """
    if importlib.util.find_spec("torch") is None:
        raise MissingDependency("the TripoSR backend needs PyTorch: pip install 'meshforge[triposr]'")
    files = locate_weights(weights, download=download, revision=revision)
    cfg = load_config_file(files.config)
    vit = load_vit_config(files.config, cfg.image_tokenizer.pretrained_model_name_or_path)
    try:
        model = build_model(cfg, vit, "meta")
    except ValueError as exc:
        raise BackendError(f"{files.config}: {exc}") from None
    state = read_state_dict(files.checkpoint)
    check_state_dict(model, state, str(files.checkpoint))
    model.load_state_dict(state, strict=True, assign=True)
    del state
    model.eval().requires_grad_(False)
    return model.to(device), files
