"""Backend registry: lazy ``"module:Class"`` entries, built once and passed to :func:`meshforge.pipeline.run`.

A backend is a callable ``backend(image) -> Field`` with attributes ``name``, ``input_size`` (side of the
square prepared picture it wants, pixels), ``camera`` (:class:`~meshforge.types.Camera`, the input view
in the canonical frame) and a method ``info() -> dict`` (provenance). Backends that need weights also
provide a classmethod ``weights_present(weights) -> bool`` (:class:`WeightsProbe`) used by ``auto`` selection.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

from ..errors import BackendError
from ..fields.base import Field
from ..types import Camera, Image

#: name → "module:Class"; imported only when used.
REGISTRY: dict[str, str] = {
    "triposr": "meshforge.backends.triposr.backend:TripoSRBackend",
    "trellis2": "meshforge.backends.trellis2.backend:Trellis2Backend",
    "inflate": "meshforge.backends.inflate:InflateBackend",
}

#: order in which ``auto`` tries backends: the best first, the weightless fallback last.
AUTO_ORDER: tuple[str, ...] = ("trellis2", "triposr", "inflate")


class Backend(Protocol):
    """A reconstruction backend, built once (weights loaded) and called once per picture.

    Attributes:
        name: the registry name (``"triposr"``, ``"inflate"``).
        input_size: side of the square prepared picture it wants (pixels).
        camera: the input view in the canonical frame (glTF: +Y up, metres, looking down −Z).
    """

    name: str
    input_size: int
    camera: Camera

    def __call__(self, image: Image) -> Field:
        """The prepared RGBA picture (``input_size`` square, sRGB, straight alpha) → a :class:`Field` in the
        canonical frame. Raises :class:`~meshforge.errors.BackendError` when the network fails."""
        ...

    def info(self) -> dict[str, Any]:
        """Provenance for reports and raw files: name, weights (folder or hub id, revision), options."""
        ...


@runtime_checkable
class WeightsProbe(Protocol):
    """Optional hook of a backend *class* that needs weights: whether they are present locally (no
    network, no torch import), for ``auto`` selection and ``meshforge models list``."""

    def weights_present(self, weights: str | None) -> bool:
        """True when ``weights`` (a folder or hub id; None: the default) can be loaded without a download."""
        ...

    def weights_location(self, weights: str | None) -> Any:
        """Where those weights are (an object whose ``checkpoint`` is the file, or a path), or None."""
        ...


@runtime_checkable
class Seeded(Protocol):
    """Optional hook of a generative backend (TRELLIS.2's flows sample from noise): the seed of that noise,
    set from the pipeline configuration's ``seed`` before each call."""

    seed: int


def backend_class(name: str) -> type:
    """Import and return the class registered under ``name``.

    Raises:
        BackendError: unknown name, or the module cannot be imported.
    """
    try:
        target = REGISTRY[name]
    except KeyError:
        raise BackendError(f"unknown backend {name!r} (choices: auto, {', '.join(REGISTRY)})") from None
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendError(f"backend {name!r} cannot be imported: {exc}") from None
    cls: type = getattr(module, class_name)
    return cls


def resolve_name(name: str, weights: str | None = None) -> tuple[str, str | None]:
    """Resolve ``"auto"`` to a concrete backend name.

    Returns:
        ``(name, note)`` where ``note`` says why a fallback was chosen (None when nothing to say).
    """
    if name != "auto":
        backend_class(name)
        return name, None
    skipped: list[str] = []
    for candidate in AUTO_ORDER:
        cls = backend_class(candidate)
        probe = cls if isinstance(cls, WeightsProbe) else None
        if probe is None or probe.weights_present(weights):
            note = None
            if probe is None:  # a weightless fallback: say why it was chosen
                missing = f" for {', '.join(skipped)}" if skipped else " for any neural backend"
                note = f"no model weights found{missing}; using the weightless '{candidate}' backend"
            return candidate, note
        skipped.append(candidate)
    raise BackendError("no backend is available")  # pragma: no cover - inflate is always available


def load_backend(name: str = "auto", *, weights: str | None = None, device: str = "auto", **options: Any) -> Backend:
    """Build a backend once (loading its weights), ready to be called on prepared pictures.

    Args:
        name: a registry name or ``"auto"`` (the best backend whose weights are present, else ``inflate``).
        weights: weights location for backends that need them (local folder or hub id).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        **options: backend-specific keyword options.

    Raises:
        BackendError: unknown backend or failed load.
    """
    resolved, _ = resolve_name(name, weights)
    cls = backend_class(resolved)
    backend: Backend = cls(weights=weights, device=device, **options)
    return backend
