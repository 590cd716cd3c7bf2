"""The UV unwrap worker: a small process that runs xatlas for :mod:`meshforge.mesh.uv`.

xatlas holds the GIL and cannot be interrupted, so a time-limited unwrap runs it here, in a separate
process that the caller can kill when the limit passes. The process is started with ``subprocess``
(fork + exec of a fresh interpreter, ``close_fds``), never by ``fork()`` alone, so it inherits only its
stdin/stdout pipes and stderr: no listening socket, ledger handle or lock of the server that started it.
It cannot outlive that process either:

* ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` (Linux, proc(5)/prctl(2)) has the kernel kill it when the thread
  that started it ends — even in the middle of xatlas;
* a watcher thread exits when its parent pid changes (the parent died; the worker was re-parented);
* it exits when its request pipe reaches end-of-file, or when a reply cannot be written (``EPIPE``):
  only the parent holds the other ends of its pipes.

It is run as a script by path (``python -P .../_unwrap_worker.py <parent pid>``) and imports only the
standard library, numpy, xatlas and its sibling ``pack.py`` (loaded by path, numpy only), so it starts
in a fraction of a second (importing the ``meshforge`` package would also import SciPy, scikit-image,
OpenCV...).

Protocol: frames of an 8-byte little-endian length followed by a pickle. The worker first sends
``("ready", pid)``; then, for each request ``(vertices, faces, options, delay_s)``, it replies
``("ok", atlas dict)`` (:func:`xatlas_atlas`; with ``options["batch"]``, ``vertices`` and ``faces`` are lists, one
item per mesh, and the dict is ``{"atlases": [...]}``, :func:`xatlas_charts`) or ``("error", message)``, and then
``("freed", None)`` once xatlas's atlas object is
destroyed. That comes after the reply on purpose: ``xatlas::Destroy`` joins the atlas's task-scheduler
threads, and now and then one of them never wakes (a wake-up sent before it started waiting; seen on this
project's CI machine, the process asleep in ``TaskScheduler::~TaskScheduler`` → ``std::thread::join``), so the
caller keeps its atlas and ends a worker whose ``freed`` does not come.
"""

from __future__ import annotations

import math
import os
import pickle
import select
import signal
import struct
import sys
import threading
import time
from typing import Any

_HEADER = struct.Struct("<Q")
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


#: an atlas of at most this many charts gets more layouts from the re-packing (4 layouts once one fits, at most 8;
#: one of 100 charts takes 0.1-0.2 s on one core): the layouts of a few irregular charts vary much with the scale
#: (Fox, 78 charts: 0.649 after 3 layouts, 0.658 after 4)
FEW_CHARTS = 300
#: an atlas of more charts than this keeps xatlas's packing, for time: a layout costs about 1 ms a chart
#: (FlightHelmet, 2,191 charts: one layout of 2.2 s, 0.621 → 0.683; its small charts are placed texel-exactly)
MANY_CHARTS = 5000


def write_frame(fd: int, obj: Any) -> None:
    """Write one pickled frame to a pipe (blocking until all of it is written).

    Raises:
        BrokenPipeError: nobody reads the pipe any more.
    """
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    buf = bytearray()
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if not poller.poll(math.ceil(min(left, 3600.0) * 1000)):  # poll() takes at most 2³¹ ms
                continue
        chunk = os.read(fd, min(n - len(buf), 1 << 22))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def read_frame(fd: int, deadline: float | None = None) -> Any:
    """Read one frame written by :func:`write_frame`.

    Args:
        fd: the pipe's file descriptor.
        deadline: a ``time.monotonic()`` instant to give up at; None waits as long as it takes.

    Raises:
        EOFError: the writer closed the pipe (it ended).
        TimeoutError: the deadline passed first.
    """
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    return pickle.loads(_read_exact(fd, size, deadline))


def xatlas_atlas(
    vertices: Any,
    faces: Any,
    *,
    resolution: int,
    padding: int,
    max_chart_area: float | None,
    brute_force: bool = False,
    gap: int | None = None,
    keep: list[Any] | None = None,
    chart_options: dict[str, float] | None = None,
    stretch: bool = False,
) -> dict[str, Any]:
    """Segment, parameterise (LSCM) and pack a mesh with xatlas (Jonathan Young, MIT; ``xatlas`` binding),
    then re-pack its charts with :func:`meshforge.mesh.pack.pack_charts` when that covers more of the atlas.

    Args:
        vertices: ``[V, 3]`` float positions.
        faces: ``[F, 3]`` integer vertex indices.
        resolution: the atlas size in texels that charts are packed for.
        padding: xatlas ``PackOptions.padding``: texels each chart's (conservative) raster is dilated by
            before it is placed; charts end up about ``padding + 1.5`` texels apart (no bilinear ring:
            the bake fills every gutter, so the padding alone keeps bilinear and mip filtering clean).
        max_chart_area: the largest chart area (mesh units²), or None for no limit.
        brute_force: try every position (on 4×4-texel blocks, which keeps it affordable) instead of a
            random sample of them: a denser packing, at several times the packing time.
        gap: texels kept empty between charts by the re-packing (``UnwrapConfig.padding``); None keeps
            xatlas's packing (so does an atlas of more than :data:`MANY_CHARTS` charts).
        keep: a list the xatlas atlas object is appended to, so that it is destroyed when the caller clears
            the list rather than on return (its destructor can hang: see the module docstring).
        chart_options: other ``xatlas.ChartOptions`` attributes by name (e.g. ``roundness_weight``).
        stretch: also return the atlas's normalised L2 stretch (:func:`meshforge.geometry.raster.uv_stretch`),
            computed here, in the worker process, rather than by the caller (the unwrap in pieces decides on it
            which pieces to redo).

    Returns:
        ``vmapping`` ``[V']`` int64 (source vertex of each atlas vertex), ``faces`` ``[F, 3]`` int64,
        ``uv`` ``[V', 2]`` float64 in [0, 1], ``width``/``height`` (texels), ``atlas_count``, ``charts``,
        ``packer`` (``"meshforge"`` when the re-packing was kept, else ``"xatlas"``), and ``stretch`` when asked.

    Raises:
        ImportError: xatlas is not installed.
    """
    import numpy as np
    import xatlas

    chart = _chart_options(xatlas, max_chart_area, chart_options)
    pack = xatlas.PackOptions()
    pack.resolution = int(resolution)
    pack.padding = int(padding)
    pack.bilinear = False  # its extra texel ring around each chart comes on top of the padding
    pack.blockAlign = bool(brute_force)
    pack.bruteForce = bool(brute_force)
    pack.create_image = False
    atlas = xatlas.Atlas()
    if keep is not None:
        keep.append(atlas)
    atlas.add_mesh(vertices, faces)
    atlas.generate(chart, pack)
    vmapping, indices, uvs = atlas[0]
    width, height = int(atlas.width), int(atlas.height)
    faces_out = np.asarray(indices, dtype=np.int64)
    uv = np.asarray(uvs, dtype=np.float64)
    packer = "xatlas"
    if gap is not None and atlas.atlas_count == 1 and len(faces_out) and int(atlas.chart_count) <= MANY_CHARTS:
        square = uv * np.array([width, height]) / max(width, height)
        e1 = square[faces_out[:, 1]] - square[faces_out[:, 0]]
        e2 = square[faces_out[:, 2]] - square[faces_out[:, 0]]
        before = float(0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum())
        try:
            # one layout 15 % denser than xatlas's (most fit at once), a second at the scale its height
            # suggests; none that would gain less than 3 %
            few = int(atlas.chart_count) <= FEW_CHARTS
            packed, after = _pack_module().pack_charts(
                square,
                faces_out,
                int(resolution),
                int(gap),
                start=before * 1.15,
                floor=before * 1.03,
                attempts=4 if few else 1,
                max_layouts=8 if few else 2,
            )
        except (ValueError, RuntimeError):
            after = 0.0
        if after > before:
            uv, width, height, packer = packed, int(resolution), int(resolution), "meshforge"
    vmap = np.asarray(vmapping, dtype=np.int64)
    out: dict[str, Any] = {
        "vmapping": vmap,
        "faces": faces_out,
        "uv": uv,
        "width": width,
        "height": height,
        "atlas_count": int(atlas.atlas_count),
        "charts": int(atlas.chart_count),
        "packer": packer,
    }
    if stretch:
        src = np.asarray(vertices, dtype=np.float64)[vmap]
        out["stretch"] = _raster_module().uv_stretch(src, uv * np.array([width, height]), faces_out)
    return out


def _chart_options(xatlas: Any, max_chart_area: float | None, chart_options: dict[str, float] | None) -> Any:
    """``xatlas.ChartOptions`` with ``max_chart_area`` (None: no limit) and the other attributes given by name."""
    chart = xatlas.ChartOptions()
    if max_chart_area is not None:
        chart.max_chart_area = max_chart_area
    for name, value in (chart_options or {}).items():
        setattr(chart, name, value)
    return chart


#: ``PackOptions.resolution`` of :func:`xatlas_charts`: its packing is thrown away, and a small atlas is packed
#: fastest (the 256³ benchmark surface's 64 pieces in one atlas: 0.105 s at 512, 0.07 s at 64 on an H200's host)
CHARTS_RESOLUTION = 64


def xatlas_charts(
    meshes: list[tuple[Any, Any]],
    *,
    max_chart_area: float | None,
    chart_options: dict[str, float] | None = None,
    stretch: bool = False,
    keep: list[Any] | None = None,
    cpus: list[int] | None = None,
) -> list[dict[str, Any]]:
    """Segment and parameterise several meshes in one xatlas atlas (Jonathan Young, MIT; ``xatlas`` binding) and
    return each mesh's charts at the scale of its surface: every chart's UVs scaled about their centroid to a UV
    area of its surface area times its L2 stretch (:func:`_chart_scales`: the least stretch of the atlas).

    One atlas of many meshes lets xatlas's own task threads run the meshes' segmentations and parameterisations
    side by side (one thread per CPU, started once), where an atlas per mesh would start and stop them per mesh
    (the 256³ benchmark surface's 64 pieces: 0.63 → 0.32 s in one process on 2 cores; on an H200's 16-core host
    0.07 s in one atlas on their own, and in the unwrap's workers, 4 pieces a request, about as fast as a piece a
    request, 0.10-0.15 s: the work is CPU-bound there). xatlas's packing of the atlas is not used: it scales small
    charts up to a least size in texels, which is why each chart's scale is set here from its own areas and stretch
    (the caller packs the charts again, :func:`meshforge.mesh.pack.pack_charts`).

    Args:
        meshes: per mesh, ``[V, 3]`` float positions and ``[F, 3]`` integer indices.
        max_chart_area: the largest chart area (mesh units²), or None for no limit.
        chart_options: other ``xatlas.ChartOptions`` attributes by name (e.g. ``roundness_weight``).
        stretch: also return each mesh's normalised L2 stretch (:func:`meshforge.geometry.raster.uv_stretch`).
        keep: a list the xatlas atlas object is appended to (see :func:`xatlas_atlas`).
        cpus: the CPUs xatlas's threads may run on (this thread's affinity while the atlas and its threads are
            made; restored after), e.g. all of them for a worker that is otherwise kept on one; None: as the process
            is.

    Returns:
        Per mesh, a dict: ``vmapping`` ``[V']`` int64 (source vertex of each atlas vertex), ``faces`` ``[F, 3]``
        int64, ``uv`` ``[V', 2]`` float64 (mesh units; charts scaled by :func:`_chart_scales`), ``width`` and
        ``height`` 1, ``charts``, and ``stretch`` when asked.

    Raises:
        ImportError: xatlas is not installed.
    """
    import numpy as np
    import xatlas

    chart = _chart_options(xatlas, max_chart_area, chart_options)
    pack = xatlas.PackOptions()
    pack.resolution = CHARTS_RESOLUTION
    pack.padding = 0
    pack.bilinear = False
    pack.create_image = False
    before = os.sched_getaffinity(0) if cpus and hasattr(os, "sched_setaffinity") else None
    if before is not None:
        try:  # xatlas starts its task threads with the atlas (xatlas::Create): they take this thread's affinity
            os.sched_setaffinity(0, set(cpus or ()))
        except OSError:
            before = None
    try:
        atlas = xatlas.Atlas()
    finally:
        if before is not None:
            os.sched_setaffinity(0, before)
    if keep is not None:
        keep.append(atlas)
    for vertices, faces in meshes:
        atlas.add_mesh(vertices, faces)
    atlas.generate(chart, pack)
    # every mesh's charts scaled at once (one chart search and one stretch over all of them: per mesh, the numpy
    # calls cost more than the arithmetic)
    got = [atlas[i] for i in range(len(meshes))]
    vmaps = [np.asarray(g[0], dtype=np.int64) for g in got]
    faces = [np.asarray(g[1], dtype=np.int64) for g in got]
    uvs = [np.asarray(g[2], dtype=np.float64) for g in got]
    src = np.concatenate(
        [np.asarray(v, dtype=np.float64)[vm] for (v, _), vm in zip(meshes, vmaps, strict=True)] or [np.zeros((0, 3))]
    )
    n_uv = np.array([len(u) for u in uvs], dtype=np.int64)
    n_f = np.array([len(f) for f in faces], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(n_uv)])
    f_all = np.concatenate([f + o for f, o in zip(faces, starts[:-1], strict=True)] or [np.zeros((0, 3), np.int64)])
    uv_all = np.concatenate(uvs or [np.zeros((0, 2))])
    mesh_of = np.repeat(np.arange(len(meshes)), n_f)
    charts = np.zeros(len(meshes), dtype=np.int64)
    if len(f_all):
        chart_of = _pack_module().uv_charts(f_all, len(uv_all))  # charts never span meshes: no vertex is shared
        n = int(chart_of.max()) + 1
        uv_all = _chart_scales(src, uv_all, f_all, chart_of, n)
        first = np.zeros(n, dtype=np.int64)
        first[chart_of[::-1]] = mesh_of[::-1]  # each chart's mesh
        charts = np.bincount(first, minlength=len(meshes))
    stretch_of = _mesh_stretch(src, uv_all, f_all, mesh_of, len(meshes)) if stretch else None
    out = []
    for i in range(len(meshes)):
        item: dict[str, Any] = {
            "vmapping": vmaps[i],
            "faces": faces[i],
            "uv": uv_all[starts[i] : starts[i + 1]],
            "width": 1,
            "height": 1,
            "charts": int(charts[i]),
        }
        if stretch_of is not None:
            item["stretch"] = float(stretch_of[i])
        out.append(item)
    return out


def _mesh_stretch(src: Any, uv: Any, f: Any, mesh_of: Any, n: int) -> Any:
    """``[n]`` float64: each mesh's normalised L2 stretch (:func:`meshforge.geometry.raster.uv_stretch`), for the
    faces ``f`` ``[F, 3]`` of meshes ``mesh_of`` ``[F]`` in one atlas (NaN for a mesh with no measurable face)."""
    import numpy as np

    ss2, st2, area, uv_area = _raster_module().uv_stretch_terms(src, uv, f)
    ok = np.isfinite(ss2)
    m, a, l2, u = mesh_of[ok], area[ok], 0.5 * (ss2[ok] + st2[ok]), uv_area[ok]
    total = np.bincount(m, a, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(np.bincount(m, l2 * a, minlength=n) / total) * np.sqrt(np.bincount(m, u, minlength=n) / total)


def _chart_scales(src: Any, uv: Any, f: Any, chart_of: Any, n: int) -> Any:
    """Each chart's UVs scaled about its centroid, per axis and as a whole, to the least L2 stretch (Sander et al.
    2001, "Texture mapping progressive meshes", :func:`meshforge.geometry.raster.uv_stretch`) of an atlas of one
    common scale.

    Per axis: xatlas's packing scales charts smaller than a few texels up to a least width and height, each axis on
    its own (at the 64² atlas of :func:`xatlas_charts`, most of a 312-face piece's charts), which stretches them.
    Scaling ``u`` by ``k`` and ``v`` by ``1/k`` keeps a chart's UV area; its ``Σ A·(|S_s|²/k² + |S_t|²·k²)`` is least at
    ``k⁴ = Σ A·|S_s|² / Σ A·|S_t|²`` (``A`` the 3D area, ``S_s``, ``S_t`` the map's partial derivatives), which
    also undoes such a scaling of a conformal (LSCM) chart exactly.
    As a whole: at UV area ``A`` a chart has stretch ``L2``; for one atlas scale, ``Σ A·L2²/s² · Σ A·s²`` is least,
    by Cauchy-Schwarz, at ``s² ∝ L2`` — a UV area of ``A·L2`` per chart. A chart with no measurable face keeps
    the mesh's common scale (UV area = surface area over the whole mesh). The result is in mesh units.
    """
    import numpy as np

    ss2, st2, area, uv_area = _raster_module().uv_stretch_terms(src, uv, f)
    ok = np.isfinite(ss2)
    a_3d = np.bincount(chart_of, area, minlength=n)
    a_uv = np.bincount(chart_of, uv_area, minlength=n)
    a_ok = np.bincount(chart_of, np.where(ok, area, 0.0), minlength=n)
    es = np.bincount(chart_of, np.where(ok, area * ss2, 0.0), minlength=n)  # Σ A·|S_s|² at xatlas's scale
    et = np.bincount(chart_of, np.where(ok, area * st2, 0.0), minlength=n)
    good = (a_uv > 0) & (a_3d > 0) & (a_ok > 0) & (es > 0) & (et > 0)
    es, et, a_ok = (np.where(good, x, 1.0) for x in (es, et, a_ok))
    k = np.where(good, (es / et) ** 0.25, 1.0)
    common = math.sqrt(a_3d.sum() / a_uv.sum()) if a_uv.sum() > 0 and a_3d.sum() > 0 else 1.0
    match = np.sqrt(np.where(good, a_3d, 1.0) / np.where(good, a_uv, 1.0))  # UV area = surface area
    # after the per-axis scaling Σ A·|S_s|² = Σ A·|S_t|² = √(es·et), so Σ A·L2² = √(es·et); at UV area A it is /match²
    sigma = np.sqrt(np.sqrt(es * et) / a_ok) / match
    scale = np.where(good, match * np.sqrt(sigma), common)
    vchart = np.zeros(len(uv), dtype=np.int64)
    vchart[f.ravel()] = np.repeat(chart_of, 3)
    count = np.maximum(np.bincount(vchart, minlength=n), 1)[:, None]
    centre = np.stack([np.bincount(vchart, uv[:, j], minlength=n) for j in range(2)], 1) / count
    axes = np.stack([k, 1.0 / k], 1) * scale[:, None]
    return (uv - centre[vchart]) * axes[vchart]


def _pack_module() -> Any:
    """:mod:`meshforge.mesh.pack`, loaded from this file's folder (the worker does not import the package)."""
    if __package__:  # imported as meshforge.mesh._unwrap_worker (the in-process unwrap)
        from . import pack

        return pack
    return _by_path("_meshforge_pack", "pack.py")


def _raster_module() -> Any:
    """:mod:`meshforge.geometry.raster` (standard library and numpy only), loaded by path in the worker."""
    if __package__:
        from ..geometry import raster

        return raster
    return _by_path("_meshforge_raster", os.pardir, "geometry", "raster.py")


def _by_path(name: str, *parts: str) -> Any:
    """The module in the file at ``parts`` (relative to this file's folder), loaded once as ``name``."""
    if name not in sys.modules:
        import importlib.util

        spec = importlib.util.spec_from_file_location(name, os.path.join(os.path.dirname(__file__), *parts))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # (dataclasses look their module up while the file runs)
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent ends (Linux only; a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - no prctl: the watcher and the pipes remain
        pass


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(0)
        time.sleep(0.25)


def _pin(cpu: int) -> None:
    """Keep this process (and every thread it starts later: xatlas's task threads, numpy's) on one CPU.

    xatlas starts a task thread per CPU of the machine for each atlas and its calling thread spins (yields)
    until they are done; with a worker per CPU, each of them waking a thread per CPU, the workers' threads
    crowded every CPU: on an H200's 16-core host the xatlas runs of a 200k-face unwrap's pieces took 20-25 %
    less time with each worker on its own CPU (``benchmarks/results/gpu_finish_h200.md``, session 22)."""
    if cpu < 0 or not hasattr(os, "sched_setaffinity"):
        return
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:  # not one of the CPUs this process may use: left as it is
        pass


#: the CPUs the worker's parent may use (set at start, before :func:`_pin`): where a batch's xatlas threads run
_CPUS: list[int] | None = None


def main(argv: list[str]) -> int:
    """The worker's loop: ``argv`` is ``[parent pid]`` or ``[parent pid, CPU]`` (:func:`_pin`, before numpy
    and xatlas start their threads; -1: not pinned); requests on stdin, replies on stdout."""
    parent = int(argv[0])
    global _CPUS
    if hasattr(os, "sched_getaffinity"):
        _CPUS = sorted(os.sched_getaffinity(0))  # the parent's, before this process is kept on one
    if len(argv) > 1:
        _pin(int(argv[1]))
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before the death signal was armed
        return 0
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it ends us
    out = os.dup(1)  # replies go to a private copy of stdout; anything a library prints goes to stderr
    os.dup2(2, 1)
    threading.Thread(target=_watch_parent, args=(parent,), name="watch-parent", daemon=True).start()
    try:  # import now, before saying ready: a worker started ahead of its first request pays this then
        import numpy  # noqa: F401
        import xatlas  # noqa: F401

        _pack_module()
    except ImportError:  # reported at the first request
        pass
    try:
        write_frame(out, ("ready", os.getpid()))
        while True:
            try:
                vertices, faces, options, delay_s = read_frame(0)
            except EOFError:
                return 0
            if delay_s > 0:  # TEST ONLY: stands for a slow xatlas
                time.sleep(delay_s)
            atlases: list[Any] = []
            try:
                reply: tuple[str, Any]
                if options.get("batch"):  # several meshes in one atlas, xatlas's threads on all the CPUs
                    charts = {k: v for k, v in options.items() if k != "batch"}
                    meshes = list(zip(vertices, faces, strict=True))
                    reply = ("ok", {"atlases": xatlas_charts(meshes, keep=atlases, cpus=_CPUS, **charts)})
                else:
                    reply = ("ok", xatlas_atlas(vertices, faces, keep=atlases, **options))
            except ImportError:
                reply = ("error", "UV unwrapping needs 'xatlas': pip install xatlas")
            except Exception as exc:
                reply = ("error", f"{type(exc).__name__}: {' '.join(str(exc).split())}")
            write_frame(out, reply)
            atlases.clear()  # xatlas's destructor, after the reply: it can hang (module docstring)
            if delay_s < 0:  # TEST ONLY: stands for a destructor that hangs
                time.sleep(-delay_s)
            write_frame(out, ("freed", None))
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
