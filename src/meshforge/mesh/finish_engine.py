"""Which engine finishes a surface: the PyTorch one on the surface's CUDA device, or the CPU path.

Entry points for the pipeline (not wired into :func:`meshforge.pipeline.finish` here):

* :func:`finish_engine` — ``"torch"`` when the dense surface is held in tensors on a CUDA device, else ``"cpu"``;
* ``"torch"``: :func:`meshforge.mesh.torch_clean.clean_torch` then
  :func:`meshforge.mesh.torch_decimate.decimate_torch` (tensors in; the small decimated mesh out on the host);
* ``"cpu"``: :func:`meshforge.mesh.clean.clean` then :func:`meshforge.mesh.decimate.decimate` (numpy, the
  reference path).

:func:`clean_and_decimate` runs either and returns ``(cleaned dense surface, decimated mesh, clean counts,
decimate counts)``: the cleaned surface stays where the engine made it (tensors on the device for ``"torch"``,
for a GPU bake; a host :class:`~meshforge.types.Mesh` for ``"cpu"``), the decimated mesh is always on the host.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import CleanConfig, DecimateConfig
from ..types import Mesh

ENGINES = ("torch", "cpu")


def _vertices(surface: Any) -> Any:
    if isinstance(surface, Mesh):
        return surface.vertices
    if isinstance(surface, tuple | list):
        return surface[0]
    return surface


def finish_engine(surface: Any) -> str:
    """The engine for the finishing stages of a dense surface.

    Args:
        surface: a :class:`~meshforge.types.Mesh` (numpy), a ``(vertices, faces)`` pair, or the vertex array or
            tensor itself.

    Returns:
        ``"torch"`` when the vertices are a ``torch.Tensor`` on a CUDA device, else ``"cpu"`` (numpy arrays and
        CPU tensors: the CPU path is the faster one there).
    """
    v = _vertices(surface)
    return "torch" if type(v).__module__.startswith("torch") and bool(getattr(v, "is_cuda", False)) else "cpu"


def clean_and_decimate(
    surface: Any, clean_cfg: CleanConfig, decimate_cfg: DecimateConfig, *, engine: str | None = None
) -> tuple[Any, Mesh, dict[str, int], dict[str, Any]]:
    """Clean and decimate a dense surface with the engine :func:`finish_engine` picks (or ``engine``).

    Args:
        surface: a :class:`~meshforge.types.Mesh` or a ``(vertices [V, 3], faces [F, 3])`` pair of numpy arrays
            or tensors (on any device).
        clean_cfg, decimate_cfg: as for the CPU path.
        engine: ``"torch"`` or ``"cpu"`` to force one (``"torch"`` on CPU tensors is the reference run of the
            GPU engine); None picks by the surface's device.

    Returns:
        ``(cleaned, decimated, clean counts, decimate counts)``: ``cleaned`` is a ``(vertices [V', 3] float32,
        faces [F', 3] int64)`` tensor pair on the surface's device for ``"torch"``, a host
        :class:`~meshforge.types.Mesh` for ``"cpu"``; ``decimated`` is a host :class:`~meshforge.types.Mesh`.

    Raises:
        ValueError: an unknown engine.
    """
    engine = engine or finish_engine(surface)
    if engine not in ENGINES:
        raise ValueError(f"unknown finishing engine {engine!r} (choices: {', '.join(ENGINES)})")
    if isinstance(surface, Mesh):
        v, f = surface.vertices, surface.faces
    else:
        v, f = surface
    if engine == "torch":
        import torch

        from .torch_clean import clean_torch
        from .torch_decimate import decimate_torch

        tv = v if isinstance(v, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(v))
        tf = f if isinstance(f, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(f)).to(tv.device)
        cv, cf, clean_counts = clean_torch(tv, tf, clean_cfg)
        low, counts = decimate_torch(cv, cf, decimate_cfg)
        return (cv, cf), low, clean_counts, counts
    from .clean import clean
    from .decimate import decimate

    if not isinstance(v, np.ndarray):
        v, f = v.detach().cpu().numpy(), f.detach().cpu().numpy()
    cleaned, clean_counts = clean(Mesh(np.asarray(v, np.float32), np.asarray(f, np.int32)), clean_cfg)
    low, counts = decimate(cleaned, decimate_cfg)
    return cleaned, low, clean_counts, counts
