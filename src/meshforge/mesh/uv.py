"""UV unwrapping: a texture atlas for a decimated mesh.

The main engine is xatlas (Jonathan Young, MIT; python binding ``xatlas``), which segments the surface
into charts, parameterises each chart (LSCM, Lévy et al. 2002), and packs the charts into the atlas; its
charts are then packed again, more densely, by :func:`meshforge.mesh.pack.pack_charts` (the denser of the
two layouts is kept). A large mesh, or one of few large parts, is cut into pieces (:func:`piece_size`,
:func:`split_pieces`) that xatlas segments and parameterises in parallel worker processes; their charts,
brought to one texel density, are packed together by :func:`~meshforge.mesh.pack.pack_charts`.
xatlas holds the GIL and cannot be interrupted, so with a time limit it runs in an unwrap worker process
(:mod:`meshforge.mesh._unwrap_worker`) that is killed when the limit passes; the unwrap then falls back
to the ``faces`` engine: every pair of faces gets its own square cell of a regular grid (always valid, no
overlaps, poorer texel use).

The worker is a fresh interpreter started with ``subprocess`` (not a ``fork()`` of the caller, which in a
server would copy its listening socket and threads' state): it inherits no file descriptor but its own
pipes and stderr, and it ends with the process that started it (``PR_SET_PDEATHSIG``, a parent watch,
end-of-file on its request pipe). Workers are kept and reused (one per concurrent unwrap, up to one per CPU
for the pieces of a large mesh); a worker killed at the time limit is replaced by a new one at the next unwrap.
"""

from __future__ import annotations

import atexit
import heapq
import math
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from ..config import UnwrapConfig
from ..errors import InputError, MissingDependency, one_line
from ..geometry.normals import vertex_normals
from ..geometry.raster import (
    DILATION_TEXELS,
    MAX_UV_RASTER,
    coverage,
    never_written,
    uv_seam_ratio,
    uv_stretch,
    uv_triangle_areas,
    uv_utilisation,
)
from ..geometry.topology import face_areas, vertex_components
from ..types import Mesh
from . import _unwrap_worker

#: TEST ONLY: seconds the unwrap worker sleeps before running xatlas (stands for a slow xatlas); negative: after
#: its reply, before it says the atlas is destroyed (stands for xatlas's destructor hanging). A module
#: attribute that only Python code can set (tests, ``tests/service/slow_serve.py``): no setting, variable
#: or option reaches it, so a production server cannot be slowed down through it.
TEST_DELAY_S = 0.0
#: seconds a new worker may take to start (import numpy and xatlas) before the unwrap falls back
_START_TIMEOUT_S = 60.0
#: seconds a worker has, after its reply, to destroy xatlas's atlas before it is ended (it takes microseconds;
#: xatlas's destructor now and then never returns: :mod:`~meshforge.mesh._unwrap_worker`)
_FREE_TIMEOUT_S = 2.0
#: how long a worker's next request waits for it to destroy its last atlas before a new worker takes over (the
#: destruction takes milliseconds; a stuck one cost the unwrap the whole _FREE_TIMEOUT_S before)
_SETTLE_S = 0.25


#: xatlas ``ChartOptions`` set for every unwrap, whole meshes and pieces alike. Rounder charts (xatlas's default
#: roundness weight is 0.01) pack more densely: on the shared assets at 20k faces utilisation 0.589-0.753 →
#: 0.621-0.777 (Fox 0.589 → 0.658, spot 0.637 → 0.665), the seven pictures 0.651-0.665 → 0.665, stretch within
#: ±0.0005 of before and seams shorter (``benchmarks/results/atlas_quality.md``, session 21)
CHART_OPTIONS: dict[str, float] = {"roundness_weight": 2.0}

#: xatlas packs by brute force (every 4×4-texel position) for meshes of at most this many faces, where
#: it costs well under a second (benchmarks/atlas_quality.py); larger ones get its random-sample search
BRUTE_FORCE_FACES = 8000


def xatlas_padding(padding: int) -> int:
    """xatlas ``PackOptions.padding`` that keeps charts at least ``padding`` texels apart in the final atlas.

    xatlas rasterises each chart conservatively and dilates it by its padding, so charts land about
    ``padding + 1.5`` of its texels apart; it may overshoot the requested resolution by up to ~30 %, and the
    atlas is scaled down to fit. Measured on the shared assets: xatlas padding 1 → at least 2.25 final
    texels, 2 → 3.75, 3 → 5.75 (``tests/mesh/test_uv_bake.py`` checks the gap).
    """
    if padding <= 0:
        return 0
    return max(1, math.ceil(padding * 1.3 - 1.6))


def _xatlas_options(vertices: np.ndarray, faces: np.ndarray, cfg: UnwrapConfig, resolution: int) -> dict[str, Any]:
    """The keyword arguments of :func:`~meshforge.mesh._unwrap_worker.xatlas_atlas` for ``cfg``."""
    area = float(face_areas(vertices, faces).sum())
    return {
        "resolution": int(resolution),
        "padding": xatlas_padding(cfg.padding),
        "max_chart_area": area * cfg.max_chart_fraction if cfg.max_chart_fraction > 0 else None,
        "brute_force": len(faces) <= BRUTE_FORCE_FACES,
        "gap": int(cfg.padding) if cfg.repack else None,
        "chart_options": dict(CHART_OPTIONS),
    }


def _xatlas_unwrap(vertices: np.ndarray, faces: np.ndarray, cfg: UnwrapConfig, resolution: int) -> dict[str, Any]:
    """xatlas in this process (no time limit)."""
    try:
        import xatlas  # noqa: F401
    except ImportError:  # pragma: no cover
        raise MissingDependency("UV unwrapping needs 'xatlas': pip install xatlas") from None
    return _unwrap_worker.xatlas_atlas(vertices, faces, **_xatlas_options(vertices, faces, cfg, resolution))


#: each new worker process is kept on one CPU, the next of this process's CPUs in turn
#: (:func:`meshforge.mesh._unwrap_worker._pin`: xatlas's task threads then share that CPU instead of crowding all)
PIN_WORKERS = True
_next_cpu = 0
_next_cpu_lock = threading.Lock()


def _worker_cpu() -> int:
    """The CPU the next worker is kept on (-1: none, where pinning is off or not supported)."""
    global _next_cpu
    if not PIN_WORKERS or not hasattr(os, "sched_getaffinity"):
        return -1
    cpus = sorted(os.sched_getaffinity(0))
    with _next_cpu_lock:
        cpu = cpus[_next_cpu % len(cpus)]
        _next_cpu += 1
    return cpu


class _Worker:
    """One unwrap worker process (:mod:`meshforge.mesh._unwrap_worker`) and its two pipes."""

    def __init__(self) -> None:
        # a fresh interpreter (fork + exec), only its pipes and stderr inherited; -P: the script's folder
        # is not put on sys.path (it would shadow modules such as ``types`` with the package's own)
        self.proc = subprocess.Popen(
            [sys.executable, "-P", _unwrap_worker.__file__, str(os.getpid()), str(_worker_cpu())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        self.ready = False
        self.freeing = False  # replied, and not yet said that the reply's atlas is destroyed

    def alive(self) -> bool:
        return self.proc.poll() is None

    def freed_now(self) -> bool:
        """Whether the worker's "freed" message (or its end) is waiting in the pipe."""
        assert self.proc.stdout is not None
        poller = select.poll()
        poller.register(self.proc.stdout.fileno(), select.POLLIN)
        return bool(poller.poll(0))

    def settle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the worker to say its last atlas is destroyed; True when it is ready for
        a request, False when it has ended (a worker stuck in xatlas's destructor is ended here)."""
        if not self.freeing:
            return self.alive()
        assert self.proc.stdout is not None
        try:
            _unwrap_worker.read_frame(self.proc.stdout.fileno(), time.monotonic() + timeout)
        except (TimeoutError, EOFError, OSError):
            self.close(kill=True)
            return False
        self.freeing = False
        return True

    def run(self, request: tuple[Any, ...], time_limit: float) -> dict[str, Any] | str:
        """Send one request; the atlas, or a string saying why there is none (the worker is then ended)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        out, inp = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        try:
            if not self.ready:
                _unwrap_worker.read_frame(inp, time.monotonic() + _START_TIMEOUT_S)
                self.ready = True
            _unwrap_worker.write_frame(out, request)
            status, payload = _unwrap_worker.read_frame(inp, time.monotonic() + time_limit)
        except TimeoutError:
            self.close(kill=True)
            if not self.ready:
                return f"the unwrap worker did not start in {_START_TIMEOUT_S:g} s"
            return f"xatlas exceeded the {time_limit:g} s time limit"
        except (EOFError, BrokenPipeError):
            self.close(kill=True)
            return f"xatlas stopped unexpectedly (exit code {self.proc.returncode})"
        except BaseException:  # e.g. KeyboardInterrupt: the request is abandoned, and so is the worker
            self.close(kill=True)
            raise
        # the worker destroys the atlas after replying and then says so: waited for by settle() before its
        # next request, off this reply's path (xatlas's destructor now and then never returns)
        self.freeing = True
        if status != "ok":
            return f"xatlas failed: {payload}"
        result: dict[str, Any] = payload
        return result

    def close(self, *, kill: bool = False, timeout: float = 5.0) -> None:
        """End the worker: SIGKILL with ``kill``, else close its request pipe and wait (then SIGKILL)."""
        if kill:
            self.proc.kill()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_idle: list[_Worker] = []  # started workers waiting for a request (one per concurrent unwrap at most)
_idle_lock = threading.Lock()


def _forget_workers() -> None:  # in a forked child: the parent's workers are not ours to use
    global _idle_lock, _next_cpu_lock
    _idle.clear()
    _idle_lock = threading.Lock()
    _next_cpu_lock = threading.Lock()


def _close_workers() -> None:
    with _idle_lock:
        workers = list(_idle)
        _idle.clear()
    for w in workers:
        w.close(timeout=1.0)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_workers)
atexit.register(_close_workers)


def start_worker(count: int = 1) -> bool:
    """Start unwrap worker processes now, up to ``count`` idle ones, so a later time-limited :func:`unwrap`
    finds them running (``meshforge serve`` calls this before binding its socket, paying the start-up once;
    the pipeline asks for one per CPU, the most the pieces of a large mesh use, before clean and decimate).

    The kernel's parent-death signal follows the *thread* that starts a worker: a worker started by a
    thread that later ends is killed then, and replaced at the next unwrap.

    Returns:
        True when a worker is running or starting; False where workers are not used (no ``select.poll``,
        e.g. Windows: the unwrap then runs xatlas in-process) or no process could be started.
    """
    if not hasattr(select, "poll"):
        return False
    with _idle_lock:
        live = sum(1 for w in _idle if w.alive())
        try:
            for _ in range(count - live):
                _idle.append(_Worker())
                live += 1
        except OSError:
            return live > 0
    return True


def _take_worker() -> _Worker:
    """An idle live worker, else a new one (raises OSError when none can start)."""
    while True:
        with _idle_lock:
            if not _idle:
                break
            w = _idle.pop()
        if w.settle(_SETTLE_S):
            return w
        w.close()
    return _Worker()


def _give_back(worker: _Worker) -> None:
    """Return a worker to the idle ones; one whose last atlas is not yet destroyed is waited for in a thread
    (up to ``_FREE_TIMEOUT_S``, then ended), so the caller does not wait."""
    if not worker.alive():
        return
    if worker.freeing and not worker.freed_now():
        threading.Thread(target=_settle_then_idle, args=(worker,), name="unwrap-settle", daemon=True).start()
        return
    _settle_then_idle(worker)


def _settle_then_idle(worker: _Worker) -> None:
    if worker.settle(_FREE_TIMEOUT_S):
        with _idle_lock:
            _idle.append(worker)


def _run_requests(
    requests: list[tuple[Any, ...]],
    time_limit: float,
    follow: Callable[[int, dict[str, Any]], list[tuple[Any, ...]]] | None = None,
    feed: Iterable[Callable[[], tuple[Any, ...]]] | None = None,
    fed: int = 0,
) -> list[dict[str, Any]] | str:
    """Run worker requests on up to ``os.cpu_count()`` worker processes at once, all within ``time_limit``
    seconds; the results in order, or a string saying why there are none (the first failure).

    The requests form one queue, the largest meshes first (xatlas's time grows faster than a piece's faces):
    each worker takes the next request when it is done with its last, so one slow piece does not hold back
    the requests that a fixed share would have queued behind it. ``follow(i, result)``, called (under a
    lock) as each request ``i`` succeeds, may return more requests: they join the queue at once, numbered
    after those already known, and their results come back after them.

    ``feed``: more requests made by the calling thread while the workers run (e.g. the pieces of a mesh as its
    split makes them): each item is called under the queue's lock — so a request is numbered as it joins,
    between follow-ups — and its request joins the queue. ``fed``: how many it will yield (the workers to take).
    """
    deadline = time.monotonic() + time_limit
    n_workers = max(1, min(len(requests) + fed, os.cpu_count() or 1))
    requests = list(requests)
    queue = [(-len(r[1]), i) for i, r in enumerate(requests)]
    heapq.heapify(queue)
    cond = threading.Condition()
    busy = [0]  # requests being run: while any is, the queue may still grow
    feeding = [feed is not None]  # the calling thread may still add requests
    # taken (or started) in the calling thread: a worker dies with the thread that started it
    workers: list[_Worker] = []
    try:
        for _ in range(n_workers):
            workers.append(_take_worker())
    except OSError as exc:
        for w in workers:
            _give_back(w)
        return f"the unwrap worker could not start: {one_line(exc)}"
    results: list[dict[str, Any] | str | None] = [None] * len(requests)
    failed = threading.Event()

    def drive(first: int) -> None:
        while True:
            with cond:
                while not queue and (busy[0] or feeding[0]) and not failed.is_set():
                    cond.wait()
                if not queue or failed.is_set():
                    return
                i = heapq.heappop(queue)[1]
                busy[0] += 1
            left = deadline - time.monotonic()
            out: dict[str, Any] | str
            if left <= 0:
                out = f"xatlas exceeded the {time_limit:g} s time limit"
            else:
                try:  # a worker whose last atlas is not destroyed soon (see _Worker.run) is replaced
                    worker = workers[first] if workers[first].settle(_SETTLE_S) else _Worker()
                except OSError as exc:
                    out = f"the unwrap worker could not start: {one_line(exc)}"
                else:
                    workers[first] = worker
                    try:
                        out = worker.run(requests[i], left)
                    except Exception as exc:  # pragma: no cover - run answers with a reason; never leave others waiting
                        out = f"an unwrap worker failed: {one_line(exc)}"
            with cond:
                try:
                    results[i] = out
                    if not isinstance(out, str) and follow is not None:
                        for extra in follow(i, out):
                            heapq.heappush(queue, (-len(extra[1]), len(requests)))
                            requests.append(extra)
                            results.append(None)
                except Exception as exc:  # a follow-up that fails ends the run, with its reason
                    out = results[i] = f"the unwrap's follow-up of piece {i} failed: {one_line(exc)}"
                finally:
                    if isinstance(out, str):
                        failed.set()
                    busy[0] -= 1
                    cond.notify_all()
            if isinstance(out, str):
                return

    def add(make: Callable[[], tuple[Any, ...]]) -> None:
        with cond:
            request = make()
            heapq.heappush(queue, (-len(request[1]), len(requests)))
            requests.append(request)
            results.append(None)
            cond.notify()

    try:
        if n_workers == 1 and feed is None:
            drive(0)
        else:
            threads = [threading.Thread(target=drive, args=(i,), name=f"unwrap-{i}") for i in range(n_workers)]
            for t in threads:
                t.start()
            try:
                for make in feed or ():
                    if failed.is_set():
                        break
                    add(make)
            finally:  # (also when making a request raised: the workers finish what they have, then it propagates)
                with cond:
                    feeding[0] = False
                    cond.notify_all()
                for t in threads:
                    t.join()
    finally:
        for w in workers:
            _give_back(w)
    for r in results:
        if isinstance(r, str):
            return r
    if any(r is None for r in results):  # pragma: no cover - a thread ended without a result or a reason
        return "an unwrap worker ended without a result"
    return [r for r in results if isinstance(r, dict)]


def _run_with_limit(
    vertices: np.ndarray, faces: np.ndarray, cfg: UnwrapConfig, resolution: int
) -> dict[str, Any] | str:
    """Run xatlas in an unwrap worker process; the result dict, or a string saying why there is none."""
    if cfg.time_limit <= 0 or not hasattr(select, "poll"):
        return _xatlas_unwrap(vertices, faces, cfg, resolution)
    request = (vertices, faces, _xatlas_options(vertices, faces, cfg, resolution), TEST_DELAY_S)
    try:
        worker = _take_worker()
    except OSError as exc:
        return f"the unwrap worker could not start: {one_line(exc)}"
    result = worker.run(request, cfg.time_limit)
    _give_back(worker)
    return result


def split_pieces(vertices: np.ndarray, faces: np.ndarray, piece_faces: int) -> list[np.ndarray]:
    """Cut a mesh's faces into pieces of at most ``piece_faces`` faces by median cuts of their centroids.

    Each cut halves a piece across the longest side of its centroids' bounding box (a k-d tree's split, by
    ``np.argpartition``), so pieces are compact in space and about equal in size (between half and all of
    ``piece_faces``).

    Args:
        vertices: ``[V, 3]`` float positions. faces: ``[F, 3]`` integer indices. piece_faces: ``>= 1``.

    Returns:
        Face index arrays (int64), together a partition of ``range(F)``, each sorted (:func:`iter_pieces`'s).
    """
    return list(iter_pieces(vertices, faces, piece_faces))


def iter_pieces(vertices: np.ndarray, faces: np.ndarray, piece_faces: int) -> Iterator[np.ndarray]:
    """:func:`split_pieces`' pieces one by one, as the cuts make them (depth first: the first after as many cuts
    as the tree is deep)."""
    centroids = vertices[faces].mean(axis=1)
    stack = [np.arange(len(faces))]
    while stack:
        idx = stack.pop()
        if len(idx) <= piece_faces:
            yield np.sort(idx)
            continue
        c = centroids[idx]
        axis = int(np.argmax(c.max(axis=0) - c.min(axis=0)))
        half = len(idx) // 2
        order = np.argpartition(c[:, axis], half)  # a median cut needs no full sort
        stack += [idx[order[half:]], idx[order[:half]]]


def count_pieces(n_faces: int, piece_faces: int) -> int:
    """How many pieces :func:`split_pieces` makes of ``n_faces`` faces (halving until at most ``piece_faces``)."""
    if n_faces <= piece_faces:
        return 1
    half = n_faces // 2
    return count_pieces(half, piece_faces) + count_pieces(n_faces - half, piece_faces)


#: a mesh of more faces than this is always cut into pieces: xatlas's time grows faster than its face count
LARGE_MESH_FACES = 24_000
#: pieces a large mesh is cut into, at least (more when they would exceed MAX_PIECE_FACES): each is a request to a
#: worker and adds charts to pack
MAX_PIECES = 64
#: faces in a piece at most, whatever the mesh's size: xatlas's time per face grows with the piece (a noisy
#: isosurface decimated to 200k faces: 45 µs a face in pieces of 780, 100 µs in pieces of 1,560 or 3,120)
MAX_PIECE_FACES = 1600
#: more charts than this are not packed (the per-face atlas instead): the packer handles each chart in Python,
#: and a random checkpoint's TRELLIS.2 surface of 753,619 fragments would keep it busy for many minutes
MAX_PACK_CHARTS = 20_000
#: each piece's stretch is measured by its worker process (in parallel) rather than by the follow-up that decides on
#: redoing it, which runs under the queue's lock (0.9 ms a piece on an H200's host; False: measured there)
STRETCH_IN_WORKER = True
#: a piece whose charts' L2 stretch exceeds this is unwrapped again in two halves (whole-mesh xatlas gives
#: 1.001–1.011 on the shared assets)
PIECE_STRETCH = 1.05
#: pieces per request to the unwrap workers: each request a batch of pieces in one xatlas atlas, its task threads on
#: all the CPUs (:func:`~meshforge.mesh._unwrap_worker.xatlas_charts`), the requests side by side, the first starting
#: while the mesh is still being cut. A fixed number, not one from the CPU count: xatlas's packing of a batch, thrown
#: away, still leaves its mark on the charts (turned, resized), so the batches are the same on every machine. The 256³
#: benchmark surface's 64 pieces on an H200's 16-core host, the xatlas part of the unwrap: 0.14-0.15 s in one batch,
#: 0.105-0.11 s in 4, 0.10-0.12 s in 8, 0.095-0.10 s in 16, against 0.11-0.14 s a piece per request in 16 workers
#: (``benchmarks/results/gpu_finish_h200.md``)
PIECES_PER_BATCH = 4
#: levels of halving a piece whose charts stay over PIECE_STRETCH
_REDO_LEVELS = 3
#: the pieces' packing starts at this utilisation and keeps the first layout that fits (a layout costs 0.13-0.3 s
#: for 190 charts on one core): the quick layouts (below) of the seven pictures' captured atlases and the 256³
#: benchmark surface's at 0.66 came out 972-1017 texels tall for 1024 (all fit), at 0.665 988-1053 (two of eight
#: too tall; the heights move by ±3 % from one scale to the next: 0.655 made one 1038 tall)
_PACK_START = 0.66
_PACK_ATTEMPTS = 1
#: quarter turns of the pieces' first layout (the packing's search halved): the captured atlases of the seven shared
#: pictures at 20k faces and of the GPU benchmark's surfaces fit _PACK_START with two turns but one (skimage's
#: coffee photo, then laid out again with four); 0.16-0.26 s instead of 0.25-0.41 s a layout on 2 cores
_PACK_QUICK_TURNS = 2
#: quick layouts tried before the full search: the first at _PACK_START, the next ones at the scale the last's height
#: suggests (kept above _PACK_QUICK_FLOOR): a first layout that did not fit cost a full search (0.3-0.5 s on an H200's
#: host at 20k faces, 1.35 s at 50k)
_PACK_QUICK_LAYOUTS = 3
#: no quick layout is tried at this fraction of _PACK_START or below (0.650): the second one comes between the two
#: where the first's height would put it lower, and a surface whose atlas is far from fitting goes to the full
#: search, which finds a denser layout than a quick one would (a 9k-face lumpy surface at 512²: 0.578 against 0.563)
_PACK_QUICK_FLOOR = 0.985


def piece_size(vertices: np.ndarray, faces: np.ndarray, piece_faces: int) -> int | None:
    """The size of the pieces a mesh is unwrapped in (:func:`split_pieces`), or None to unwrap it whole.

    A mesh of more than :data:`LARGE_MESH_FACES` faces is cut, into pieces of
    ``max(piece_faces, min(faces / MAX_PIECES, MAX_PIECE_FACES))`` faces, for speed. A smaller one is cut into pieces of
    ``piece_faces`` when it has more than three pieces' worth of faces and its connected parts average more
    than two pieces' worth: small pieces make compact charts that pack densely (the seven shared pictures'
    assets at 20k faces: utilisation 0.516–0.602 → 0.651–0.665, stretch lower, 10 % more seam length;
    ``benchmarks/results/atlas_quality.md``), while a model already made of many small parts (FlightHelmet:
    84 parts, 231 faces each) has small charts, and cutting it only adds seams (0.599 → 0.465).

    Args:
        vertices: ``[V, 3]`` positions. faces: ``[F, 3]`` integer indices.
        piece_faces: ``UnwrapConfig.piece_faces`` (0: never cut).

    Returns:
        The largest number of faces in a piece, or None.
    """
    n = len(faces)
    if piece_faces <= 0 or n <= 3 * piece_faces:
        return None
    size = max(piece_faces, min(math.ceil(n / MAX_PIECES), MAX_PIECE_FACES))
    if n > LARGE_MESH_FACES:
        return size
    _, label = vertex_components(len(vertices), faces)
    parts = len(np.unique(label[np.asarray(faces)[:, 0]]))
    return size if n / parts > 2 * piece_faces else None


def _unwrap_pieces(
    vertices: np.ndarray,
    faces: np.ndarray,
    cfg: UnwrapConfig,
    resolution: int,
    size: int,
    device: str | None = None,
) -> dict[str, Any] | str:
    """xatlas on pieces of the mesh, in batches (:data:`PIECES_PER_BATCH`) in parallel worker processes, then one
    packing of all their charts.

    Each chart comes out of the workers at the scale of its surface (UV area = surface area × the chart's L2
    stretch, :func:`~meshforge.mesh._unwrap_worker.xatlas_charts`): texel density is even over the whole atlas but
    where a chart's stretch asks for more. The result
    has :func:`~meshforge.mesh._unwrap_worker.xatlas_atlas`'s keys, faces in the input's order, and
    ``seconds_charts`` / ``seconds_pack`` (wall time of the pieces' xatlas runs and of the packing); a string
    says why there is none. ``device``: :func:`~meshforge.mesh.pack.pack_charts`'s.
    """
    t_start = time.perf_counter()
    limited = cfg.time_limit > 0 and hasattr(select, "poll")
    t_end = time.monotonic() + cfg.time_limit
    area = face_areas(vertices, faces)
    max_chart = float(area.sum()) * cfg.max_chart_fraction if cfg.max_chart_fraction > 0 else None
    options: dict[str, Any] = {
        "batch": True,
        "max_chart_area": max_chart,
        "chart_options": dict(CHART_OPTIONS),
        "stretch": STRETCH_IN_WORKER,
    }

    # xatlas now and then lets a badly distorted chart through (one chart of 211 faces at L2 stretch 3.6 in
    # a 310-face piece of a generated typewriter); such a piece is redone in two halves, and a half that is still
    # distorted in two halves again, up to _REDO_LEVELS times (a 1.4M-face noisy isosurface decimated to 200k
    # faces kept an atlas stretch of 1.31 after one level, 1.03 after more). The halves replace their piece
    # only when their stretch together (area-weighted, as the atlas's) is lower: on a noisy surface a third of
    # the halvings made it higher (a 1.058 piece's halves: 1.39 and 1.08). The halves of a batch's pieces join the
    # workers' queue, as one batch, as soon as that batch is back.
    nodes: list[dict[str, Any]] = []  # per piece: faces, used vertices, level, parent, halves, result, stretch
    batches: list[list[int]] = []  # per request (a batch of pieces): its pieces' nodes

    def piece(idx: np.ndarray, level: int, parent: int | None) -> tuple[int, tuple[np.ndarray, np.ndarray]]:
        used, local = np.unique(faces[idx], return_inverse=True)
        nodes.append({"idx": idx, "used": used, "level": level, "parent": parent, "halves": [], "split": False})
        return len(nodes) - 1, (vertices[used], local.reshape(-1, 3).astype(np.int32))

    def batch(made: list[tuple[int, tuple[np.ndarray, np.ndarray]]]) -> tuple[Any, ...]:
        batches.append([k for k, _ in made])
        return ([m[0] for _, m in made], [m[1] for _, m in made], options, TEST_DELAY_S)

    def halve(k: int) -> list[tuple[int, tuple[np.ndarray, np.ndarray]]]:
        node = nodes[k]
        if node["level"] >= _REDO_LEVELS or len(node["idx"]) <= 1 or not node["stretch"] > PIECE_STRETCH:
            return []
        out = []
        for half in split_pieces(vertices, faces[node["idx"]], (len(node["idx"]) + 1) // 2):
            node["halves"].append(len(nodes))
            out.append(piece(node["idx"][half], node["level"] + 1, k))
        return out

    def follow(k: int, part: dict[str, Any]) -> list[tuple[int, tuple[np.ndarray, np.ndarray]]]:
        node = nodes[k]
        node["part"] = part
        if "stretch" in part:  # measured by the worker
            node["stretch"] = part["stretch"]
        else:
            node["stretch"] = uv_stretch(vertices[node["used"]][part["vmapping"]], part["uv"], part["faces"])
        if node["parent"] is None:
            return halve(k)
        parent = nodes[node["parent"]]
        halves = [nodes[j] for j in parent["halves"]]
        if any("part" not in h for h in halves):
            return []  # the other half is not back yet
        weights = [float(area[h["idx"]].sum()) for h in halves]
        together = math.sqrt(sum(w * h["stretch"] ** 2 for w, h in zip(weights, halves)) / max(sum(weights), 1e-30))
        if not together < parent["stretch"]:
            return []  # the piece stays as it is: its halves are no better
        parent["split"] = True
        return [r for j in parent["halves"] for r in halve(j)]

    def follow_batch(i: int, result: dict[str, Any]) -> list[tuple[Any, ...]]:
        made = [m for k, part in zip(batches[i], result["atlases"], strict=True) for m in follow(k, part)]
        return [batch(made)] if made else []

    roots: list[int] = []  # the pieces' nodes (their follow-ups' nodes may come between them)

    def root(group: list[np.ndarray]) -> Callable[[], tuple[Any, ...]]:
        def make() -> tuple[Any, ...]:
            made = [piece(idx, 0, None) for idx in group]
            roots.extend(k for k, _ in made)
            return batch(made)

        return make

    n_pieces = count_pieces(len(faces), size)
    per = max(1, PIECES_PER_BATCH)

    def groups() -> Iterator[list[np.ndarray]]:
        group: list[np.ndarray] = []
        for idx in iter_pieces(vertices, faces, size):
            group.append(idx)
            if len(group) == per:
                yield group
                group = []
        if group:
            yield group

    if limited:
        # the batches go to the workers as the cuts make them: the first starts while the mesh is still being cut
        left = t_end - time.monotonic()
        got = (
            _run_requests([], left, follow_batch, feed=(root(g) for g in groups()), fed=math.ceil(n_pieces / per))
            if left > 0
            else f"xatlas exceeded the {cfg.time_limit:g} s time limit"
        )
        if isinstance(got, str):
            return got
    else:  # in this process, one batch after another (xatlas's own threads run a batch's pieces side by side)
        todo = [root(g)() for g in groups()]
        charts_options = {k: v for k, v in options.items() if k != "batch"}
        i = 0
        while i < len(todo):
            meshes = list(zip(todo[i][0], todo[i][1], strict=True))
            todo += follow_batch(i, {"atlases": _unwrap_worker.xatlas_charts(meshes, **charts_options)})
            i += 1

    def leaves(k: int) -> list[int]:
        return [j for h in nodes[k]["halves"] for j in leaves(h)] if nodes[k]["split"] else [k]

    final = [j for k in roots for j in leaves(k)]
    pieces = [nodes[j]["idx"] for j in final]
    used_of = [nodes[j]["used"] for j in final]
    parts = [nodes[j]["part"] for j in final]
    redone_count = sum(1 for node in nodes if node["parent"] is not None)
    charts = sum(int(part["charts"]) for part in parts)
    if charts > MAX_PACK_CHARTS:
        return f"{charts} charts (a surface of many separate fragments), too many to pack"
    # each chart comes at the scale of its surface (xatlas_charts): texel density is even over the atlas
    uv_all, faces_all, source = [], [], []
    offset = 0
    for used, part in zip(used_of, parts):
        uv_all.append(part["uv"])
        faces_all.append(part["faces"] + offset)
        source.append(used[part["vmapping"]])
        offset += len(part["uv"])
    uv_cat, f_cat = np.concatenate(uv_all), np.concatenate(faces_all)
    from . import pack  # the pieces' charts are packed here: each chart is a UV-connected component

    t_pack = time.perf_counter()

    # the pieces' layout is taken at the first that fits _PACK_START: placing small charts texel-exactly would not
    # raise it, and on an H200's host it cost 0.03-0.05 s (captured 20k- and 50k-face atlases). The first layouts
    # (_PACK_QUICK_LAYOUTS) try each chart in _PACK_QUICK_TURNS quarter turns only; where none fits, the full search
    # runs.
    def layout(**search: Any) -> tuple[np.ndarray, float]:
        return pack.pack_charts(
            uv_cat, f_cat, int(resolution), int(cfg.padding), start=_PACK_START, device=device, exact_rows=0, **search
        )

    uv_packed = None
    try:
        uv_packed, _ = layout(
            attempts=1,
            max_layouts=_PACK_QUICK_LAYOUTS,
            turns=_PACK_QUICK_TURNS,
            floor=_PACK_START * _PACK_QUICK_FLOOR,
        )
    except (ValueError, RuntimeError):
        pass  # the quick layouts do not fit (or the input is bad: the full search below says so)
    if uv_packed is None:
        try:
            uv_packed, _ = layout(attempts=_PACK_ATTEMPTS, max_layouts=16)
        except (ValueError, RuntimeError) as exc:
            return f"packing the charts of {len(pieces)} pieces failed: {one_line(exc)}"
    result: dict[str, Any] = {
        "vmapping": np.concatenate(source),
        "faces": f_cat,
        "uv": uv_packed,
        "width": int(resolution),
        "height": int(resolution),
        "atlas_count": 1,
        "charts": int(pack.uv_charts(f_cat, len(uv_cat)).max()) + 1,
        "packer": "meshforge",
    }
    # back to the input's face order (the pieces' faces come piece by piece)
    order = np.empty(len(faces), dtype=np.int64)
    order[np.concatenate(pieces)] = np.arange(len(faces))
    result["faces"] = result["faces"][order]
    result["pieces"] = len(pieces)
    result["pieces_redone"] = redone_count  # the halves of the pieces redone for their stretch, at every level
    result["seconds_charts"] = round(t_pack - t_start, 4)
    result["seconds_pack"] = round(time.perf_counter() - t_pack, 4)
    return result


def face_grid_atlas(n_faces: int, resolution: int, padding: int) -> np.ndarray:
    """The fallback atlas: faces in pairs, each pair in one square cell of a regular grid.

    Returns:
        ``[F, 3, 2]`` float64 UVs in [0, 1] (glTF convention: v down), one triangle per face with its
        corners (0,0), (1,0), (0,1) or (1,1), (0,1), (1,0) of its cell, inset by ``padding`` texels.
    """
    cells = max(1, (n_faces + 1) // 2)
    g = int(math.ceil(math.sqrt(cells)))
    cell = resolution / g
    inset = min(padding + 0.5, cell * 0.2)
    idx = np.arange(n_faces)
    c = idx // 2
    ox = (c % g) * cell
    oy = (c // g) * cell
    lo, hi = inset, cell - inset * (1.0 + math.sqrt(2.0))
    lower = np.array([[lo, lo], [hi, lo], [lo, hi]])
    upper = np.array([[cell - lo, cell - lo], [cell - hi, cell - lo], [cell - lo, cell - hi]])
    tri = np.where((idx % 2 == 0)[:, None, None], lower[None], upper[None])
    tri = tri + np.stack([ox, oy], axis=1)[:, None, :]
    return tri / resolution


def unwrap(
    mesh: Mesh, cfg: UnwrapConfig, texture_size: int, device: str | None = None, *, quality: bool = True
) -> tuple[Mesh, dict[str, Any]]:
    """UV-unwrap a mesh into one atlas packed for ``texture_size²`` texels (the baked maps' size).

    Vertices are split along chart seams; vertex normals (area-weighted, computed before splitting) are
    carried over so shading stays smooth across seams. Faces whose UV triangle has zero area are counted
    in the report (they take their colour from the seam fill of neighbouring texels).

    Args:
        mesh: a decimated, cleaned mesh (no UVs needed).
        cfg: ``padding`` (texels), ``max_chart_fraction``, ``time_limit`` (s), ``engine``.
        texture_size: side of the maps the atlas is packed for, in texels (``BakeConfig.texture_size``).
        device: a torch device (``"cuda:0"``) where the packing of a mesh unwrapped in pieces searches its
            free offsets (:func:`~meshforge.mesh.pack.pack_charts`: the same layout as on the host, faster);
            None: numpy.
        quality: add the figures of :func:`atlas_quality` to the counts (False: the caller computes them, e.g.
            while the bake runs, as :func:`meshforge.pipeline.finish` does).

    Returns:
        ``(mesh with uv and normals, counts)``; counts hold ``engine`` (the one that produced the atlas),
        ``charts``, ``packer`` (xatlas engine: ``"meshforge"`` when :func:`~meshforge.mesh.pack.pack_charts`
        re-packed xatlas's charts, ``"xatlas"`` when xatlas's own packing covered more), the figures of
        :func:`atlas_quality` (``utilisation``, ``stretch``, ``texels_never_written``,
        ``uv_degenerate_faces``) and a ``fallback`` reason when xatlas could not
        be used.

    Raises:
        InputError: unknown engine.
    """
    if cfg.engine not in ("xatlas", "faces"):
        raise InputError(f"unknown unwrap engine {cfg.engine!r} (choices: xatlas, faces)")
    normals = mesh.normals if mesh.normals is not None else vertex_normals(mesh.vertices, mesh.faces).astype(np.float32)
    counts: dict[str, Any] = {"engine": cfg.engine}
    result: dict[str, Any] | str | None = None
    if cfg.engine == "xatlas" and mesh.n_faces > 0:
        size = piece_size(mesh.vertices, mesh.faces, cfg.piece_faces)
        if size is not None:
            result = _unwrap_pieces(mesh.vertices, mesh.faces, cfg, texture_size, size, device)
        else:
            result = _run_with_limit(mesh.vertices, mesh.faces, cfg, texture_size)
        if isinstance(result, dict) and result["atlas_count"] != 1:
            result = f"xatlas produced {result['atlas_count']} atlases"
    if isinstance(result, dict):
        scale = 1.0 / max(result["width"], result["height"])
        uv = result["uv"] * np.array([result["width"], result["height"]]) * scale
        vm = result["vmapping"]
        out = Mesh(
            vertices=mesh.vertices[vm],
            faces=result["faces"],
            normals=normals[vm],
            uv=uv.astype(np.float32),
            colors=None if mesh.colors is None else mesh.colors[vm],
        )
        counts.update(charts=result["charts"], packer=result.get("packer", "xatlas"))
        for key in ("pieces", "pieces_redone", "seconds_charts", "seconds_pack"):
            if key in result:
                counts[key] = result[key]
    else:
        if isinstance(result, str):
            counts["fallback"] = result
        counts["engine"] = "faces"
        tri_uv = face_grid_atlas(mesh.n_faces, texture_size, cfg.padding)
        flat = mesh.faces.reshape(-1)
        out = Mesh(
            vertices=mesh.vertices[flat],
            faces=np.arange(flat.size, dtype=np.int32).reshape(-1, 3),
            normals=normals[flat],
            uv=tri_uv.reshape(-1, 2).astype(np.float32),
            colors=None if mesh.colors is None else mesh.colors[flat],
        )
        counts.update(charts=out.n_faces)
    assert out.uv is not None
    if quality:
        counts.update(atlas_quality(out, texture_size))
    return out, counts


def atlas_quality(mesh: Mesh, texture_size: int, *, coverage_figure: bool = True) -> dict[str, Any]:
    """The figures the unwrap stage reports for an atlas (``meshforge inspect`` gives the same ones).

    Args:
        mesh: a mesh with ``uv`` (glTF convention).
        texture_size: side of the maps, in texels.

    Returns:
        ``utilisation`` (:func:`~meshforge.geometry.raster.uv_utilisation`: UV triangle area over the unit
        square), ``stretch`` (:func:`~meshforge.geometry.raster.uv_stretch`: normalised L2 stretch, Sander et
        al. 2001; 1 is isometric; None when undefined), ``texels_never_written`` (the fraction of texels
        farther than :data:`~meshforge.geometry.raster.DILATION_TEXELS` from every covered one, on a raster of
        the texture size, at most :data:`~meshforge.geometry.raster.MAX_UV_RASTER` per side) and
        ``uv_degenerate_faces`` (faces whose UV triangle has less than 10⁻⁶ texel² of area) and
        ``seam_ratio`` (:func:`~meshforge.geometry.raster.uv_seam_ratio`: seam length over the square root of
        the surface area).
        coverage_figure: False leaves ``texels_never_written`` None (the atlas is not rasterised: the caller has
            the figure from a bake's own raster of the same size, e.g. :func:`meshforge.gpu.bake.bake`'s).

    Raises:
        ValueError: the mesh has no UVs.
    """
    if mesh.uv is None:
        raise ValueError("atlas_quality needs a mesh with UVs")
    unwritten = None
    if coverage_figure:
        side = max(1, min(int(texture_size), MAX_UV_RASTER))
        covered = coverage(mesh.uv[mesh.faces].astype(np.float64) * side, side, side)
        unwritten = round(float(never_written(covered, DILATION_TEXELS).mean()), 4)
    stretch = uv_stretch(mesh.vertices, mesh.uv, mesh.faces)
    return {
        "utilisation": round(uv_utilisation(mesh.uv, mesh.faces), 4),
        "stretch": round(stretch, 4) if math.isfinite(stretch) else None,
        "texels_never_written": unwritten,
        "uv_degenerate_faces": int((uv_triangle_areas(mesh.uv, mesh.faces) * texture_size**2 < 1e-6).sum()),
        "seam_ratio": uv_seam_ratio(mesh.vertices, mesh.uv, mesh.faces),
    }
