"""Finding and loading TRELLIS.2 weights in the official layout, from a folder or the Hugging Face cache.

The official layout (``microsoft/TRELLIS.2-4B``)::

    pipeline.json                       {"name": "Trellis2ImageTo3DPipeline", "args": {"models": {name: ref, ...},
                                         "<stage>_sampler": {...}, "shape_slat_normalization": {...}, ...}}
    ckpts/<ckpt>.json                   {"name": <class>, "args": {...constructor arguments...}}
    ckpts/<ckpt>.safetensors            the state dict

A model reference ``ref`` is ``ckpts/<ckpt>`` (inside the same folder or repository), or
``<owner>/<repo>/<path>`` for a model of another repository: the sparse-structure decoder is TRELLIS v1's
``microsoft/TRELLIS-image-large/ckpts/ss_dec_conv3d_16l8_fp16``. As the reference does, a reference is first
looked for inside the weights folder (``<folder>/<ref>.json``; ``meshforge models random`` and
``meshforge models pull --local-dir`` put the v1 decoder there), then in the Hugging Face cache.

``weights`` is a folder, a repo id, or None (:data:`DEFAULT_REPO`). Loading **never downloads** (the
checkpoints are ~16 GB): ``meshforge models pull trellis2`` does (:func:`pull`). Only ``.safetensors`` are
read; every state dict must match its model exactly (key set and shapes). Every failure is a one-line
:class:`~meshforge.errors.BackendError` naming the missing or bad file and how to get a good one.

Model classes are imported lazily by name from this package (:data:`MODEL_MODULES`); a test may add a
stand-in with :func:`register_model_class`.

Source: TRELLIS.2 (2025) ``Pipeline.from_pretrained`` / ``models.from_pretrained`` (behaviour, not code).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import BackendError, MissingDependency
from ..weights import state_dict_differences

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_REPO",
    "MODEL_MODULES",
    "MODEL_NAMES",
    "PIPELINE_JSON",
    "SS_DECODER_REF",
    "ModelFiles",
    "PipelineFiles",
    "build_model",
    "check_safetensors",
    "find_weights",
    "load_model",
    "locate_weights",
    "model_class",
    "read_state_dict",
    "register_model_class",
]

#: the Hugging Face repository of the official weights
DEFAULT_REPO = "microsoft/TRELLIS.2-4B"
PIPELINE_JSON = "pipeline.json"
#: the sparse-structure decoder the official pipeline.json references (TRELLIS v1)
SS_DECODER_REF = "microsoft/TRELLIS-image-large/ckpts/ss_dec_conv3d_16l8_fp16"
#: the models the image-to-3D pipeline loads (others in pipeline.json, e.g. encoders, are ignored)
MODEL_NAMES = (
    "sparse_structure_flow_model",
    "sparse_structure_decoder",
    "shape_slat_flow_model_512",
    "shape_slat_flow_model_1024",
    "shape_slat_decoder",
    "tex_slat_flow_model_512",
    "tex_slat_flow_model_1024",
    "tex_slat_decoder",
)
#: model class name → module of this package defining it (imported when first used)
MODEL_MODULES: dict[str, str] = {
    "SparseStructureFlowModel": "flows",
    "SLatFlowModel": "flows",
    "ElasticSLatFlowModel": "flows",
    "SparseStructureDecoder": "decoders",
    "SparseUnetVaeDecoder": "decoders",
    "FlexiDualGridVaeDecoder": "decoders",
}
_EXTRA_CLASSES: dict[str, type] = {}
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_HOW = "run 'meshforge models pull trellis2' with network access, or pass --weights DIR"


@dataclass(frozen=True)
class ModelFiles:
    """One model's files: ``config`` (``<ckpt>.json``) and ``weights`` (``<ckpt>.safetensors``)."""

    name: str
    ref: str
    config: Path
    weights: Path


@dataclass(frozen=True)
class PipelineFiles:
    """A located set of TRELLIS.2 weights.

    Attributes:
        root: the folder holding ``pipeline.json`` (a cache snapshot folder for a repo id).
        source: ``"folder"`` or ``"hub"``.
        location: the folder or repo id as given.
        args: ``pipeline.json``'s ``"args"``.
        models: name → :class:`ModelFiles`, for the names of :data:`MODEL_NAMES` present in ``args["models"]``.
    """

    root: Path
    source: str
    location: str
    args: dict[str, Any]
    models: dict[str, ModelFiles] = field(default_factory=dict)

    @property
    def dinov3_id(self) -> str:
        """The image encoder ``pipeline.json`` names (``image_cond_model.args.model_name``)."""
        from .conditioning import DINOV3_ID

        spec = self.args.get("image_cond_model") or {}
        return str((spec.get("args") or {}).get("model_name") or DINOV3_ID)


def register_model_class(name: str, cls: type) -> None:
    """Make ``name`` (as ``<ckpt>.json`` spells it) build ``cls`` — for tests and experiments."""
    _EXTRA_CLASSES[name] = cls


def model_class(name: str) -> type:
    """The class a ``<ckpt>.json`` names, imported lazily from :data:`MODEL_MODULES`.

    Raises:
        BackendError: unknown name, or its module cannot be imported.
    """
    if name in _EXTRA_CLASSES:
        return _EXTRA_CLASSES[name]
    module_name = MODEL_MODULES.get(name)
    if module_name is None:
        raise BackendError(f"unknown TRELLIS.2 model class {name!r} (known: {', '.join(MODEL_MODULES)})")
    try:
        module = importlib.import_module(f"{__package__}.{module_name}")
    except ImportError as exc:
        raise BackendError(f"TRELLIS.2 model class {name!r} cannot be imported: {exc}") from None
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        raise BackendError(f"module {module.__name__} has no model class {name!r}")
    return cls


# -- locating --------------------------------------------------------------------------------------------


def _cached(repo_id: str, filename: str, revision: str | None = None) -> Path | None:
    """A file of a hub repository in the local cache, or None (no network, never raises)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(
            repo_id, filename, cache_dir=os.environ.get("HF_HUB_CACHE") or None, revision=revision
        )
    except Exception:
        return None
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def _split_ref(ref: str) -> tuple[str, str] | None:
    """``owner/repo/path`` → ``(owner/repo, path)``; None for a reference without a repository."""
    parts = ref.strip("/").split("/")
    if len(parts) < 3 or parts[0] in ("ckpts", ".", ".."):
        return None
    repo = f"{parts[0]}/{parts[1]}"
    return (repo, "/".join(parts[2:])) if _REPO_ID.match(repo) else None


def _model_files(name: str, ref: str, root: Path, hub_repo: str | None, revision: str | None) -> ModelFiles:
    local_json, local_st = root / f"{ref}.json", root / f"{ref}.safetensors"
    if local_json.is_file() and local_st.is_file():
        return ModelFiles(name, ref, local_json, local_st)
    candidates: list[tuple[str, str]] = []
    if hub_repo is not None:
        candidates.append((hub_repo, ref))
    other = _split_ref(ref)
    if other is not None:
        candidates.append(other)
    for repo, path in candidates:
        cfg = _cached(repo, f"{path}.json", revision if repo == hub_repo else None)
        st = _cached(repo, f"{path}.safetensors", revision if repo == hub_repo else None)
        if cfg is not None and st is not None:
            return ModelFiles(name, ref, cfg, st)
    if hub_repo is None and other is None:  # a folder's own checkpoint: name the missing file
        missing = local_json if not local_json.is_file() else local_st
        if not local_st.is_file() and local_json.is_file() and (root / f"{ref}.pt").is_file():
            raise BackendError(f"{root}: {ref} is a .pt checkpoint; only .safetensors are read")
        raise BackendError(f"TRELLIS.2 weights folder {root} lacks {missing.relative_to(root)} (model {name!r})")
    where = f"{root}/{ref}.{{json,safetensors}}" if hub_repo is None else f"{hub_repo}/{ref}"
    source = f" or {other[0]} in the Hugging Face cache" if other is not None else " in the Hugging Face cache"
    raise BackendError(f"TRELLIS.2 model {name!r} ({ref}) not found at {where}{source}: {_HOW}")


def read_pipeline_json(path: Path) -> dict[str, Any]:
    """``pipeline.json``'s ``"args"``.

    Raises:
        BackendError: unreadable, not JSON, or without ``args.models``.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot read {path}: {' '.join(str(exc).split())}") from None
    args = data.get("args") if isinstance(data, dict) else None
    if not isinstance(args, dict) or not isinstance(args.get("models"), dict):
        raise BackendError(f"{path} is not a TRELLIS.2 pipeline.json (no args.models)")
    return args


def locate_weights(weights: str | os.PathLike[str] | None = None, *, revision: str | None = None) -> PipelineFiles:
    """Resolve ``weights`` (folder, repo id, None → :data:`DEFAULT_REPO`) to its files, without downloading.

    Raises:
        BackendError: missing folder; folder without ``pipeline.json`` or a checkpoint file (named);
            repo not in the local cache (with how to get it).
    """
    text = os.fspath(weights) if weights is not None else DEFAULT_REPO
    path = Path(text).expanduser()
    if path.is_dir():
        config = path / PIPELINE_JSON
        if not config.is_file():
            raise BackendError(f"TRELLIS.2 weights folder {path} has no {PIPELINE_JSON}")
        root, source, hub_repo = path, "folder", None
    elif path.exists():
        raise BackendError(f"TRELLIS.2 weights must be a folder or a Hugging Face repo id, got the file {text}")
    elif _REPO_ID.match(text) and ".." not in text:
        cached = _cached(text, PIPELINE_JSON, revision)
        if cached is None:
            raise BackendError(f"TRELLIS.2 weights {text!r} are not in the local Hugging Face cache: {_HOW}")
        root, source, hub_repo, config = cached.parent, "hub", text, cached
    else:
        raise BackendError(
            f"TRELLIS.2 weights folder not found: {text} ({_HOW}; 'meshforge models random trellis2 -o DIR' "
            "writes random ones)"
        )
    args = read_pipeline_json(config)
    models = {
        name: _model_files(name, str(args["models"][name]), root, hub_repo, revision)
        for name in MODEL_NAMES
        if name in args["models"]
    }
    return PipelineFiles(root=root, source=source, location=text, args=args, models=models)


def find_weights(weights: str | os.PathLike[str] | None = None) -> PipelineFiles | None:
    """:func:`locate_weights` that returns None instead of raising (for ``auto`` and ``models list``)."""
    try:
        return locate_weights(weights)
    except (BackendError, MissingDependency):
        return None


# -- reading ---------------------------------------------------------------------------------------------


def check_safetensors(path: Path) -> dict[str, Any]:
    """Validate a ``.safetensors`` file's header and length without reading its tensors.

    Returns:
        The header (tensor name → ``{"dtype", "shape", "data_offsets"}``, plus ``__metadata__``).

    Raises:
        BackendError: shorter than its header says (truncated), or a header that is not valid.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise BackendError(f"{path} is truncated or not a safetensors file ({size} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, 100 << 20):
                raise BackendError(f"{path} is truncated or not a safetensors file (header of {n} bytes)")
            header = json.loads(fh.read(n))
    except OSError as exc:
        raise BackendError(f"cannot read {path}: {' '.join(str(exc).split())}") from None
    except ValueError:
        raise BackendError(f"{path} is corrupt: its safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise BackendError(f"{path} is corrupt: its safetensors header is not a mapping")
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise BackendError(f"{path} is truncated: {size} bytes, its header needs {8 + n + end}")
    return header


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` state dict on the CPU (dtypes as stored), after :func:`check_safetensors`.

    Raises:
        BackendError: not ``.safetensors``, truncated or corrupt (naming the file).
        MissingDependency: ``safetensors`` is not installed.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise BackendError(f"{path}: only .safetensors checkpoints are read")
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise MissingDependency(
            "the TRELLIS.2 backend needs 'safetensors': pip install 'meshforge[trellis2]'"
        ) from None
    check_safetensors(path)
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:
        raise BackendError(f"{path} is corrupt: {' '.join(str(exc).split())[:200]}") from None


def read_model_config(path: Path) -> tuple[str, dict[str, Any]]:
    """``<ckpt>.json`` → ``(class name, constructor args)``.

    Raises:
        BackendError: unreadable or without ``name``.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot read {path}: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise BackendError(f'{path} is not a TRELLIS.2 model config (no "name")')
    args = data.get("args") or {}
    if not isinstance(args, dict):
        raise BackendError(f'{path}: "args" is not a mapping')
    return data["name"], args


@contextlib.contextmanager
def skip_init() -> Iterator[None]:
    """Inside the block, ``torch.nn.init`` functions and ``reset_parameters`` leave tensors as allocated:
    building a model whose every weight is then loaded costs no random initialisation."""
    import torch

    init = torch.nn.init
    names = [n for n in dir(init) if n.endswith("_") and not n.startswith("_") and callable(getattr(init, n))]
    saved = {n: getattr(init, n) for n in names}

    def keep(tensor: Any, *args: Any, **kwargs: Any) -> Any:
        return tensor

    for n in names:
        setattr(init, n, keep)
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(init, n, f)


def build_model(name: str, args: dict[str, Any], *, initialise: bool = True) -> torch.nn.Module:
    """Construct ``name(**args)`` on the CPU (``initialise=False``: tensors left uninitialised).

    Raises:
        BackendError: unknown class or arguments it does not accept (one line).
    """
    cls = model_class(name)
    try:
        if initialise:
            model = cls(**args)
        else:
            with skip_init():
                model = cls(**args)
    except (TypeError, ValueError) as exc:
        raise BackendError(f"cannot build {name} from its config: {' '.join(str(exc).split())}") from None
    out: torch.nn.Module = model
    return out


def check_keys(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict comparison of a state dict with the model's (key set and shapes).

    A buffer the model derives from its arguments — the reference's ``rope_phases``/``pos_emb``, or any complex
    buffer — may be absent from the checkpoint (the reference loads with ``strict=False``; released checkpoints
    are reported to omit ``rope_phases``); it keeps its constructed value.

    Raises:
        BackendError: one line with the counts and up to three examples of missing keys, unexpected keys and
            shape mismatches.
    """
    own = model.state_dict()
    buffers = {name for name, _ in model.named_buffers()}
    missing, unexpected, wrong = state_dict_differences(own, state, lambda k: k in buffers and _derived(k, own[k]))
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({', '.join(map(repr, missing[:3]))})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({', '.join(map(repr, unexpected[:3]))})")
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} of the wrong shape ({k!r}: {tuple(state[k].shape)}, model {tuple(own[k].shape)})")
    raise BackendError(f"{source} does not match {type(model).__name__}: {'; '.join(parts)} keys")


#: buffers a model computes from its constructor arguments (positional encodings)
DERIVED_BUFFERS = ("rope_phases", "pos_emb")


def _derived(key: str, value: torch.Tensor) -> bool:
    return key.rsplit(".", 1)[-1] in DERIVED_BUFFERS or value.is_complex()


def load_model(files: ModelFiles, *, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Build the model ``files.config`` names and load ``files.weights`` into it, strictly; eval mode, no grad.

    The checkpoint's tensors are copied into the model's own parameters (so a module the model keeps in
    float32 stays float32, as the reference's ``load_state_dict`` does).

    Raises:
        BackendError: see :func:`read_model_config`, :func:`build_model`, :func:`read_state_dict`,
            :func:`check_keys`.
    """
    name, args = read_model_config(files.config)
    state = read_state_dict(files.weights)
    model = build_model(name, args, initialise=False)
    check_keys(model, state, str(files.weights))
    model.load_state_dict(state, strict=False)  # strict by check_keys (derived complex buffers may be absent)
    del state
    model.eval().requires_grad_(False)
    return model.to(device)
