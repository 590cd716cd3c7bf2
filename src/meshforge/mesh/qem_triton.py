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

:func:`fused_round` runs a whole round from these pieces (the same kernel helpers) and a few more — the edges from
the sorted half-edge keys (:func:`round_edges`), the candidates' priorities, the adjacency rows, the passes'
picks and blocks with the chosen collapses kept as per-edge masks, the guards over every face, the collapses — so
that a round costs the host about 25 launches and 40 other operations (the host, not the device, set the pace of a
round of a few hundred torch operations: about 7 ms on the H200's host).

Each piece has its torch twin in :mod:`~meshforge.mesh.torch_decimate` (:func:`~.torch_decimate.edge_flags_torch`,
:func:`~.torch_decimate.edge_costs_torch`, :func:`~.torch_decimate.local_minima_torch`,
:func:`~.torch_decimate.block_around_torch`, :func:`~.torch_decimate.collapse_faults_torch`,
:func:`~.torch_decimate.common_neighbours_torch`), which is the reference: the GPU tests run both on the same
inputs (``tests/mesh/test_qem_triton.py``), and :func:`fused_round` against ``_round`` (whole decimations). The
kernels may round differently in the last bits (fused multiply-adds), so where two positions cost nearly the same
they may pick the other one.

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

    @triton.jit
    def _collapse_costs(q_ptr, pos_ptr, a, b, fa, fb, i, m, tiny, inf, cands_ptr, costs_ptr, cost_ptr, target_ptr):
        """Edges ``i`` (lanes ``m``) with endpoints ``a``, ``b`` and the fixed flags ``fa``, ``fb``: the four candidate
        positions and their quadric errors under ``Q_a + Q_b``, stored at ``cands[i]``, ``costs[i]``, and the least
        (the first of equal ones) at ``cost[i]``, ``target[i]``; returns the least."""
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
        return best

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
        fa = tl.load(fixed_a_ptr + i, mask=m, other=0) != 0
        fb = tl.load(fixed_b_ptr + i, mask=m, other=0) != 0
        _collapse_costs(q_ptr, pos_ptr, a, b, fa, fb, i, m, tiny, inf, cands_ptr, costs_ptr, cost_ptr, target_ptr)

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
        CID: tl.constexpr = False,
    ):
        """MODE 0: ``out[m]`` = the aspect ratio of face ``m`` if it survives its collapse, else 0. MODE 1: for each
        target ``t`` of the face's collapse ``c``, ``out[c, t] += 1`` (int32) when moving the collapse's corners of
        the face there breaks a guard (``limits``: min normal dot, max aspect, min area, plane tolerance, 1e-300).
        MODE 2: ``out[c]`` = the greatest aspect ratio of the collapse's surviving faces (an atomic maximum of the
        float64 bits as int64: non-negative floats order as their bits do).

        ``owner[m]`` is face ``m``'s collapse; with ``CID`` the faces are the whole mesh and ``owner`` is per vertex
        (``[nv]``, −1: on no collapse), a face's collapse the greatest of its corners' (faces around no collapse
        skipped)."""
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = i < n
        f0 = tl.load(faces_ptr + i * 3 + 0, mask=m, other=0)
        f1 = tl.load(faces_ptr + i * 3 + 1, mask=m, other=0)
        f2 = tl.load(faces_ptr + i * 3 + 2, mask=m, other=0)
        if CID:
            c0 = tl.load(owner_ptr + f0, mask=m, other=-1)
            c1 = tl.load(owner_ptr + f1, mask=m, other=-1)
            c2 = tl.load(owner_ptr + f2, mask=m, other=-1)
            c = tl.maximum(tl.maximum(c0, c1), c2)
            m = m & (c >= 0)
            c = tl.maximum(c, 0)
        else:
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
        elif MODE == 2:
            aspect = olong / tl.maximum(onorm, tl.load(limits_ptr + 4))
            tl.atomic_max(out_ptr + c, aspect.to(tl.int64, bitcast=True), mask=m & kept)
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
            hit = _sorted_member(keys_ptr, n_keys, steps, tl.minimum(cb, x) * nv + tl.maximum(cb, x), live)
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

    @triton.jit
    def _edge_ok(c, a, b, o0, o1, deg_ptr, marks_ptr, nv, m):
        """Edges with ``c`` faces, endpoints ``a``, ``b`` and opposite vertices ``o0``, ``o1`` (−1: none), lanes ``m``:
        (may collapse, keeps ``a``, keeps ``b``) from the vertex degrees and the border / non-manifold marks
        (``marks[0]``, ``marks[1]``, int8 ``[2, nv]``)."""
        o1 = tl.maximum(o1, 0)
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
        return ok & m, interior & ba & ~bb, interior & bb & ~ba

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
        o1 = tl.load(opp1_ptr + i, mask=m, other=0)
        ok, fixed_a, fixed_b = _edge_ok(c, a, b, o0, o1, deg_ptr, marks_ptr, nv, m)
        tl.store(out_ptr + i, ok.to(tl.int8), mask=m)
        tl.store(out_ptr + n + i, fixed_a.to(tl.int8), mask=m)
        tl.store(out_ptr + 2 * n + i, fixed_b.to(tl.int8), mask=m)

    # ---- the whole round on the device (:func:`fused_round`): edges, costs, selection, checks, collapses ----

    @triton.jit
    def _splitmix(x):
        """:func:`~meshforge.mesh.torch_decimate._hash` (splitmix64's finaliser, wrapping int64 arithmetic)."""
        x = x * -7046029254386353131
        x = x ^ ((x >> 31) & 8589934591)  # (1 << 33) - 1
        x = x * -4658895280553007687
        x = x ^ ((x >> 29) & 34359738367)  # (1 << 35) - 1
        return x & 4611686018427387903  # (1 << 62) - 1

    @triton.jit
    def _sorted_member(keys_ptr, n_keys, steps, key, live):
        """Whether ``key`` occurs in the sorted ``keys[:n_keys]`` (``steps`` halvings of a binary search; lanes
        ``live``)."""
        lo = tl.zeros_like(key)
        hi = lo + n_keys
        for _ in range(0, steps):
            open_ = lo < hi
            mid = (lo + hi) // 2
            v = tl.load(keys_ptr + mid, mask=live & open_, other=0)
            right = v < key
            lo = tl.where(open_ & right, mid + 1, lo)
            hi = tl.where(open_ & ~right, mid, hi)
        return live & (tl.load(keys_ptr + lo, mask=live & (lo < n_keys), other=-1) == key)

    @triton.jit(do_not_specialize=["n", "nv"])
    def _half_edge_kernel(faces_ptr, key_ptr, n, nv, BLOCK: tl.constexpr):
        """``key[s]`` of half-edge ``s = 3·face + k`` (corner ``k`` to ``k + 1``): ``min·nv + max``."""
        s = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
        m = s < n
        f = s // 3
        k = s - 3 * f
        u = tl.load(faces_ptr + f * 3 + k, mask=m, other=0)
        w = tl.load(faces_ptr + f * 3 + tl.where(k == 2, 0, k + 1), mask=m, other=0)
        tl.store(key_ptr + s, tl.minimum(u, w) * nv + tl.maximum(u, w), mask=m)

    @triton.jit(do_not_specialize=["n"])
    def _run_start_kernel(ks_ptr, start_ptr, n, BLOCK: tl.constexpr):
        """``start[s]`` = 1 where the sorted keys begin a run (a new edge), else 0 (int32)."""
        s = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
        m = s < n
        key = tl.load(ks_ptr + s, mask=m, other=0)
        prev = tl.load(ks_ptr + s - 1, mask=m & (s > 0), other=-1)
        tl.store(start_ptr + s, ((s == 0) | (key != prev)).to(tl.int32), mask=m)

    @triton.jit(do_not_specialize=["n", "n_edges", "nv"])
    def _edge_scatter_kernel(
        ks_ptr, order_ptr, eid_ptr, faces_ptr, edges_ptr, deg_ptr, marks_ptr, n, n_edges, nv, BLOCK: tl.constexpr
    ):
        """Per run of equal sorted half-edge keys (an edge ``e``): ``edges[:, e]`` = (a, b, faces — 3 for more than
        two —, the vertex opposite it in its first and second face (−1: none), key); the endpoints' degrees
        (atomic adds) and their border (one face) and non-manifold (more than two) marks."""
        s = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
        m = s < n
        key = tl.load(ks_ptr + s, mask=m, other=-1)
        prev = tl.load(ks_ptr + s - 1, mask=m & (s > 0), other=-1)
        m = m & ((s == 0) | (key != prev))
        e = tl.load(eid_ptr + s, mask=m, other=1) - 1
        n1 = tl.load(ks_ptr + s + 1, mask=m & (s + 1 < n), other=-1) == key
        n2 = tl.load(ks_ptr + s + 2, mask=m & (s + 2 < n), other=-1) == key
        c = 1 + n1.to(tl.int64) + (n1 & n2).to(tl.int64)
        a = key // nv
        b = key - a * nv
        t0 = tl.load(order_ptr + s, mask=m, other=0)
        f0 = t0 // 3
        k0 = t0 - 3 * f0
        o0 = tl.load(faces_ptr + f0 * 3 + tl.where(k0 == 0, 2, k0 - 1), mask=m, other=0)
        t1 = tl.load(order_ptr + s + 1, mask=m & n1, other=0)
        f1 = t1 // 3
        k1 = t1 - 3 * f1
        o1 = tl.load(faces_ptr + f1 * 3 + tl.where(k1 == 0, 2, k1 - 1), mask=m & n1, other=-1)
        tl.store(edges_ptr + e, a, mask=m)
        tl.store(edges_ptr + n_edges + e, b, mask=m)
        tl.store(edges_ptr + 2 * n_edges + e, c, mask=m)
        tl.store(edges_ptr + 3 * n_edges + e, o0, mask=m)
        tl.store(edges_ptr + 4 * n_edges + e, tl.where(n1, o1, -1), mask=m)
        tl.store(edges_ptr + 5 * n_edges + e, key, mask=m)
        tl.atomic_add(deg_ptr + a, 1, mask=m)
        tl.atomic_add(deg_ptr + b, 1, mask=m)
        one = tl.full([BLOCK], 1, dtype=tl.int8)
        row = tl.where(c > 2, nv, 0)
        hit = m & (c != 2)
        tl.store(marks_ptr + row + a, one, mask=hit)
        tl.store(marks_ptr + row + b, one, mask=hit)

    @triton.jit(do_not_specialize=["n", "nv", "n_keys", "steps"])
    def _round_edge_kernel(
        edges_ptr,
        q_ptr,
        pos_ptr,
        deg_ptr,
        marks_ptr,
        keys_ptr,
        cands_ptr,
        costs_ptr,
        cost_ptr,
        target_ptr,
        ends_ptr,
        valid_ptr,
        counter_ptr,
        consts_ptr,
        n,
        nv,
        n_keys,
        steps,
        KEYS: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        """Per edge: may it collapse (:func:`_edge_ok`), its collapse positions and costs (:func:`_collapse_costs`),
        which endpoint it keeps and drops (``ends[0]``, ``ends[1]``), and whether it is a candidate (``valid``, int8:
        it may collapse at a finite cost and, ``KEYS`` 1, its key is not in the sorted ``keys`` — last round's
        refusals — or, ``KEYS`` 2, it is); the candidates are counted in ``counter[0]``."""
        i = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
        m = i < n
        tiny = tl.load(consts_ptr + 0)
        inf = tl.load(consts_ptr + 1)
        a = tl.load(edges_ptr + i, mask=m, other=0)
        b = tl.load(edges_ptr + n + i, mask=m, other=0)
        c = tl.load(edges_ptr + 2 * n + i, mask=m, other=0)
        o0 = tl.load(edges_ptr + 3 * n + i, mask=m, other=0)
        o1 = tl.load(edges_ptr + 4 * n + i, mask=m, other=0)
        ok, fa, fb = _edge_ok(c, a, b, o0, o1, deg_ptr, marks_ptr, nv, m)
        cost = _collapse_costs(
            q_ptr, pos_ptr, a, b, fa, fb, i, m, tiny, inf, cands_ptr, costs_ptr, cost_ptr, target_ptr
        )
        valid = ok & (cost < inf)
        if KEYS != 0:
            key = tl.load(edges_ptr + 5 * n + i, mask=m, other=-1)
            hit = _sorted_member(keys_ptr, n_keys, steps, key, valid)
            if KEYS == 1:
                valid = valid & ~hit
            else:
                valid = valid & hit
        tl.store(ends_ptr + i, tl.where(fb, b, a), mask=m)
        tl.store(ends_ptr + n + i, tl.where(fb, a, b), mask=m)
        tl.store(valid_ptr + i, valid.to(tl.int8), mask=m)
        tl.atomic_add(counter_ptr, tl.sum(valid.to(tl.int64), axis=0))

    @triton.jit(do_not_specialize=["k"])
    def _bucket_kernel(order_ptr, keys_ptr, out_ptr, k, BUCKETS: tl.constexpr, BLOCK: tl.constexpr):
        """``out[r]`` = the cost bucket of rank ``r`` (``r·BUCKETS // k``) above 40 bits of the hashed edge key."""
        r = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
        m = r < k
        e = tl.load(order_ptr + r, mask=m, other=0)
        key = tl.load(keys_ptr + e, mask=m, other=0)
        bucket = (r * BUCKETS) // k
        tl.store(out_ptr + r, (bucket << 40) | (_splitmix(key) & 1099511627775), mask=m)  # (1 << 40) - 1

    @triton.jit(do_not_specialize=["k"])
    def _prio_kernel(order_ptr, second_ptr, prio_ptr, k, BLOCK: tl.constexpr):
        """``prio[order[second[r]]] = r``: the candidates' priorities, by bucket then hash."""
        r = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
        m = r < k
        j = tl.load(second_ptr + r, mask=m, other=0)
        e = tl.load(order_ptr + j, mask=m, other=0)
        tl.store(prio_ptr + e, r, mask=m)

    @triton.jit(do_not_specialize=["n"])
    def _adjacency_kernel(a_ptr, b_ptr, rowstart_ptr, fill_ptr, adj_ptr, n, BLOCK: tl.constexpr):
        """Each edge's endpoints into each other's row of the vertex adjacency (rows at ``rowstart``; the order
        within a row is whatever the atomic counters ``fill`` give)."""
        i = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
        m = i < n
        a = tl.load(a_ptr + i, mask=m, other=0)
        b = tl.load(b_ptr + i, mask=m, other=0)
        sa = tl.atomic_add(fill_ptr + a, 1, mask=m)
        sb = tl.atomic_add(fill_ptr + b, 1, mask=m)
        tl.store(adj_ptr + tl.load(rowstart_ptr + a, mask=m, other=0) + sa, b, mask=m)
        tl.store(adj_ptr + tl.load(rowstart_ptr + b, mask=m, other=0) + sb, a, mask=m)

    @triton.jit(do_not_specialize=["n", "big", "p"])
    def _pick_kernel(
        prio_ptr, free_ptr, a_ptr, b_ptr, rmin_ptr, sel_ptr, cid_ptr, ring_ptr, n, big, p, BLOCK: tl.constexpr
    ):
        """Pass ``p``'s picks (:func:`_choose_kernel`'s test): ``sel = p + 1``, the priority spent (``big``), the
        endpoints' collapse ``cid`` = the edge, and from the second pass on ``ring`` = ``p + 1`` at the endpoints
        (blocked around by :func:`_block_reset_kernel`)."""
        i = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
        m = i < n
        a, b, pr, live = _taking_part(prio_ptr, free_ptr, a_ptr, b_ptr, i, m, big)
        ra = tl.load(rmin_ptr + a, mask=m, other=big)
        rb = tl.load(rmin_ptr + b, mask=m, other=big)
        picked = live & (pr == ra) & (pr == rb)
        tl.store(sel_ptr + i, tl.full([BLOCK], 1, dtype=tl.int8) * (p + 1).to(tl.int8), mask=picked)
        tl.store(prio_ptr + i, tl.full([BLOCK], 1, dtype=tl.int64) * big, mask=picked)
        tl.store(cid_ptr + a, i, mask=picked)
        tl.store(cid_ptr + b, i, mask=picked)
        if p > 0:
            tag = tl.full([BLOCK], 1, dtype=tl.int8) * (p + 1).to(tl.int8)
            tl.store(ring_ptr + a, tag, mask=picked)
            tl.store(ring_ptr + b, tag, mask=picked)

    @triton.jit(do_not_specialize=["n", "nv", "tag", "big"])
    def _block_reset_kernel(faces_ptr, ring_ptr, free_ptr, vmin_ptr, n, nv, tag, big, BLOCK: tl.constexpr):
        """Every corner of a face with a corner whose ``ring`` is ``tag`` leaves ``free``; every corner's ``vmin``
        (both rows) is reset to ``big`` for the next pass."""
        i = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
        m = i < n
        f0 = tl.load(faces_ptr + i * 3 + 0, mask=m, other=0)
        f1 = tl.load(faces_ptr + i * 3 + 1, mask=m, other=0)
        f2 = tl.load(faces_ptr + i * 3 + 2, mask=m, other=0)
        r0 = tl.load(ring_ptr + f0, mask=m, other=0)
        r1 = tl.load(ring_ptr + f1, mask=m, other=0)
        r2 = tl.load(ring_ptr + f2, mask=m, other=0)
        hit = m & ((r0 == tag) | (r1 == tag) | (r2 == tag))
        zero = tl.zeros([BLOCK], dtype=tl.int8)
        tl.store(free_ptr + f0, zero, mask=hit)
        tl.store(free_ptr + f1, zero, mask=hit)
        tl.store(free_ptr + f2, zero, mask=hit)
        top = tl.full([BLOCK], 1, dtype=tl.int64) * big
        for j in tl.static_range(2):
            tl.store(vmin_ptr + j * nv + f0, top, mask=m)
            tl.store(vmin_ptr + j * nv + f1, top, mask=m)
            tl.store(vmin_ptr + j * nv + f2, top, mask=m)

    @triton.jit(do_not_specialize=["n", "nv", "steps", "lo_tag", "hi_tag"])
    def _settle_kernel(
        sel_ptr,
        edges_ptr,
        rowstart_ptr,
        deg_ptr,
        adj_ptr,
        faults_ptr,
        costs_ptr,
        cands_ptr,
        cost_ptr,
        target_ptr,
        good_ptr,
        ring_ptr,
        counter_ptr,
        consts_ptr,
        n,
        nv,
        steps,
        lo_tag,
        hi_tag,
        RING: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        """For the edges picked in passes ``lo_tag − 1 … hi_tag − 1`` (``sel`` between the tags): the link condition
        (the neighbours of ``a`` other than ``b`` that are ``b``'s neighbours too — a binary search of the sorted edge
        keys each — number exactly the edge's faces), the cheapest position without a fault (``faults``, the first of
        equal costs) into ``cost``/``target``; ``good`` = both hold; ``RING``: the good ones' endpoints get ``ring``
        1. Counts into ``counter``: [1] good, [2] faces the good collapses remove, [3] refused."""
        i = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
        m = i < n
        s = tl.load(sel_ptr + i, mask=m, other=0).to(tl.int32)
        m = m & (s >= lo_tag) & (s <= hi_tag)
        inf = tl.load(consts_ptr + 1)
        a = tl.load(edges_ptr + i, mask=m, other=0)
        b = tl.load(edges_ptr + n + i, mask=m, other=0)
        c = tl.load(edges_ptr + 2 * n + i, mask=m, other=0)
        first = tl.load(rowstart_ptr + a, mask=m, other=0)
        count = tl.load(deg_ptr + a, mask=m, other=0)
        common = tl.zeros([BLOCK], dtype=tl.int64)
        top = tl.max(tl.where(m, count, 0), axis=0)
        for j in range(0, top):
            live = m & (j < count)
            x = tl.load(adj_ptr + first + j, mask=live, other=0)
            hit = _sorted_member(edges_ptr + 5 * n, n, steps, tl.minimum(b, x) * nv + tl.maximum(b, x), live)
            common += (hit & (x != b)).to(tl.int64)
        best = tl.zeros([BLOCK], dtype=tl.float64) + inf
        which = tl.zeros([BLOCK], dtype=tl.int64)
        for t in tl.static_range(4):
            e = tl.load(costs_ptr + i * 4 + t, mask=m, other=0.0)
            f = tl.load(faults_ptr + i * 4 + t, mask=m, other=1)
            e = tl.where(f == 0, e, inf)
            take = e < best
            best = tl.where(take, e, best)
            which = tl.where(take, t, which)
        good = m & (common == c) & (best < inf)
        tl.store(cost_ptr + i, best, mask=m)
        for d in tl.static_range(3):
            tl.store(target_ptr + i * 3 + d, tl.load(cands_ptr + i * 12 + which * 3 + d, mask=m, other=0.0), mask=m)
        tl.store(good_ptr + i, tl.full([BLOCK], 1, dtype=tl.int8), mask=good)
        if RING:
            one = tl.full([BLOCK], 1, dtype=tl.int8)
            tl.store(ring_ptr + a, one, mask=good)
            tl.store(ring_ptr + b, one, mask=good)
        tl.atomic_add(counter_ptr + 1, tl.sum(good.to(tl.int64), axis=0))
        tl.atomic_add(counter_ptr + 2, tl.sum(tl.where(good, c, 0), axis=0))
        tl.atomic_add(counter_ptr + 3, tl.sum((m & ~good).to(tl.int64), axis=0))

    @triton.jit(do_not_specialize=["n"])
    def _apply_kernel(good_ptr, ends_ptr, target_ptr, pos_ptr, q_ptr, remap_ptr, n, BLOCK: tl.constexpr):
        """The good collapses, at once (they are independent): the kept vertex moves to the target and takes the
        dropped one's quadric, the dropped vertex maps onto the kept one."""
        i = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
        m = i < n
        m = m & (tl.load(good_ptr + i, mask=m, other=0) != 0)
        kk = tl.load(ends_ptr + i, mask=m, other=0)
        dd = tl.load(ends_ptr + n + i, mask=m, other=0)
        for d in tl.static_range(3):
            tl.store(pos_ptr + kk * 3 + d, tl.load(target_ptr + i * 3 + d, mask=m, other=0.0), mask=m)
        for j in tl.static_range(10):
            qk = tl.load(q_ptr + kk * 10 + j, mask=m, other=0.0)
            qd = tl.load(q_ptr + dd * 10 + j, mask=m, other=0.0)
            tl.store(q_ptr + kk * 10 + j, qk + qd, mask=m)
        tl.store(remap_ptr + dd, kk, mask=m)


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
            _consts(dev),
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
    lim = _device_constants(dev, (*(float(x) for x in limits), 1e-300))
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


_CONSTANTS: dict[tuple[torch.device, tuple[float, ...]], torch.Tensor] = {}


def _device_constants(device: torch.device, values: tuple[float, ...]) -> torch.Tensor:
    """``values`` as a float64 tensor on ``device``, made once per device and values (a handful: the guard levels):
    a new one each round would be a copy from pageable host memory, which waits for the device."""
    key = (device, values)
    t = _CONSTANTS.get(key)
    if t is None:
        if len(_CONSTANTS) > 64:
            _CONSTANTS.clear()
        t = _CONSTANTS[key] = torch.tensor(values, dtype=torch.float64, device=device)
    return t


def _consts(device: torch.device) -> torch.Tensor:
    """``[1e-300, inf]`` float64 on ``device``: the kernels' tiny and infinite float64 constants."""
    return _device_constants(device, (1e-300, float("inf")))


def _grid(n: int) -> tuple[int]:
    return (max(1, triton.cdiv(n, BLOCK)),)


def round_edges(faces: torch.Tensor, nv: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The undirected edges of a face list on the device, as :func:`~meshforge.mesh.torch_decimate._edges` gives
    them (the same edges in the same order: sorted keys), with each edge's face count capped at 3 (= more than two),
    and the vertex degrees and border / non-manifold marks the edge flags need.

    Args:
        faces: ``[F, 3]`` int64 (contiguous) on a CUDA device; nv: the vertex count.

    Returns:
        ``(edges [6, E] int64 — rows a, b, faces, opposite vertex in the first and second face (−1: none), key
        a·nv + b —, deg [nv] int64, marks [2, nv] int8)``. One wait for the device (the edge count).
    """
    dev = faces.device
    s = 3 * faces.shape[0]
    key = torch.empty(s, dtype=torch.int64, device=dev)
    _half_edge_kernel[_grid(s)](faces, key, s, nv, BLOCK=BLOCK)
    ks, order = torch.sort(key)
    start = torch.empty(s, dtype=torch.int32, device=dev)
    _run_start_kernel[_grid(s)](ks, start, s, BLOCK=BLOCK)
    eid = torch.cumsum(start, 0)
    n_edges = int(eid[-1].item()) if s else 0
    edges = torch.empty((6, n_edges), dtype=torch.int64, device=dev)
    deg = torch.zeros(nv, dtype=torch.int64, device=dev)
    marks = torch.zeros((2, nv), dtype=torch.int8, device=dev)
    if s:
        _edge_scatter_kernel[_grid(s)](ks, order, eid, faces, edges, deg, marks, s, n_edges, nv, BLOCK=BLOCK)
    return edges, deg, marks


def fused_round(
    pos: torch.Tensor,
    faces: torch.Tensor,
    q: torch.Tensor,
    goal: int,
    min_area: float,
    fraction: float,
    guards: tuple[float, float],
    keys: torch.Tensor | None,
    keys_mode: int,
    tol: float,
    passes: int,
    buckets: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int, torch.Tensor]:
    """One round of :func:`~meshforge.mesh.torch_decimate._round` on a CUDA device with (almost) every step in a
    Triton kernel: the same edges, flags, costs, candidates, priorities, selection passes, guards and collapses,
    so the same result (up to the order of equal-cost collapses cut by the face budget), in about 25 kernel
    launches and 40 other operations instead of about 350, and four waits for the device.

    The chosen collapses stay per-edge masks (``sel``: the pass that picked an edge, plus one) instead of index
    lists: the guards of a pass run over every face (those around no collapse skipped in the kernel), so nothing
    waits for the device until the round's counts are read.

    Args:
        pos: ``[V, 3]`` float64 unit-scale positions; q: ``[V, 10]`` float64 quadrics — both updated in place.
        faces: ``[F, 3]`` int64 (contiguous). goal, min_area, fraction, guards, tol: as ``_round``'s.
        keys: sorted int64 edge keys, or None; keys_mode: 1 — those edges are no candidates (the last round's
            refusals), 2 — only those edges are (0: ``keys`` unused).
        passes, buckets: :data:`~meshforge.mesh.torch_decimate.PASSES`, :data:`~meshforge.mesh.torch_decimate.BUCKETS`.

    Returns:
        ``(pos, faces, q, collapsed, rejected, refused keys)`` as ``_round``'s (refused keys sorted).
    """
    dev = pos.device
    faces = faces.contiguous()
    nv, nf = pos.shape[0], faces.shape[0]
    big = torch.iinfo(torch.int64).max
    none = torch.zeros(0, dtype=torch.int64, device=dev)
    edges, deg, marks = round_edges(faces, nv)
    n = edges.shape[1]
    if n == 0:
        return pos, faces, q, 0, 0, none
    consts = _consts(dev)
    cands = torch.empty((n, 4, 3), dtype=torch.float64, device=dev)
    costs = torch.empty((n, 4), dtype=torch.float64, device=dev)
    cost = torch.empty(n, dtype=torch.float64, device=dev)
    target = torch.empty((n, 3), dtype=torch.float64, device=dev)
    ends = torch.empty((2, n), dtype=torch.int64, device=dev)
    flags = torch.zeros((3, n), dtype=torch.int8, device=dev)  # valid, sel (pass + 1), good
    counter = torch.zeros(4, dtype=torch.int64, device=dev)  # candidates, good, faces removed, refused
    if keys is None or keys_mode == 0 or (keys_mode == 1 and keys.numel() == 0):
        keys, keys_mode = none, 0
    n_keys = keys.numel()
    steps = max(1, int(n_keys).bit_length())
    _round_edge_kernel[_grid(n)](
        edges, q, pos, deg, marks, keys, cands, costs, cost, target, ends, flags[0], counter, consts,
        n, nv, n_keys, steps, KEYS=keys_mode, BLOCK=BLOCK,
    )  # fmt: skip
    n_valid = int(counter[0].item())
    if n_valid == 0:
        return pos, faces, q, 0, 0, none
    # candidates: the cheapest valid edges; priorities by cost bucket, then a hash of the key (Luby)
    needed = (nf - goal + 1) // 2
    k = min(n_valid, max(needed, int(fraction * n_valid)))
    order = torch.argsort(torch.where(flags[0] != 0, cost, torch.inf))[:k]
    mixed = torch.empty(k, dtype=torch.int64, device=dev)
    _bucket_kernel[_grid(k)](order, edges[5], mixed, k, BUCKETS=buckets, BLOCK=BLOCK)
    second = torch.argsort(mixed)
    prio = torch.full((n,), big, dtype=torch.int64, device=dev)
    _prio_kernel[_grid(k)](order, second, prio, k, BLOCK=BLOCK)
    # the vertex adjacency rows, for the link condition
    rowstart = torch.cumsum(deg, 0) - deg
    fill = torch.zeros(nv, dtype=torch.int64, device=dev)
    adj = torch.empty(2 * n, dtype=torch.int64, device=dev)
    _adjacency_kernel[_grid(n)](edges[0], edges[1], rowstart, fill, adj, n, BLOCK=BLOCK)

    vmin = torch.full((2, nv), big, dtype=torch.int64, device=dev)
    free = torch.ones(nv, dtype=torch.int8, device=dev)
    ring = torch.zeros(nv, dtype=torch.int8, device=dev)
    cid = torch.full((2, nv), -1, dtype=torch.int64, device=dev)
    worst = torch.zeros((2, n), dtype=torch.int64, device=dev)
    faults = torch.zeros((2, n, 4), dtype=torch.int32, device=dev)
    limits = _device_constants(dev, (float(guards[0]), float(guards[1]), float(min_area), float(tol), 1e-300))
    has_tol = bool(tol < float("inf"))
    sel, good = flags[1], flags[2]
    a, b = edges[0], edges[1]
    steps_keys = max(1, n.bit_length())

    def settle(row: int, lo: int, hi: int) -> None:
        """The guards of the picks of passes lo − 1 … hi − 1 (their collapses in ``cid[row]``)."""
        fa = (faces, cid[row], pos, a, b, cands)
        _faults_kernel[_grid(nf)](
            *fa, worst[row], limits, worst[row], nf, T=4, MODE=2, HAS_TOL=False, BLOCK=BLOCK, CID=True
        )
        _faults_kernel[_grid(nf)](
            *fa, worst[row].view(torch.float64), limits, faults[row], nf, T=4, MODE=1, HAS_TOL=has_tol, BLOCK=BLOCK,
            CID=True,
        )  # fmt: skip
        _settle_kernel[_grid(n)](
            sel, edges, rowstart, deg, adj, faults[row], costs, cands, cost, target, good, ring, counter, consts,
            n, nv, steps_keys, lo, hi, RING=row == 0, BLOCK=BLOCK,
        )  # fmt: skip

    for p in range(passes):
        _edge_min_kernel[_grid(n)](prio, free, a, b, vmin[0], n, big, BLOCK=BLOCK)
        _face_min_kernel[_grid(nf)](faces, vmin[0], vmin[1], nf, big, BLOCK=BLOCK)
        _pick_kernel[_grid(n)](prio, free, a, b, vmin[1], sel, cid[min(p, 1)], ring, n, big, p, BLOCK=BLOCK)
        if p == 0:  # most of the round's collapses: checked now, so that the refused ones block nothing
            settle(0, 1, 1)
            _block_reset_kernel[_grid(nf)](faces, ring, free, vmin, nf, nv, 1, big, BLOCK=BLOCK)
        elif p + 1 < passes:  # the later passes' few: checked together at the end
            _block_reset_kernel[_grid(nf)](faces, ring, free, vmin, nf, nv, p + 1, big, BLOCK=BLOCK)
    if passes > 1:
        settle(1, 2, passes)
    _, n_good, removes, rejected = counter.tolist()  # the round's wait for the passes
    refused = none
    if rejected:
        refused = torch.sort(torch.where((sel != 0) & (good == 0), edges[5], big))[0][:rejected]
    if n_good == 0:
        return pos, faces, q, 0, rejected, refused
    if removes > nf - goal:  # do not overshoot the budget by more than one face: cheapest first
        win = torch.nonzero(good).squeeze(1)
        win = win[torch.argsort(cost[win])]
        counts = edges[2][win]
        win = win[torch.cumsum(counts, 0) - counts < nf - goal]
        good.zero_()
        good[win] = 1
        n_good = int(win.numel())
    remap = torch.arange(nv, device=dev)
    _apply_kernel[_grid(n)](good, ends, target, pos, q, remap, n, BLOCK=BLOCK)
    faces = remap[faces]
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])]
    return pos, faces, q, n_good, rejected, refused
