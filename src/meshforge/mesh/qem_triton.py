"""Fused Triton kernels of the GPU QEM decimation (:mod:`meshforge.mesh.torch_decimate`), and their wrappers.

A round of the parallel decimation is a few hundred small torch operations; on a GPU most of them are
elementwise arithmetic over every edge (the collapse positions and their quadric errors) or over every face
around the chosen collapses (the flip and sliver guards), each a kernel launch and a temporary in memory.
Kernels do that work in registers, float64 as the torch path:

* :func:`edge_flags_triton` — per edge: may it collapse (manifold, no pinched border, enough neighbours left)
  and does it keep a border endpoint where it is (two launches: the border and non-manifold edges' endpoints
  marked, then the flags);
* :func:`edge_costs_triton` — per edge ``(a, b)``: the summed quadric ``Q_a + Q_b``, its minimiser (the 3×3
  system by the adjugate), the four candidate positions (``a``, ``b``, the midpoint, the minimiser when it is
  solvable and near the edge, else ``a``), their errors ``xᵀQx`` (Garland & Heckbert 1997), the positions an
  edge from the border inwards may not take, and the cheapest candidate;
* :func:`local_minima_triton` and :func:`block_around_triton` — a selection pass of the round's independent set
  (Luby 1986): the edges whose priority is the least around both endpoints (atomic minima per vertex, then
  per face), and the faces around the taken collapses blocked for the later passes — no wait for the device;
* :func:`collapse_faults_triton` — per face around a collapse and per candidate position: the moved triangle's
  normal against the old one, its area and aspect ratio against the guards, and the distance of the target
  from the face's plane; the faults are counted per collapse and position with atomic adds;
* :func:`common_neighbours_triton` — per collapse, the neighbours its endpoints share (the link condition of
  Dey et al. 1999): a lane walks one endpoint's adjacency row and binary-searches each pair in the sorted edge keys.

Each has its torch twin in :mod:`~meshforge.mesh.torch_decimate` (:func:`~.torch_decimate.edge_flags_torch`,
:func:`~.torch_decimate.edge_costs_torch`, :func:`~.torch_decimate.local_minima_torch`,
:func:`~.torch_decimate.block_around_torch`, :func:`~.torch_decimate.collapse_faults_torch`,
:func:`~.torch_decimate.common_neighbours_torch`), which is the reference: the GPU tests run both on the same
inputs (``tests/mesh/test_qem_triton.py``). The kernels may round differently in the last bits (fused
multiply-adds), so where two positions cost nearly the same they may pick the other one.

Triton (Tillet et al. 2019) ships with CUDA builds of PyTorch, not with CPU ones: without it this module still
imports and :data:`AVAILABLE` is False.
"""

from __future__ import annotations

import importlib.util

import torch

__all__ = [
    "AVAILABLE",
    "BLOCK",
    "block_around_triton",
    "collapse_faults_triton",
    "common_neighbours_triton",
    "edge_costs_triton",
    "edge_flags_triton",
    "local_minima_triton",
]

#: Triton importable (CUDA builds of PyTorch ship it)
AVAILABLE = importlib.util.find_spec("triton") is not None
#: elements per Triton program
BLOCK = 256

if AVAILABLE:
    import triton
    import triton.language as tl

    @triton.jit
    def _err(aa, ab, ac, ad, bb, bc, bd, cc, cd, dd, x, y, z):
        """``xᵀQx`` of a packed quadric at ``(x, y, z, 1)``, clamped at 0."""
        e = (
            aa * x * x
            + bb * y * y
            + cc * z * z
            + 2.0 * (ab * x * y + ac * x * z + bc * y * z)
            + 2.0 * (ad * x + bd * y + cd * z)
            + dd
        )
        return tl.maximum(e, 0.0)

    # (``n`` is not specialised on: one compiled kernel serves every round's size, so a first run on a new machine
    # compiles each kernel once — a few seconds, cached by Triton for later processes)
    @triton.jit(do_not_specialize=["n"])
    def _edge_cost_kernel(
        a_ptr,
        b_ptr,
        q_ptr,
        pos_ptr,
        fixed_a_ptr,
        fixed_b_ptr,
        cands_ptr,
        costs_ptr,
        cost_ptr,
        target_ptr,
        consts_ptr,
        n,
        BLOCK: tl.constexpr,
    ):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tiny = tl.load(consts_ptr + 0)  # float64 1e-300 (a literal would be float32, i.e. 0)
        inf = tl.load(consts_ptr + 1)
        m = i < n
        a = tl.load(a_ptr + i, mask=m, other=0)
        b = tl.load(b_ptr + i, mask=m, other=0)
        aa = tl.load(q_ptr + a * 10 + 0, mask=m, other=0.0) + tl.load(q_ptr + b * 10 + 0, mask=m, other=0.0)
        ab = tl.load(q_ptr + a * 10 + 1, mask=m, other=0.0) + tl.load(q_ptr + b * 10 + 1, mask=m, other=0.0)
        ac = tl.load(q_ptr + a * 10 + 2, mask=m, other=0.0) + tl.load(q_ptr + b * 10 + 2, mask=m, other=0.0)
        ad = tl.load(q_ptr + a * 10 + 3, mask=m, other=0.0) + tl.load(q_ptr + b * 10 + 3, mask=m, other=0.0)
        bb = tl.load(q_ptr + a * 10 + 4, mask=m, other=0.0) + tl.load(q_ptr + b * 10 + 4, mask=m, other=0.0)
        bc = tl.load(q_ptr + a * 10 + 5, mask=m, other=0.0) + tl.load(q_ptr + b * 10 + 5, mask=m, other=0.0)
        bd = tl.load(q_ptr + a * 10 + 6, mask=m, other=0.0) + tl.load(q_ptr + b * 10 + 6, mask=m, other=0.0)
        cc = tl.load(q_ptr + a * 10 + 7, mask=m, other=0.0) + tl.load(q_ptr + b * 10 + 7, mask=m, other=0.0)
        cd = tl.load(q_ptr + a * 10 + 8, mask=m, other=0.0) + tl.load(q_ptr + b * 10 + 8, mask=m, other=0.0)
        dd = tl.load(q_ptr + a * 10 + 9, mask=m, other=0.0) + tl.load(q_ptr + b * 10 + 9, mask=m, other=0.0)
        ax = tl.load(pos_ptr + a * 3 + 0, mask=m, other=0.0)
        ay = tl.load(pos_ptr + a * 3 + 1, mask=m, other=0.0)
        az = tl.load(pos_ptr + a * 3 + 2, mask=m, other=0.0)
        bx = tl.load(pos_ptr + b * 3 + 0, mask=m, other=0.0)
        by = tl.load(pos_ptr + b * 3 + 1, mask=m, other=0.0)
        bz = tl.load(pos_ptr + b * 3 + 2, mask=m, other=0.0)
        # the minimiser: A x = −(ad, bd, cd) by the adjugate of A (the torch path's _optimal_point)
        c00 = bb * cc - bc * bc
        c01 = ac * bc - ab * cc
        c02 = ab * bc - ac * bb
        c11 = aa * cc - ac * ac
        c12 = ab * ac - aa * bc
        c22 = aa * bb - ab * ab
        det = aa * c00 + ab * c01 + ac * c02
        scale = (aa + bb + cc) / 3.0
        ok = tl.abs(det) > 1e-9 * tl.maximum(scale * scale * scale, tiny)
        inv = 1.0 / tl.where(ok, det, 1.0)
        ox = -(c00 * ad + c01 * bd + c02 * cd) * inv
        oy = -(c01 * ad + c11 * bd + c12 * cd) * inv
        oz = -(c02 * ad + c12 * bd + c22 * cd) * inv
        mx = 0.5 * (ax + bx)
        my = 0.5 * (ay + by)
        mz = 0.5 * (az + bz)
        length = tl.sqrt((bx - ax) * (bx - ax) + (by - ay) * (by - ay) + (bz - az) * (bz - az))
        away = tl.sqrt((ox - mx) * (ox - mx) + (oy - my) * (oy - my) + (oz - mz) * (oz - mz))
        ok = ok & (away <= 2.0 * length)
        ox = tl.where(ok, ox, ax)
        oy = tl.where(ok, oy, ay)
        oz = tl.where(ok, oz, az)
        fa = tl.load(fixed_a_ptr + i, mask=m, other=0) != 0
        fb = tl.load(fixed_b_ptr + i, mask=m, other=0) != 0
        e0 = tl.where(fb, inf, _err(aa, ab, ac, ad, bb, bc, bd, cc, cd, dd, ax, ay, az))
        e1 = tl.where(fa, inf, _err(aa, ab, ac, ad, bb, bc, bd, cc, cd, dd, bx, by, bz))
        e2 = tl.where(fa | fb, inf, _err(aa, ab, ac, ad, bb, bc, bd, cc, cd, dd, mx, my, mz))
        e3 = tl.where(fa | fb, inf, _err(aa, ab, ac, ad, bb, bc, bd, cc, cd, dd, ox, oy, oz))
        base = cands_ptr + i * 12
        tl.store(base + 0, ax, mask=m)
        tl.store(base + 1, ay, mask=m)
        tl.store(base + 2, az, mask=m)
        tl.store(base + 3, bx, mask=m)
        tl.store(base + 4, by, mask=m)
        tl.store(base + 5, bz, mask=m)
        tl.store(base + 6, mx, mask=m)
        tl.store(base + 7, my, mask=m)
        tl.store(base + 8, mz, mask=m)
        tl.store(base + 9, ox, mask=m)
        tl.store(base + 10, oy, mask=m)
        tl.store(base + 11, oz, mask=m)
        tl.store(costs_ptr + i * 4 + 0, e0, mask=m)
        tl.store(costs_ptr + i * 4 + 1, e1, mask=m)
        tl.store(costs_ptr + i * 4 + 2, e2, mask=m)
        tl.store(costs_ptr + i * 4 + 3, e3, mask=m)
        # the cheapest, the first on ties (torch.min's index)
        best = e0
        tx, ty, tz = ax, ay, az
        take = e1 < best
        best = tl.where(take, e1, best)
        tx, ty, tz = tl.where(take, bx, tx), tl.where(take, by, ty), tl.where(take, bz, tz)
        take = e2 < best
        best = tl.where(take, e2, best)
        tx, ty, tz = tl.where(take, mx, tx), tl.where(take, my, ty), tl.where(take, mz, tz)
        take = e3 < best
        best = tl.where(take, e3, best)
        tx, ty, tz = tl.where(take, ox, tx), tl.where(take, oy, ty), tl.where(take, oz, tz)
        tl.store(cost_ptr + i, best, mask=m)
        tl.store(target_ptr + i * 3 + 0, tx, mask=m)
        tl.store(target_ptr + i * 3 + 1, ty, mask=m)
        tl.store(target_ptr + i * 3 + 2, tz, mask=m)

    @triton.jit
    def _tri(p0x, p0y, p0z, p1x, p1y, p1z, p2x, p2y, p2z):
        """Cross product ``(p1 − p0) × (p2 − p0)``, its length (twice the area) and the longest edge²."""
        ux, uy, uz = p1x - p0x, p1y - p0y, p1z - p0z
        vx, vy, vz = p2x - p0x, p2y - p0y, p2z - p0z
        cx = uy * vz - uz * vy
        cy = uz * vx - ux * vz
        cz = ux * vy - uy * vx
        twice = tl.sqrt(cx * cx + cy * cy + cz * cz)
        wx, wy, wz = p2x - p1x, p2y - p1y, p2z - p1z
        uu = ux * ux + uy * uy + uz * uz
        vv = vx * vx + vy * vy + vz * vz
        ww = wx * wx + wy * wy + wz * wz
        longest = tl.maximum(tl.maximum(uu, ww), vv)
        return cx, cy, cz, twice, longest

    @triton.jit(do_not_specialize=["n"])
    def _faults_kernel(
        faces_ptr,
        owner_ptr,
        pos_ptr,
        ca_ptr,
        cb_ptr,
        targets_ptr,
        worst_ptr,
        limits_ptr,
        out_ptr,
        n,
        T: tl.constexpr,
        MODE: tl.constexpr,
        HAS_TOL: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        """MODE 0: ``out[m]`` = the aspect ratio of face ``m`` if it survives its collapse, else 0. MODE 1: for each
        target ``t`` of the face's collapse ``c``, ``out[c, t] += 1`` (int32) when moving the collapse's corners of
        the face there breaks a guard (``limits``: min normal dot, max aspect, min area, plane tolerance, 1e-300)."""
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = i < n
        f0 = tl.load(faces_ptr + i * 3 + 0, mask=m, other=0)
        f1 = tl.load(faces_ptr + i * 3 + 1, mask=m, other=0)
        f2 = tl.load(faces_ptr + i * 3 + 2, mask=m, other=0)
        c = tl.load(owner_ptr + i, mask=m, other=0)
        va = tl.load(ca_ptr + c, mask=m, other=-1)
        vb = tl.load(cb_ptr + c, mask=m, other=-1)
        m0 = (f0 == va) | (f0 == vb)
        m1 = (f1 == va) | (f1 == vb)
        m2 = (f2 == va) | (f2 == vb)
        kept = (m0.to(tl.int32) + m1.to(tl.int32) + m2.to(tl.int32)) < 2
        p0x = tl.load(pos_ptr + f0 * 3 + 0, mask=m, other=0.0)
        p0y = tl.load(pos_ptr + f0 * 3 + 1, mask=m, other=0.0)
        p0z = tl.load(pos_ptr + f0 * 3 + 2, mask=m, other=0.0)
        p1x = tl.load(pos_ptr + f1 * 3 + 0, mask=m, other=0.0)
        p1y = tl.load(pos_ptr + f1 * 3 + 1, mask=m, other=0.0)
        p1z = tl.load(pos_ptr + f1 * 3 + 2, mask=m, other=0.0)
        p2x = tl.load(pos_ptr + f2 * 3 + 0, mask=m, other=0.0)
        p2y = tl.load(pos_ptr + f2 * 3 + 1, mask=m, other=0.0)
        p2z = tl.load(pos_ptr + f2 * 3 + 2, mask=m, other=0.0)
        ocx, ocy, ocz, onorm, olong = _tri(p0x, p0y, p0z, p1x, p1y, p1z, p2x, p2y, p2z)
        if MODE == 0:
            aspect = olong / tl.maximum(onorm, tl.load(limits_ptr + 4))
            tl.store(out_ptr + i, tl.where(kept, aspect, 0.0), mask=m)
        else:
            min_dot = tl.load(limits_ptr + 0)
            max_aspect = tl.load(limits_ptr + 1)
            min_area = tl.load(limits_ptr + 2)
            tol = tl.load(limits_ptr + 3)
            tiny = tl.load(limits_ptr + 4)  # float64 1e-300 (a literal would be float32, i.e. 0)
            worst = tl.load(worst_ptr + c, mask=m, other=0.0)
            old_area = 0.5 * onorm
            for t in tl.static_range(T):
                tx = tl.load(targets_ptr + (c * T + t) * 3 + 0, mask=m, other=0.0)
                ty = tl.load(targets_ptr + (c * T + t) * 3 + 1, mask=m, other=0.0)
                tz = tl.load(targets_ptr + (c * T + t) * 3 + 2, mask=m, other=0.0)
                ncx, ncy, ncz, nnorm, nlong = _tri(
                    tl.where(m0, tx, p0x),
                    tl.where(m0, ty, p0y),
                    tl.where(m0, tz, p0z),
                    tl.where(m1, tx, p1x),
                    tl.where(m1, ty, p1y),
                    tl.where(m1, tz, p1z),
                    tl.where(m2, tx, p2x),
                    tl.where(m2, ty, p2y),
                    tl.where(m2, tz, p2z),
                )
                dot = ocx * ncx + ocy * ncy + ocz * ncz
                flips = dot < min_dot * (onorm * nnorm)
                new_area = 0.5 * nnorm
                new_aspect = nlong / tl.maximum(nnorm, tiny)
                tiny = (new_area <= min_area) & (new_area < old_area)
                wrong = flips | tiny | ((new_aspect > max_aspect) & (new_aspect > worst))
                if HAS_TOL:
                    height = tl.abs((tx - p0x) * ocx + (ty - p0y) * ocy + (tz - p0z) * ocz)
                    wrong = wrong | (height > tol * onorm)
                tl.atomic_add(out_ptr + c * T + t, 1, mask=m & wrong & kept)

    @triton.jit(do_not_specialize=["n", "n_keys", "nv", "max_count", "steps"])
    def _common_kernel(
        ca_ptr,
        cb_ptr,
        first_ptr,
        count_ptr,
        dst_ptr,
        keys_ptr,
        out_ptr,
        n,
        n_keys,
        nv,
        max_count,
        steps,
        BLOCK: tl.constexpr,
    ):
        """Per edge: the neighbours ``x`` of ``ca`` (CSR row) other than ``cb`` whose key ``(cb, x)`` is in the
        sorted ``keys`` (a binary search of ``steps`` halvings each)."""
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = i < n
        cb = tl.load(cb_ptr + i, mask=m, other=0)
        first = tl.load(first_ptr + i, mask=m, other=0)
        count = tl.load(count_ptr + i, mask=m, other=0)
        common = tl.zeros([BLOCK], dtype=tl.int64)
        for j in range(0, max_count):
            live = m & (j < count)
            x = tl.load(dst_ptr + first + j, mask=live, other=0)
            key = tl.minimum(cb, x) * nv + tl.maximum(cb, x)
            lo = tl.zeros([BLOCK], dtype=tl.int64)
            hi = tl.zeros([BLOCK], dtype=tl.int64) + n_keys
            for _ in range(0, steps):
                open_ = lo < hi
                mid = (lo + hi) // 2
                v = tl.load(keys_ptr + mid, mask=live & open_, other=0)
                right = v < key
                lo = tl.where(open_ & right, mid + 1, lo)
                hi = tl.where(open_ & ~right, mid, hi)
            hit = tl.load(keys_ptr + lo, mask=live & (lo < n_keys), other=-1) == key
            common += (live & hit & (x != cb)).to(tl.int64)
        tl.store(out_ptr + i, common, mask=m)

    @triton.jit
    def _taking_part(prio_ptr, free_ptr, a_ptr, b_ptr, i, m, big):
        """Edges ``i`` (lanes ``m``): their endpoints, priority, and whether they take part in a selection pass
        (both endpoints free, a priority below ``big``)."""
        a = tl.load(a_ptr + i, mask=m, other=0)
        b = tl.load(b_ptr + i, mask=m, other=0)
        p = tl.load(prio_ptr + i, mask=m, other=big)
        fa = tl.load(free_ptr + a, mask=m, other=0)
        fb = tl.load(free_ptr + b, mask=m, other=0)
        return a, b, p, m & (fa != 0) & (fb != 0) & (p < big)

    @triton.jit(do_not_specialize=["n", "big"])
    def _edge_min_kernel(prio_ptr, free_ptr, a_ptr, b_ptr, vmin_ptr, n, big, BLOCK: tl.constexpr):
        """Per edge with both endpoints free and a priority below ``big``: ``vmin[a]``, ``vmin[b]`` = the least
        priority (atomic minimum)."""
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        a, b, p, live = _taking_part(prio_ptr, free_ptr, a_ptr, b_ptr, i, i < n, big)
        tl.atomic_min(vmin_ptr + a, p, mask=live)
        tl.atomic_min(vmin_ptr + b, p, mask=live)

    @triton.jit(do_not_specialize=["n", "big"])
    def _face_min_kernel(faces_ptr, vmin_ptr, rmin_ptr, n, big, BLOCK: tl.constexpr):
        """Per face: the least ``vmin`` of its corners, spread to ``rmin`` of each corner (atomic minimum)."""
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = i < n
        f0 = tl.load(faces_ptr + i * 3 + 0, mask=m, other=0)
        f1 = tl.load(faces_ptr + i * 3 + 1, mask=m, other=0)
        f2 = tl.load(faces_ptr + i * 3 + 2, mask=m, other=0)
        v0 = tl.load(vmin_ptr + f0, mask=m, other=big)
        v1 = tl.load(vmin_ptr + f1, mask=m, other=big)
        v2 = tl.load(vmin_ptr + f2, mask=m, other=big)
        low = tl.minimum(tl.minimum(v0, v1), v2)
        live = m & (low < big)
        tl.atomic_min(rmin_ptr + f0, low, mask=live)
        tl.atomic_min(rmin_ptr + f1, low, mask=live)
        tl.atomic_min(rmin_ptr + f2, low, mask=live)

    @triton.jit(do_not_specialize=["n", "big"])
    def _choose_kernel(prio_ptr, free_ptr, a_ptr, b_ptr, rmin_ptr, out_ptr, n, big, BLOCK: tl.constexpr):
        """Per edge: 1 when it takes part (both endpoints free, priority below ``big``) and its priority is
        ``rmin`` at both endpoints, else 0 (int8)."""
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = i < n
        a, b, p, live = _taking_part(prio_ptr, free_ptr, a_ptr, b_ptr, i, m, big)
        ra = tl.load(rmin_ptr + a, mask=m, other=big)
        rb = tl.load(rmin_ptr + b, mask=m, other=big)
        tl.store(out_ptr + i, (live & (p == ra) & (p == rb)).to(tl.int8), mask=m)

    @triton.jit(do_not_specialize=["n"])
    def _ring_kernel(a_ptr, b_ptr, flag_ptr, ring_ptr, n, BLOCK: tl.constexpr):
        """``ring[a] = ring[b] = 1`` for the flagged edges (int8)."""
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = i < n
        hit = m & (tl.load(flag_ptr + i, mask=m, other=0) != 0)
        a = tl.load(a_ptr + i, mask=hit, other=0)
        b = tl.load(b_ptr + i, mask=hit, other=0)
        one = tl.full([BLOCK], 1, dtype=tl.int8)
        tl.store(ring_ptr + a, one, mask=hit)
        tl.store(ring_ptr + b, one, mask=hit)

    @triton.jit(do_not_specialize=["n"])
    def _block_kernel(faces_ptr, ring_ptr, free_ptr, n, BLOCK: tl.constexpr):
        """``free[v] = 0`` for the corners ``v`` of every face with a corner in ``ring`` (int8)."""
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = i < n
        f0 = tl.load(faces_ptr + i * 3 + 0, mask=m, other=0)
        f1 = tl.load(faces_ptr + i * 3 + 1, mask=m, other=0)
        f2 = tl.load(faces_ptr + i * 3 + 2, mask=m, other=0)
        r0 = tl.load(ring_ptr + f0, mask=m, other=0)
        r1 = tl.load(ring_ptr + f1, mask=m, other=0)
        r2 = tl.load(ring_ptr + f2, mask=m, other=0)
        hit = m & ((r0 != 0) | (r1 != 0) | (r2 != 0))
        zero = tl.zeros([BLOCK], dtype=tl.int8)
        tl.store(free_ptr + f0, zero, mask=hit)
        tl.store(free_ptr + f1, zero, mask=hit)
        tl.store(free_ptr + f2, zero, mask=hit)

    @triton.jit(do_not_specialize=["n"])
    def _ends_kernel(a_ptr, b_ptr, count_ptr, marks_ptr, nv, n, BLOCK: tl.constexpr):
        """``marks[0, v] = 1`` for the endpoints of border edges (one face), ``marks[1, v] = 1`` for those of
        non-manifold edges (more than two faces); int8 ``[2, nv]``."""
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = i < n
        c = tl.load(count_ptr + i, mask=m, other=2)
        a = tl.load(a_ptr + i, mask=m, other=0)
        b = tl.load(b_ptr + i, mask=m, other=0)
        one = tl.full([BLOCK], 1, dtype=tl.int8)
        row = tl.where(c > 2, nv, 0)
        hit = m & (c != 2)
        tl.store(marks_ptr + row + a, one, mask=hit)
        tl.store(marks_ptr + row + b, one, mask=hit)

    @triton.jit(do_not_specialize=["n"])
    def _flags_kernel(
        a_ptr, b_ptr, count_ptr, opp0_ptr, opp1_ptr, deg_ptr, marks_ptr, out_ptr, nv, n, BLOCK: tl.constexpr
    ):
        """Per edge: ``out[0]`` may collapse, ``out[1]`` keeps ``a``, ``out[2]`` keeps ``b`` (int8 ``[3, n]``)."""
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = i < n
        c = tl.load(count_ptr + i, mask=m, other=0)
        a = tl.load(a_ptr + i, mask=m, other=0)
        b = tl.load(b_ptr + i, mask=m, other=0)
        o0 = tl.load(opp0_ptr + i, mask=m, other=0)
        o1 = tl.maximum(tl.load(opp1_ptr + i, mask=m, other=0), 0)
        ba = tl.load(marks_ptr + a, mask=m, other=0) != 0
        bb = tl.load(marks_ptr + b, mask=m, other=0) != 0
        na = tl.load(marks_ptr + nv + a, mask=m, other=0) != 0
        nb = tl.load(marks_ptr + nv + b, mask=m, other=0) != 0
        da = tl.load(deg_ptr + a, mask=m, other=0)
        db = tl.load(deg_ptr + b, mask=m, other=0)
        d0 = tl.load(deg_ptr + o0, mask=m, other=0)
        d1 = tl.load(deg_ptr + o1, mask=m, other=0)
        interior = c == 2
        ok = ((c == 1) | interior) & ~(na & nb)
        ok = ok & ~(interior & ba & bb)
        ok = ok & tl.where(interior, da + db - 4 >= 3, da + db - 3 >= 2)
        ok = ok & tl.where(interior, (d0 > 3) & (d1 > 3), d0 > 2)
        tl.store(out_ptr + i, ok.to(tl.int8), mask=m)
        tl.store(out_ptr + n + i, (interior & ba & ~bb).to(tl.int8), mask=m)
        tl.store(out_ptr + 2 * n + i, (interior & bb & ~ba).to(tl.int8), mask=m)


def edge_costs_triton(
    q: torch.Tensor, pos: torch.Tensor, a: torch.Tensor, b: torch.Tensor, fixed_a: torch.Tensor, fixed_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`~meshforge.mesh.torch_decimate.edge_costs_torch` in one Triton kernel (same arguments, results).

    Args:
        q: ``[V, 10]`` float64 packed quadrics; pos: ``[V, 3]`` float64 positions (unit scale).
        a, b: ``[E]`` int64 edge endpoints; fixed_a, fixed_b: ``[E]`` bool — the collapse must keep ``a`` (resp.
            ``b``) where it is (an edge from the border inwards).

    Returns:
        ``(cands [E, 4, 3], costs [E, 4], cost [E], target [E, 3])`` float64: the candidate positions
        (``a``, ``b``, midpoint, minimiser or ``a``), their errors (``inf`` where barred), the least and its position.
    """
    n = a.numel()
    dev = pos.device
    cands = torch.empty((n, 4, 3), dtype=torch.float64, device=dev)
    costs = torch.empty((n, 4), dtype=torch.float64, device=dev)
    cost = torch.empty(n, dtype=torch.float64, device=dev)
    target = torch.empty((n, 3), dtype=torch.float64, device=dev)
    if n:
        _edge_cost_kernel[(triton.cdiv(n, BLOCK),)](
            a.contiguous(),
            b.contiguous(),
            q.contiguous(),
            pos.contiguous(),
            fixed_a.to(torch.int8),
            fixed_b.to(torch.int8),
            cands,
            costs,
            cost,
            target,
            torch.tensor([1e-300, float("inf")], dtype=torch.float64, device=dev),
            n,
            BLOCK=BLOCK,
        )
    return cands, costs, cost, target


def collapse_faults_triton(
    pos: torch.Tensor,
    f_t: torch.Tensor,
    c_t: torch.Tensor,
    ca: torch.Tensor,
    cb: torch.Tensor,
    targets: torch.Tensor,
    limits: tuple[float, float, float, float],
) -> torch.Tensor:
    """:func:`~meshforge.mesh.torch_decimate.collapse_faults_torch` in two Triton launches (same arguments,
    result): the faces' old aspect ratios, their maximum per collapse (``scatter_reduce``), then the guards.

    Args:
        pos: ``[V, 3]`` float64 positions.
        f_t: ``[M, 3]`` int64 the faces around the collapses; c_t: ``[M]`` int64 the collapse of each.
        ca, cb: ``[N]`` int64 the collapses' endpoints; targets: ``[N, T, 3]`` float64 their candidate positions.
        limits: (least normal dot, greatest aspect ratio, least area, farthest distance from a moving face's
            plane — ``inf`` for none).

    Returns:
        ``[N, T]`` int32: per collapse and position, how many of its surviving faces break a guard.
    """
    m, (n, t) = f_t.shape[0], targets.shape[:2]
    dev = pos.device
    out = torch.zeros((n, t), dtype=torch.int32, device=dev)
    if m == 0:
        return out
    args = (f_t.contiguous(), c_t.contiguous(), pos.contiguous(), ca.contiguous(), cb.contiguous())
    tgt = targets.contiguous()
    lim = torch.tensor([*limits, 1e-300], dtype=torch.float64, device=dev)
    old = torch.empty(m, dtype=torch.float64, device=dev)
    grid = (triton.cdiv(m, BLOCK),)
    _faults_kernel[grid](*args, tgt, old, lim, old, m, T=t, MODE=0, HAS_TOL=False, BLOCK=BLOCK)
    worst = torch.zeros(n, dtype=torch.float64, device=dev).scatter_reduce_(0, c_t, old, "amax")
    has_tol = bool(limits[3] < float("inf"))
    _faults_kernel[grid](*args, tgt, worst, lim, out, m, T=t, MODE=1, HAS_TOL=has_tol, BLOCK=BLOCK)
    return out


def common_neighbours_triton(
    ca: torch.Tensor,
    cb: torch.Tensor,
    first: torch.Tensor,
    count: torch.Tensor,
    dst_sorted: torch.Tensor,
    edge_keys: torch.Tensor,
    nv: int,
) -> torch.Tensor:
    """:func:`~meshforge.mesh.torch_decimate.common_neighbours_torch` in one Triton kernel (same arguments, result):
    each edge's lane walks ``ca``'s CSR row and binary-searches the keys.

    Args:
        ca, cb: ``[N]`` int64 endpoints; first, count: ``[N]`` int64 — ``ca``'s row in ``dst_sorted``.
        dst_sorted: ``[2E]`` int64 neighbours, row by row; edge_keys: ``[E]`` int64 sorted ``min·nv + max`` keys.
        nv: the vertex count the keys are built with.

    Returns:
        ``[N]`` int64 counts.
    """
    n = ca.numel()
    out = torch.zeros(n, dtype=torch.int64, device=ca.device)
    if n == 0:
        return out
    max_count = int(count.max().item())  # the one wait for the device here (the loop's bound)
    n_keys = edge_keys.numel()
    steps = max(1, int(n_keys).bit_length())
    _common_kernel[(triton.cdiv(n, BLOCK),)](
        ca.contiguous(),
        cb.contiguous(),
        first.contiguous(),
        count.contiguous(),
        dst_sorted.contiguous(),
        edge_keys.contiguous(),
        out,
        n,
        n_keys,
        nv,
        max_count,
        steps,
        BLOCK=BLOCK,
    )
    return out


def local_minima_triton(
    prio: torch.Tensor, free: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor, faces: torch.Tensor, nv: int
) -> torch.Tensor:
    """:func:`~meshforge.mesh.torch_decimate.local_minima_torch` in three Triton launches (same arguments,
    result): the least priority per vertex over its edges, per vertex over the faces around it (atomic minima),
    then the edges that hold it at both endpoints.

    Args:
        prio: ``[E]`` int64 priorities (``big`` = ``int64`` max: takes no part); free: ``[nv]`` bool, the vertices
            an edge may still touch (None: all); a, b: ``[E]`` int64 endpoints; faces: ``[F, 3]`` int64.

    Returns:
        ``[E]`` bool.
    """
    n, nf = a.numel(), faces.shape[0]
    dev = prio.device
    big = torch.iinfo(torch.int64).max
    out = torch.zeros(n, dtype=torch.bool, device=dev)
    if n == 0:
        return out
    vmin = torch.full((2, nv), big, dtype=torch.int64, device=dev)  # per vertex: over edges, over faces
    ok = (torch.ones(nv, dtype=torch.bool, device=dev) if free is None else free).view(torch.int8)
    args = (prio.contiguous(), ok, a.contiguous(), b.contiguous())
    f = faces.contiguous()
    _edge_min_kernel[(triton.cdiv(n, BLOCK),)](*args, vmin[0], n, big, BLOCK=BLOCK)
    if nf:
        _face_min_kernel[(triton.cdiv(nf, BLOCK),)](f, vmin[0], vmin[1], nf, big, BLOCK=BLOCK)
    _choose_kernel[(triton.cdiv(n, BLOCK),)](*args, vmin[1], out.view(torch.int8), n, big, BLOCK=BLOCK)
    return out


def block_around_triton(
    free: torch.Tensor, a: torch.Tensor, b: torch.Tensor, faces: torch.Tensor, flag: torch.Tensor
) -> torch.Tensor:
    """:func:`~meshforge.mesh.torch_decimate.block_around_torch` in two Triton launches (same arguments, result,
    ``free`` updated in place): the flagged edges' endpoints, then every corner of a face touching one.

    Args:
        free: ``[nv]`` bool, updated in place; a, b: ``[N]`` int64 endpoints; faces: ``[F, 3]`` int64;
            flag: ``[N]`` bool.

    Returns:
        ``free``.
    """
    n, nf = a.numel(), faces.shape[0]
    if n == 0 or nf == 0:
        return free
    ring = torch.zeros(free.shape[0], dtype=torch.int8, device=free.device)
    _ring_kernel[(triton.cdiv(n, BLOCK),)](
        a.contiguous(), b.contiguous(), flag.contiguous().view(torch.int8), ring, n, BLOCK=BLOCK
    )
    _block_kernel[(triton.cdiv(nf, BLOCK),)](faces.contiguous(), ring, free.view(torch.int8), nf, BLOCK=BLOCK)
    return free


def edge_flags_triton(
    a: torch.Tensor,
    b: torch.Tensor,
    count: torch.Tensor,
    opp0: torch.Tensor,
    opp1: torch.Tensor,
    deg: torch.Tensor,
    nv: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`~meshforge.mesh.torch_decimate.edge_flags_torch` in two Triton launches (same arguments, result):
    the border and non-manifold edges' endpoints marked, then each edge's flags.

    Args:
        a, b, count, opp0, opp1: ``[E]`` int64 edges as :func:`~meshforge.mesh.torch_decimate._edges` gives them;
            deg: ``[nv]`` int64 vertex degrees.

    Returns:
        ``(ok, fixed_a, fixed_b)`` ``[E]`` bool.
    """
    n = a.numel()
    dev = a.device
    out = torch.zeros((3, n), dtype=torch.bool, device=dev)
    if n == 0:
        return out[0], out[1], out[2]
    marks = torch.zeros((2, nv), dtype=torch.int8, device=dev)
    ends = (a.contiguous(), b.contiguous(), count.contiguous())
    grid = (triton.cdiv(n, BLOCK),)
    _ends_kernel[grid](*ends, marks, nv, n, BLOCK=BLOCK)
    _flags_kernel[grid](
        *ends, opp0.contiguous(), opp1.contiguous(), deg.contiguous(), marks, out.view(torch.int8), nv, n, BLOCK=BLOCK
    )
    return out[0], out[1], out[2]
