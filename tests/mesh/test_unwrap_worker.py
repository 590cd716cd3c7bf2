"""The time-limited unwrap runs xatlas in a worker process that cannot outlive its parent nor hold its sockets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from meshforge.config import UnwrapConfig
from meshforge.geometry.raster import uv_triangle_areas
from meshforge.geometry.topology import face_areas
from meshforge.mesh import uv
from meshforge.mesh.uv import unwrap
from meshforge.types import Mesh

from ..procs import alive, children, kill_all, socket_inodes, wait_gone


def grid(n: int = 50) -> Mesh:
    """A wavy ``n``×``n`` height field: ``2n²`` faces (its atlas is larger than a pipe's 64 KiB buffer)."""
    u, v = np.meshgrid(np.linspace(0, 1, n + 1), np.linspace(0, 1, n + 1))
    vertices = np.stack([u, v, 0.1 * np.sin(6 * u) * np.cos(5 * v)], axis=-1).reshape(-1, 3).astype(np.float32)
    i = np.arange(n)[:, None] * (n + 1) + np.arange(n)[None, :]
    quads = np.stack([i, i + 1, i + n + 2, i + n + 1], axis=-1).reshape(-1, 4)
    faces = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]]).astype(np.int32)
    return Mesh(vertices=vertices, faces=faces)


PARENT = textwrap.dedent(
    """
    import os, socket, sys
    sys.path.insert(0, {root!r})
    from meshforge.config import UnwrapConfig
    from meshforge.mesh import uv
    from meshforge.mesh.uv import unwrap
    from tests.mesh.test_unwrap_worker import grid

    uv.TEST_DELAY_S = 30.0  # xatlas "runs" for 30 s: the parent is killed during it
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    print(os.fstat(server.fileno()).st_ino, flush=True)
    unwrap(grid(), UnwrapConfig(time_limit=60), 256)
    print("done", flush=True)
    """
)


def test_a_killed_parent_leaves_no_unwrap_process_and_the_worker_holds_no_inherited_socket(tmp_path):
    root = str(Path(__file__).resolve().parents[2])
    parent = subprocess.Popen([sys.executable, "-c", PARENT.format(root=root)], stdout=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        assert parent.stdout is not None
        listening = int(parent.stdout.readline())
        end = time.monotonic() + 30
        while not workers and time.monotonic() < end and parent.poll() is None:
            workers = children(parent.pid)
            time.sleep(0.05)
        assert workers, "the unwrap started no worker process"
        time.sleep(1.5)  # let the worker start and take the request
        assert all(alive(w) for w in workers)
        assert listening in socket_inodes(parent.pid)
        for w in workers:
            assert listening not in socket_inodes(w), "the unwrap worker holds the parent's listening socket"

        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert wait_gone(workers, 10) == [], "an unwrap process outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        kill_all(workers)


def test_the_worker_gives_the_in_process_result():
    mesh = grid(20)
    inline, c0 = unwrap(mesh, UnwrapConfig(time_limit=0), 256)
    worker, c1 = unwrap(mesh, UnwrapConfig(), 256)
    assert c1["engine"] == "xatlas" and c0 == c1
    for name in ("vertices", "faces", "uv", "normals"):
        assert np.array_equal(getattr(inline, name), getattr(worker, name)), name


def test_a_stuck_unwrap_is_killed_at_the_time_limit_and_the_next_one_runs(monkeypatch):
    mesh = grid(10)
    monkeypatch.setattr(uv, "TEST_DELAY_S", 30.0)
    before = set(children(os.getpid()))
    _, counts = unwrap(mesh, UnwrapConfig(time_limit=1.0), 128)
    assert counts["engine"] == "faces" and "time limit" in counts["fallback"]
    assert [p for p in children(os.getpid()) if p not in before] == [], "the stuck worker was not stopped"
    monkeypatch.setattr(uv, "TEST_DELAY_S", 0.0)
    out, counts = unwrap(mesh, UnwrapConfig(time_limit=30.0), 128)
    assert counts["engine"] == "xatlas" and "fallback" not in counts
    assert out.uv is not None and out.uv.min() >= 0 and out.uv.max() <= 1


def test_pieces_give_the_in_process_result_and_their_workers_stay_for_the_next_unwrap(monkeypatch):
    """The pieces of a large mesh run on several workers at once (at least two here, also on one CPU); the
    workers are started by the calling thread, not the short-lived threads that drive them (a worker dies
    with the thread that started it), so the next unwrap finds the same processes; the atlas is the one
    the in-process path makes."""
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(uv, "PIECES_PER_BATCH", 1)  # a request per piece: four requests
    mesh = grid(40)  # 3,200 faces
    cfg = UnwrapConfig(piece_faces=800)
    inline, c0 = unwrap(mesh, UnwrapConfig(piece_faces=800, time_limit=0), 256)
    out, c1 = unwrap(mesh, cfg, 256)
    assert c1["engine"] == "xatlas" and c1["pieces"] == 4 and c1["seconds_charts"] > 0
    timeless = [{k: v for k, v in c.items() if not k.startswith("seconds_")} for c in (c0, c1)]
    assert timeless[0] == timeless[1]  # the same atlas figures; only the wall times differ
    for name in ("vertices", "faces", "uv"):
        assert np.array_equal(getattr(inline, name), getattr(out, name)), name
    time.sleep(0.5)  # a worker killed with its thread would be gone by now
    first = {w.proc.pid for w in uv._idle if w.alive()}
    assert len(first) >= 4
    unwrap(mesh, cfg, 256)
    assert {w.proc.pid for w in uv._idle if w.alive()} == first


def test_the_pipeline_starts_the_worker_before_the_unwrap_stage():
    """The worker's start-up (a fresh interpreter importing numpy and xatlas) overlaps clean and decimate, so
    a one-shot ``generate`` does not wait for it in the unwrap stage."""
    import meshforge
    from meshforge.config import PipelineConfig

    uv._close_workers()
    seen: dict[str, list[int]] = {}

    def progress(stage: str, index: int, total: int) -> None:
        seen[stage] = [w.proc.pid for w in uv._idle if w.alive()]

    cfg = PipelineConfig().with_options(faces=1500, texture_size=256)
    picture = np.zeros((96, 96, 3), dtype=np.uint8)
    picture[24:72, 30:66] = (200, 120, 40)
    result = meshforge.generate(picture, "inflate", cfg, device="cpu", on_progress=progress)
    unwrap_stage = next(s for s in result.report.stages if s.name == "unwrap")
    assert unwrap_stage.counts["engine"] == "xatlas"
    assert seen["unwrap"], "no unwrap worker was running when the unwrap stage began"
    assert all(alive(pid) for pid in seen["unwrap"])


def test_a_worker_stuck_in_xatlas_destructor_keeps_its_atlas_and_is_replaced(monkeypatch):
    """xatlas's atlas destructor now and then never returns (one of its task-scheduler threads misses its
    wake-up; seen on the CI machine in the middle of the pieces of a 198k-face unwrap). The worker replies
    first and destroys the atlas after, then says so; its reply is kept at once, a worker that has not said so
    within ``_SETTLE_S`` when its next piece comes is ended and the piece runs on a new worker, and one given
    back stuck is ended after ``_FREE_TIMEOUT_S`` off the caller's path: the unwrap is the in-process one, in
    seconds, and no worker is left asleep."""
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    mesh = grid(40)  # 3,200 faces: 4 pieces of 800, two per worker
    inline, _ = unwrap(mesh, UnwrapConfig(piece_faces=800, time_limit=0), 256)
    before = set(children(os.getpid()))
    monkeypatch.setattr(uv, "TEST_DELAY_S", -30.0)  # every destructor "hangs" for 30 s after the reply
    t = time.monotonic()
    out, counts = unwrap(mesh, UnwrapConfig(piece_faces=800, time_limit=60.0), 256)
    took = time.monotonic() - t
    assert counts["engine"] == "xatlas" and "fallback" not in counts and counts["pieces"] == 4
    for name in ("vertices", "faces", "uv"):
        assert np.array_equal(getattr(inline, name), getattr(out, name)), name
    assert took < 20.0, took  # each stuck worker ended, not waited out
    for _ in range(50):  # the last two, given back stuck, are ended after _FREE_TIMEOUT_S in the background
        stuck = [p for p in children(os.getpid()) if p not in before]
        if not stuck:
            break
        time.sleep(0.1)
    assert stuck == [], "a worker stuck in the destructor was left running"
    monkeypatch.setattr(uv, "TEST_DELAY_S", 0.0)
    out2, counts2 = unwrap(mesh, UnwrapConfig(piece_faces=800, time_limit=60.0), 256)  # fresh workers
    assert counts2["engine"] == "xatlas" and np.array_equal(out2.uv, inline.uv)


OPTIONS = {"resolution": 64, "padding": 1, "max_chart_area": None}


def test_each_new_worker_is_kept_on_the_next_cpu_and_unpinned_when_pinning_is_off(monkeypatch):
    """A new worker process runs on one CPU, the next of the parent's in turn (xatlas's task threads then share
    it), and its atlas is the same; with ``PIN_WORKERS`` off it may use every CPU the parent may."""
    mine = sorted(os.sched_getaffinity(0))
    monkeypatch.setattr(uv, "_next_cpu", 0)
    mesh = grid(8)
    inline = uv._unwrap_worker.xatlas_atlas(mesh.vertices, mesh.faces, **OPTIONS)
    workers = [uv._Worker() for _ in range(len(mine) + 1)]
    try:
        for w in workers:
            got = w.run((mesh.vertices, mesh.faces, OPTIONS, 0.0), 30.0)
            assert isinstance(got, dict) and np.array_equal(got["uv"], inline["uv"])
        cpus = [os.sched_getaffinity(w.proc.pid) for w in workers]
        assert all(len(c) == 1 for c in cpus)
        assert {next(iter(c)) for c in cpus} == set(mine)  # every CPU once, then the first again
        monkeypatch.setattr(uv, "PIN_WORKERS", False)
        free = uv._Worker()
        workers.append(free)
        got = free.run((mesh.vertices, mesh.faces, OPTIONS, 0.0), 30.0)
        assert isinstance(got, dict) and np.array_equal(got["faces"], inline["faces"])
        assert sorted(os.sched_getaffinity(free.proc.pid)) == mine
    finally:
        for w in workers:
            w.close(kill=True)


def _two_requests(first: tuple, second: tuple) -> tuple[Any, set[int], Any]:
    """Two requests to one worker, the second once the first's atlas is freed (:meth:`uv._Worker.settle`); returns
    both replies and the worker's CPU affinity between them. xatlas's destructor now and then hangs (a task thread
    that never wakes: ``_unwrap_worker``'s docstring; seen once in this project's CI) and the worker is then ended,
    as the unwrap ends it: a fresh worker tries again, three times at most."""
    for _ in range(3):
        worker = uv._Worker()
        try:
            got = worker.run(first, 30.0)
            if not worker.settle(5.0):
                continue
            affinity = os.sched_getaffinity(worker.proc.pid)
            return got, affinity, worker.run(second, 30.0)
        finally:
            worker.close(kill=True)
    pytest.fail("xatlas's destructor hung in three workers in a row")


def test_a_worker_measures_its_atlas_stretch_as_the_host_would():
    """The unwrap in pieces asks each worker for its atlas's L2 stretch (the worker loads geometry/raster.py by
    path, without the package): the same figure as :func:`uv_stretch` on the host, and absent unless asked."""
    from meshforge.geometry.raster import uv_stretch

    mesh = grid(12)
    got, _, plain = _two_requests(
        (mesh.vertices, mesh.faces, {**OPTIONS, "stretch": True}, 0.0), (mesh.vertices, mesh.faces, OPTIONS, 0.0)
    )
    assert isinstance(got, dict) and isinstance(plain, dict) and "stretch" not in plain
    uv_texels = got["uv"] * np.array([got["width"], got["height"]])
    want = uv_stretch(mesh.vertices[got["vmapping"]], uv_texels, got["faces"])
    assert got["stretch"] == want and 1.0 < want < 1.2  # a wavy sheet: slightly stretched
    inline = uv._unwrap_worker.xatlas_atlas(mesh.vertices, mesh.faces, **OPTIONS, stretch=True)
    assert inline["stretch"] == want


def test_a_batch_request_unwraps_each_mesh_in_one_atlas_with_threads_on_every_cpu():
    """The unwrap in pieces sends its pieces in batches: one xatlas atlas of several meshes in a worker kept on one
    CPU, its task threads let onto every CPU of the parent while it runs (then kept on one again). Each mesh's
    charts come back as the same call in this process gives them (to the bit), with their stretch as the host
    measures it; a wrong batch (meshes and faces of different counts) is answered with a reason."""
    from meshforge.geometry.raster import uv_stretch

    meshes = [grid(6), grid(9), grid(4)]
    options = {"batch": True, "max_chart_area": None, "stretch": True}
    got, affinity, wrong = _two_requests(
        ([m.vertices for m in meshes], [m.faces for m in meshes], options, 0.0),
        ([m.vertices for m in meshes], [m.faces for m in meshes[:2]], options, 0.0),
    )
    assert len(affinity) == 1  # kept on one CPU again after the atlas (pinning on, as by default)
    assert isinstance(got, dict) and len(got["atlases"]) == 3
    assert isinstance(wrong, str) and "xatlas failed" in wrong
    inline = uv._unwrap_worker.xatlas_charts([(m.vertices, m.faces) for m in meshes], max_chart_area=None, stretch=True)
    for mesh, part, same in zip(meshes, got["atlases"], inline, strict=True):
        assert np.array_equal(part["uv"], same["uv"]) and np.array_equal(part["faces"], same["faces"])
        assert len(part["faces"]) == len(mesh.faces) and part["charts"] >= 1
        src = mesh.vertices[part["vmapping"]]
        assert np.array_equal(src[part["faces"]], mesh.vertices[mesh.faces])  # every face, in order
        assert part["stretch"] == pytest.approx(uv_stretch(src, part["uv"], part["faces"]), rel=1e-12)
        assert 1.0 <= part["stretch"] < 1.2


def test_chart_scales_undo_a_per_axis_scaling_and_give_the_least_stretch():
    """Two flat charts mapped with a per-axis scaling each (as xatlas's packing does to small charts) come back
    isometric: stretch 1 each and together, each chart's UV area its surface area; a chart mapped conformally
    but stretched keeps its shape, sized as the least atlas stretch asks (UV area ∝ area × L2)."""
    from meshforge.geometry.raster import uv_stretch
    from meshforge.mesh.pack import uv_charts

    sheet = grid(6)
    flat = sheet.vertices.astype(np.float64).copy()
    flat[:, 2] = 0.0
    n = len(flat)
    vertices = np.concatenate([flat, 2.0 * flat])  # the second chart has 4× the area
    faces = np.concatenate([sheet.faces, sheet.faces + n]).astype(np.int64)
    uv_in = np.concatenate([flat[:, :2] * [3.0, 1.0 / 3.0], 2.0 * flat[:, :2] * [0.1, 0.7] + 5.0])
    chart_of = uv_charts(faces, len(uv_in))
    assert chart_of.max() == 1
    out = uv._unwrap_worker._chart_scales(vertices, uv_in, faces, chart_of, 2)
    assert uv_stretch(vertices, uv_in, faces) > 1.2
    assert uv_stretch(vertices, out, faces) == pytest.approx(1.0, abs=1e-9)
    for c in range(2):
        sel = faces[chart_of == c]
        assert uv_stretch(vertices, out, sel) == pytest.approx(1.0, abs=1e-9)
        uv_area = uv_triangle_areas(out, sel).sum()
        assert uv_area == pytest.approx(face_areas(vertices, sel).sum(), rel=1e-9)
    # a conformal map with stretch (the sheet's first chart, curved): scaled as a whole, its stretch as before
    curved = sheet.vertices.astype(np.float64)
    uv_c = curved[:, :2] * 7.0
    one = np.zeros(len(sheet.faces), dtype=np.int64)
    got = uv._unwrap_worker._chart_scales(curved, uv_c, sheet.faces.astype(np.int64), one, 1)
    assert uv_stretch(curved, got, sheet.faces) <= uv_stretch(curved, uv_c, sheet.faces) + 1e-12
