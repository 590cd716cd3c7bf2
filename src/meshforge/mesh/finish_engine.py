"""Which engine finishes a surface: the PyTorch one on the surface's device, or the CPU path.

The entry points :func:`meshforge.pipeline.finish` uses (``FinishingConfig.engine``, ``--finish-engine``):

* :func:`finish_engine` — ``"torch"`` when the dense surface is held in tensors on a CUDA device (a
  :class:`~meshforge.types.DeviceMesh`), else ``"cpu"``; :func:`resolve_engine` turns the setting
  (``"auto"``, ``"cpu"``, ``"torch"``) into the engine and its device;
* :func:`clean_surface` and :func:`decimate_surface` — ``"torch"``: :func:`meshforge.mesh.torch_clean.clean_torch`
  then :func:`meshforge.mesh.torch_decimate.decimate_torch` (tensors in; the cleaned surface stays on the
  device, the small decimated mesh comes out on the host); ``"cpu"``: :func:`meshforge.mesh.clean.clean` then
  :func:`meshforge.mesh.decimate.decimate` (numpy, the reference path);
* :func:`clean_and_decimate` runs both and returns ``(cleaned dense surface, decimated mesh, clean counts,
  decimate counts)``: the cleaned surface stays where the engine made it (tensors on the device for
  ``"torch"``, for a GPU bake; a host :class:`~meshforge.types.Mesh` for ``"cpu"``), the decimated mesh is
  always on the host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..config import OPTIONS, CleanConfig, DecimateConfig
from ..errors import InputError
from ..types import DeviceMesh, Mesh, host_mesh

ENGINES = ("torch", "cpu")


def _vertices(surface: Any) -> Any:
    if isinstance(surface, Mesh | DeviceMesh):
        return surface.vertices
    if isinstance(surface, tuple | list):
        return surface[0]
    return surface


def finish_engine(surface: Any) -> str:
    """The engine for the finishing stages of a dense surface.

    Args:
        surface: a :class:`~meshforge.types.Mesh` (numpy), a :class:`~meshforge.types.DeviceMesh`, a
            ``(vertices, faces)`` pair, or the vertex array or tensor itself.

    Returns:
        ``"torch"`` when the vertices are a ``torch.Tensor`` on a CUDA device, else ``"cpu"`` (numpy arrays and
        CPU tensors: the CPU path is the faster one there).
    """
    v = _vertices(surface)
    return "torch" if type(v).__module__.startswith("torch") and bool(getattr(v, "is_cuda", False)) else "cpu"


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def resolve_engine(setting: str, surface: Any) -> tuple[str, str]:
    """The engine and device a finishing-engine setting means for a dense surface.

    Args:
        setting: ``"auto"`` (:func:`finish_engine`), ``"cpu"`` or ``"torch"``.
        surface: the dense surface (as for :func:`finish_engine`).

    Returns:
        ``(engine, device)``: ``("cpu", "cpu")``, or ``("torch", device)`` with the device of the surface's
        tensors, or for a host surface the default device (:func:`meshforge.devices.resolve_device`
        ``("auto")``: ``"cuda:0"`` when PyTorch sees a CUDA device, else ``"cpu"`` — CPU tensors).

    Raises:
        InputError: an unknown setting.
    """
    problem = OPTIONS["finish_engine"].problem(setting)
    if problem is not None:
        raise InputError(problem)
    engine = finish_engine(surface) if setting == "auto" else setting
    if engine == "cpu":
        return "cpu", "cpu"
    v = _vertices(surface)
    if _is_tensor(v):
        return "torch", str(v.device)
    from ..devices import resolve_device

    return "torch", resolve_device("auto")


def _tensors(surface: Any, device: Any = None) -> tuple[Any, Any]:
    """``(vertices, faces)`` tensors of a surface (numpy arrays become tensors on ``device``, default CPU)."""
    import torch

    if isinstance(surface, Mesh | DeviceMesh):
        v, f = surface.vertices, surface.faces
    else:
        v, f = surface
    tv = v if isinstance(v, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(v))
    tf = f if isinstance(f, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(f))
    if device is not None:
        tv, tf = tv.to(device), tf.to(device)
    return tv, tf.to(tv.device)


def _host(surface: Any) -> Mesh:
    """A surface as a host :class:`Mesh` (:func:`~meshforge.types.host_mesh`; a tensor pair copied)."""
    if isinstance(surface, Mesh | DeviceMesh):
        return host_mesh(surface)
    v, f = surface
    if not isinstance(v, np.ndarray):
        v, f = v.detach().cpu().numpy(), f.detach().cpu().numpy()
    return Mesh(np.asarray(v, np.float32), np.asarray(f, np.int32))


def _check(engine: str) -> None:
    if engine not in ENGINES:
        raise ValueError(f"unknown finishing engine {engine!r} (choices: {', '.join(ENGINES)})")


def clean_surface(
    surface: Any, cfg: CleanConfig, *, engine: str | None = None, device: Any = None
) -> tuple[Any, dict[str, int]]:
    """Clean a dense surface (weld, degenerate and duplicate faces, small components, winding) with an engine.

    Args:
        surface: a :class:`~meshforge.types.Mesh`, a :class:`~meshforge.types.DeviceMesh` or a ``(vertices
            [V, 3], faces [F, 3])`` pair of numpy arrays or tensors.
        cfg: as for the CPU path.
        engine: ``"torch"`` or ``"cpu"``; None picks by the surface's device (:func:`finish_engine`).
        device: ``"torch"`` only: where a host surface's tensors go (default: the surface's device, CPU for
            numpy).

    Returns:
        ``(cleaned, counts)``: ``cleaned`` is a ``(vertices [V', 3] float32, faces [F', 3] int64)`` tensor
        pair on the device for ``"torch"``, a host :class:`~meshforge.types.Mesh` for ``"cpu"``; counts as
        :func:`meshforge.mesh.clean.clean`'s.

    Raises:
        ValueError: an unknown engine.
        InputError: a malformed surface (:func:`~.torch_clean.check_surface`).
    """
    engine = engine or finish_engine(surface)
    _check(engine)
    if engine == "torch":
        from .torch_clean import clean_torch

        tv, tf = _tensors(surface, device)
        cv, cf, counts = clean_torch(tv, tf, cfg)
        return (cv, cf), counts
    from .clean import clean

    return clean(_host(surface), cfg)


def decimate_surface(
    cleaned: Any,
    cfg: DecimateConfig,
    *,
    engine: str | None = None,
    deferred: list[Callable[[], dict[str, Any]]] | None = None,
) -> tuple[Mesh, dict[str, Any]]:
    """Decimate a cleaned dense surface to ``cfg.faces`` faces with an engine (``"torch"``:
    :func:`~.torch_decimate.decimate_torch` on the tensors' device; ``"cpu"``: :func:`~.decimate.decimate`).

    ``deferred``: ``"torch"`` only, as :func:`~.torch_decimate.decimate_torch`'s (the result's checks left to a
    function appended there); the CPU engine computes them in place and appends nothing.

    Returns:
        ``(mesh, counts)``: the decimated host :class:`~meshforge.types.Mesh` and the CPU path's count keys.

    Raises:
        ValueError: an unknown engine.
    """
    engine = engine or finish_engine(cleaned)
    _check(engine)
    if engine == "torch":
        from .torch_decimate import decimate_torch

        return decimate_torch(*_tensors(cleaned), cfg, deferred=deferred)
    from .decimate import decimate

    return decimate(_host(cleaned), cfg)


def edge_topology(cleaned: Any) -> dict[str, Any]:
    """Edge facts of a cleaned dense surface where it lies (tensors: on their device, nothing copied; a host
    mesh: :func:`meshforge.geometry.topology.edge_counts`).

    Returns:
        ``{"boundary_edges", "nonmanifold_edges", "inconsistent_edges", "watertight"}`` (watertight: every
        edge shared by exactly two faces, as :attr:`~meshforge.geometry.topology.TopologyReport.watertight`).
    """
    if isinstance(cleaned, Mesh):
        from ..geometry.topology import edge_counts

        boundary, nonmanifold, inconsistent = edge_counts(cleaned.faces, cleaned.n_vertices)
        watertight = boundary == 0 and nonmanifold == 0 and cleaned.n_faces > 0
        counts = {"boundary_edges": boundary, "nonmanifold_edges": nonmanifold, "inconsistent_edges": inconsistent}
        return {**counts, "watertight": watertight}
    import torch

    v, f = _tensors(cleaned)
    f = f.long()
    nv = int(v.shape[0])
    e = torch.stack([f, f.roll(-1, dims=1)], 2).reshape(-1, 2)
    lo, hi = torch.minimum(e[:, 0], e[:, 1]), torch.maximum(e[:, 0], e[:, 1])
    _, counts = torch.unique(lo * nv + hi, return_counts=True)
    _, dcounts = torch.unique(e[:, 0] * nv + e[:, 1], return_counts=True)
    facts = torch.stack([(counts == 1).sum(), (counts > 2).sum(), (dcounts > 1).sum()]).tolist()  # one sync
    boundary, nonmanifold, inconsistent = (int(x) for x in facts)
    watertight = boundary == 0 and nonmanifold == 0 and int(f.shape[0]) > 0
    return {
        "boundary_edges": boundary,
        "nonmanifold_edges": nonmanifold,
        "inconsistent_edges": inconsistent,
        "watertight": watertight,
    }


def clean_and_decimate(
    surface: Any, clean_cfg: CleanConfig, decimate_cfg: DecimateConfig, *, engine: str | None = None
) -> tuple[Any, Mesh, dict[str, int], dict[str, Any]]:
    """Clean and decimate a dense surface with the engine :func:`finish_engine` picks (or ``engine``):
    :func:`clean_surface` then :func:`decimate_surface`.

    Args:
        surface: a :class:`~meshforge.types.Mesh`, a :class:`~meshforge.types.DeviceMesh` or a ``(vertices
            [V, 3], faces [F, 3])`` pair of numpy arrays or tensors (on any device).
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
    _check(engine)
    cleaned, clean_counts = clean_surface(surface, clean_cfg, engine=engine)
    low, counts = decimate_surface(cleaned, decimate_cfg, engine=engine)
    return cleaned, low, clean_counts, counts
