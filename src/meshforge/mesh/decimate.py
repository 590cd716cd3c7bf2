"""QEM decimation to a face budget.

Quadric error metric edge collapse (Garland & Heckbert, SIGGRAPH 1997) in Sven Forstmann's "Fast
Quadric Mesh Simplification" variant, as packaged by ``fast-simplification`` (MIT, pyvista).
"""

from __future__ import annotations

import numpy as np

from ..config import DecimateConfig
from ..errors import InputError, MissingDependency
from ..types import Mesh
from .clean import orient_faces, remove_degenerate_faces
from .topology import topology


def decimate(mesh: Mesh, cfg: DecimateConfig) -> tuple[Mesh, dict[str, object]]:
    """Reduce a mesh to at most ``cfg.faces`` faces, then check it is still a closed two-manifold.

    Per-vertex attributes are dropped (they are rebuilt after unwrapping). A mesh already within budget
    is returned unchanged. If the input was watertight and a collapse made it non-manifold or opened
    it, the decimation is retried with a gentler schedule (lower aggressiveness), and finally with the
    budget ×1.25 smaller steps; the report records what happened.

    Args:
        mesh: a cleaned mesh (``[V, 3]`` float32 vertices, ``[F, 3]`` int32 faces).
        cfg: ``faces`` budget, ``engine``, ``aggressiveness``.

    Returns:
        ``(mesh, counts)`` with ``counts`` holding the topology check of the result and the attempts made.

    Raises:
        InputError: unknown engine.
        MissingDependency: fast-simplification is not installed.
    """
    if cfg.engine != "fast-simplification":
        raise InputError(f"unknown decimation engine {cfg.engine!r} (choices: fast-simplification)")
    try:
        import fast_simplification
    except ImportError:  # pragma: no cover
        raise MissingDependency("decimation needs 'fast-simplification': pip install fast-simplification") from None

    base = Mesh(vertices=mesh.vertices, faces=mesh.faces)
    if mesh.n_faces <= cfg.faces:
        topo = topology(base.vertices, base.faces)
        return base, {"attempts": 0, **topo.to_dict()}
    was_closed = topology(base.vertices, base.faces).watertight
    attempts = []
    result = base
    for aggressiveness in (cfg.aggressiveness, max(2.0, cfg.aggressiveness - 3.0), 2.0):
        target = cfg.faces
        for _ in range(4):
            v, f = fast_simplification.simplify(
                base.vertices, base.faces, target_count=int(target), agg=float(aggressiveness)
            )
            if len(f) <= cfg.faces:
                break
            target = max(4, int(target - (len(f) - cfg.faces) - 2))
        candidate = remove_degenerate_faces(
            Mesh(vertices=np.asarray(v, dtype=np.float32), faces=np.asarray(f, dtype=np.int32))
        )
        candidate, _ = orient_faces(candidate)
        topo = topology(candidate.vertices, candidate.faces)
        attempts.append({"aggressiveness": aggressiveness, "faces": candidate.n_faces, "watertight": topo.watertight})
        result = candidate
        if topo.watertight or not was_closed:
            break
    topo = topology(result.vertices, result.faces)
    return result, {"attempts": len(attempts), **topo.to_dict()}
