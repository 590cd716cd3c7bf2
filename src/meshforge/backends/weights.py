"""Model weights: which backends have theirs, and downloading them (``meshforge models list|pull``).

:func:`list_models` never touches the network and never imports torch: it asks each registered backend's
``weights_location``/``weights_present`` hooks. :func:`pull` downloads a backend's official files into the
Hugging Face cache (or a folder) with ``huggingface_hub`` and checks each file's sha256 — against a pinned
digest when one is known, else against the digest the Hub itself reports for large (LFS) files, which is the
name of the cached blob.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BackendError, MissingDependency
from . import REGISTRY, WeightsProbe, backend_class

__all__ = ["PULLABLE", "ModelStatus", "PullSpec", "format_models", "list_models", "pull"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class PullSpec:
    """What ``pull`` downloads for a backend.

    Attributes:
        repo_id: the Hugging Face repository.
        files: file names in the repository.
        sha256: pinned digests (file name → hex); files not listed are checked against the Hub's LFS digest.
    """

    repo_id: str
    files: tuple[str, ...]
    sha256: dict[str, str]


#: backends whose weights :func:`pull` can fetch.
PULLABLE: dict[str, PullSpec] = {
    "triposr": PullSpec(repo_id="stabilityai/TripoSR", files=("config.yaml", "model.ckpt"), sha256={}),
}


@dataclass(frozen=True)
class ModelStatus:
    """One backend's weights.

    Attributes:
        backend: the registry name.
        needs_weights: False for weightless backends.
        present: True when the backend can run now (its weights are local and its packages installed).
        location: the weights folder or checkpoint path when found, else None.
        note: a short explanation (what is missing, how to get it).
    """

    backend: str
    needs_weights: bool
    present: bool
    location: str | None
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "needs_weights": self.needs_weights,
            "present": self.present,
            "location": self.location,
            "note": self.note,
        }


def list_models(weights: str | None = None) -> list[ModelStatus]:
    """The weights status of every registered backend, in registry order.

    Args:
        weights: a folder or repo id to check instead of each backend's default location.

    Returns:
        One :class:`ModelStatus` per backend. No network access, no torch import.
    """
    out: list[ModelStatus] = []
    for name in REGISTRY:
        try:
            cls = backend_class(name)
        except BackendError as exc:
            out.append(ModelStatus(name, True, False, None, str(exc)))
            continue
        if not isinstance(cls, WeightsProbe):
            out.append(ModelStatus(name, False, True, None, "no weights needed"))
            continue
        files = cls.weights_location(weights)
        location = str(getattr(files, "checkpoint", files)) if files is not None else None
        present = bool(cls.weights_present(weights))
        custom = getattr(cls, "weights_note", None)  # a backend that says itself what is missing (trellis2)
        if present:
            note = "ready"
        elif callable(custom) and custom(weights):
            note = str(custom(weights))
        elif files is not None:
            note = "weights found, but a needed package is missing: pip install 'meshforge[" + name + "]'"
        elif name in PULLABLE and weights is None:
            note = f"weights not found: meshforge models pull {name}"
        else:
            note = "weights not found"
        out.append(ModelStatus(name, True, present, location, note))
    return out


def format_models(statuses: list[ModelStatus]) -> str:
    """A plain-text table for the CLI: backend, status, location/note."""
    lines = []
    width = max((len(s.backend) for s in statuses), default=7)
    for s in statuses:
        state = "ready" if s.present else "missing"
        detail = s.location or "-"
        extra = "" if s.note == "ready" else f"  ({s.note})"
        lines.append(f"{s.backend:<{width}}  {state:<7}  {detail}{extra}")
    return "\n".join(lines)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the URL's host can be opened (DNS and connect, no request sent)."""
    import socket
    from urllib.parse import urlparse

    parsed = urlparse(url)
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pull(
    name: str,
    *,
    revision: str | None = None,
    local_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Download a backend's official weights and verify them.

    Args:
        name: a key of :data:`PULLABLE` (``"triposr"``).
        revision: repository revision (branch, tag or commit); None → ``main``.
        local_dir: download into this folder (usable as ``--weights DIR``) instead of the Hugging Face cache.
        cache_dir: the Hugging Face cache folder (default: ``HF_HUB_CACHE`` or the library default).

    Returns:
        The folder holding the files (the cache snapshot folder, or ``local_dir``).

    Raises:
        BackendError: unknown name; no network, offline mode or a Hub error (one line); a digest mismatch.
        MissingDependency: ``huggingface_hub`` is not installed.
    """
    spec = PULLABLE.get(name)
    if spec is None:
        raise BackendError(f"no downloadable weights for backend {name!r} (choices: {', '.join(PULLABLE)})")
    if importlib.util.find_spec("huggingface_hub") is None:
        raise MissingDependency(f"downloading {name} weights needs 'huggingface_hub': pip install 'meshforge[{name}]'")
    from huggingface_hub import hf_hub_download

    from .triposr.loading import hub_offline

    if hub_offline():
        raise BackendError(f"cannot download {name} weights: HF_HUB_OFFLINE is set (unset it, with network access)")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if not _reachable(endpoint):
        raise BackendError(f"cannot download {name} weights: {endpoint} cannot be reached (no network?)")
    cache = os.fspath(cache_dir) if cache_dir is not None else (os.environ.get("HF_HUB_CACHE") or None)
    target = os.fspath(local_dir) if local_dir is not None else None
    folder: Path | None = None
    for filename in spec.files:
        try:
            path = Path(hf_hub_download(spec.repo_id, filename, revision=revision, cache_dir=cache, local_dir=target))
        except Exception as exc:  # offline, DNS, HTTP, auth, missing file: one line with the reason
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise BackendError(f"cannot download {filename} of {spec.repo_id!r}: {reason}") from exc
        expected = spec.sha256.get(filename)
        blob = path.resolve().name
        if expected is None and _SHA256.match(blob):
            expected = blob  # the cache names an LFS blob by its sha256
        if expected is not None:
            actual = _sha256(path)
            if actual != expected:
                raise BackendError(f"{path}: sha256 {actual} does not match the expected {expected}")
        folder = path.parent
    assert folder is not None
    return folder


def state_dict_differences(
    own: Mapping[str, Any], state: Mapping[str, Any], may_be_absent: Callable[[str], bool] | None = None
) -> tuple[list[str], list[str], list[str]]:
    """How a checkpoint's tensors differ from a model's ``state_dict`` (the strict-loading check every
    backend makes before ``load_state_dict``; each words its own one-line error from the lists).

    Args:
        own: the model's ``state_dict()`` (name → tensor).
        state: the checkpoint's tensors.
        may_be_absent: names the checkpoint may leave out (e.g. buffers the model derives itself).

    Returns:
        ``(missing, unexpected, wrong_shape)``: model keys absent from the checkpoint (less those allowed),
        checkpoint keys the model lacks, and keys present in both with different shapes; in key order.
    """
    missing = [k for k in own if k not in state and not (may_be_absent is not None and may_be_absent(k))]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    return missing, unexpected, wrong
