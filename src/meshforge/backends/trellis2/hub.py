"""Downloading the official TRELLIS.2 weights (``meshforge models pull trellis2``).

Fetches ``pipeline.json`` and the checkpoints it names from ``microsoft/TRELLIS.2-4B`` (MIT), plus TRELLIS v1's
sparse-structure decoder from ``microsoft/TRELLIS-image-large`` (MIT), into the Hugging Face cache — or, with
``local_dir``, into one folder usable as ``--weights DIR`` (the v1 decoder under
``DIR/microsoft/TRELLIS-image-large/``, where pipeline.json's reference points). Each large file is checked
against the sha256 the Hub reports for it (the name of the cached LFS blob). DINOv3 is gated and never
downloaded here: the returned note says how to get it.

Offline (``HF_HUB_OFFLINE``) or without a reachable endpoint, it fails at once with a one-line
:class:`~meshforge.errors.BackendError`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from pathlib import Path

from ...errors import BackendError, MissingDependency
from .conditioning import DINOV3_LICENCE_STEP
from .loading import DEFAULT_REPO, MODEL_NAMES, PIPELINE_JSON, _split_ref

__all__ = ["pull"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def _reachable(url: str, timeout: float = 3.0) -> bool:
    import socket
    from urllib.parse import urlparse

    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def _verify(path: Path) -> None:
    blob = path.resolve().name
    if not _SHA256.match(blob):
        return
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    if h.hexdigest() != blob:
        raise BackendError(f"{path}: sha256 {h.hexdigest()} does not match the Hub's {blob}")


def pull(*, revision: str | None = None, local_dir: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """Download TRELLIS.2-4B's pipeline and checkpoints and the v1 decoder.

    Args:
        revision: revision of ``microsoft/TRELLIS.2-4B`` (None: ``main``).
        local_dir: a folder to download into instead of the Hugging Face cache.

    Returns:
        ``(folder, note)``: the folder holding ``pipeline.json``, and the DINOv3 licence step to print.

    Raises:
        BackendError: offline, no network, a Hub error (one line), a digest mismatch.
        MissingDependency: ``huggingface_hub`` is not installed.
    """
    if importlib.util.find_spec("huggingface_hub") is None:
        raise MissingDependency(
            "downloading TRELLIS.2 weights needs 'huggingface_hub': pip install 'meshforge[trellis2]'"
        )
    if _offline():
        raise BackendError("cannot download TRELLIS.2 weights: HF_HUB_OFFLINE is set (unset it, with network access)")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if not _reachable(endpoint):
        raise BackendError(f"cannot download TRELLIS.2 weights: {endpoint} cannot be reached (no network?)")
    from huggingface_hub import hf_hub_download

    cache = os.environ.get("HF_HUB_CACHE") or None
    target = Path(local_dir) if local_dir is not None else None

    def fetch(repo: str, filename: str, rev: str | None, into: Path | None) -> Path:
        try:
            path = Path(
                hf_hub_download(
                    repo, filename, revision=rev, cache_dir=cache, local_dir=os.fspath(into) if into else None
                )
            )
        except Exception as exc:  # network, auth, missing file: one line with the reason
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise BackendError(f"cannot download {filename} of {repo!r}: {reason}") from exc
        _verify(path)
        return path

    config = fetch(DEFAULT_REPO, PIPELINE_JSON, revision, target)
    models = json.loads(config.read_text())["args"]["models"]
    for name in MODEL_NAMES:
        ref = models.get(name)
        if ref is None:
            continue
        other = _split_ref(str(ref))
        for suffix in (".json", ".safetensors"):
            if other is None:
                fetch(DEFAULT_REPO, f"{ref}{suffix}", revision, target)
            else:
                repo, path = other
                fetch(repo, f"{path}{suffix}", None, target / repo if target is not None else None)
    return config.parent, DINOV3_LICENCE_STEP
