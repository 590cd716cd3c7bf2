"""UV-space rasterisation of a texture atlas in PyTorch (device-agnostic: the tensors' device does the work).

The torch twin of :func:`meshforge.geometry.raster.rasterize` without a depth buffer, as the baker uses it:
texel (row r, column c) has its centre at (c + 0.5, r + 0.5) in texel coordinates and belongs to a triangle
when that centre lies inside it by the edge functions (Pineda, "A parallel algorithm for polygon
rasterization", SIGGRAPH 1988) with the same tolerance. Candidate texels are every texel of each
triangle's bounding box, generated at once (``repeat_interleave``) in batches bounded by ``max_candidates``.

Where triangles share a texel (edges within the tolerance, overlapping charts) the triangle with the
largest index wins — what the numpy rasteriser does (its batches and its scatter run in face order and
the last write wins), so both produce the same atlas.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TorchRaster:
    """Result of :func:`rasterize`.

    Attributes:
        face: ``[H, W]`` int64, index of the triangle covering each texel, −1 where none.
        bary: ``[H, W, 3]`` float32 barycentric weights of the texel centre in that triangle (0 where none).
    """

    face: torch.Tensor
    bary: torch.Tensor

    @property
    def covered(self) -> torch.Tensor:
        """``[H, W]`` bool, texels covered by some triangle."""
        return self.face >= 0


def rasterize(
    tri: torch.Tensor, width: int, height: int, *, max_candidates: int = 1 << 22, eps: float = 1e-7
) -> TorchRaster:
    """Rasterise triangles given in texel coordinates.

    Args:
        tri: ``[F, 3, 2]`` float tensor of vertex positions in texels (x to the right, y down); computed in
            float64 on its device.
        width, height: raster size in texels.
        max_candidates: texels tested per batch (bounds memory: about 100 bytes each).
        eps: inside tolerance on normalised barycentrics (the numpy rasteriser's).

    Returns:
        A :class:`TorchRaster` on ``tri``'s device. Degenerate (zero-area) triangles cover nothing.
    """
    dev = tri.device
    t64 = tri.to(torch.float64)
    n = t64.shape[0]
    face_img = torch.full((height * width,), -1, dtype=torch.int64, device=dev)
    bary_img = torch.zeros((height * width, 3), dtype=torch.float32, device=dev)
    if n == 0:
        return TorchRaster(face_img.view(height, width), bary_img.view(height, width, 3))
    xs, ys = t64[:, :, 0], t64[:, :, 1]
    x0 = torch.clamp(torch.ceil(xs.amin(1) - 0.5), 0, width).long()
    x1 = torch.clamp(torch.floor(xs.amax(1) - 0.5), -1, width - 1).long()
    y0 = torch.clamp(torch.ceil(ys.amin(1) - 0.5), 0, height).long()
    y1 = torch.clamp(torch.floor(ys.amax(1) - 0.5), -1, height - 1).long()
    bw = torch.clamp(x1 - x0 + 1, min=0)
    bh = torch.clamp(y1 - y0 + 1, min=0)
    area2 = (xs[:, 1] - xs[:, 0]) * (ys[:, 2] - ys[:, 0]) - (xs[:, 2] - xs[:, 0]) * (ys[:, 1] - ys[:, 0])
    counts = torch.where(area2.abs() < 1e-12, torch.zeros_like(bw), bw * bh)
    faces_all = torch.nonzero(counts > 0).view(-1)
    if faces_all.numel() == 0:
        return TorchRaster(face_img.view(height, width), bary_img.view(height, width, 3))
    cum = torch.cumsum(counts[faces_all], 0)
    # batch boundaries on the host: one small copy, then a loop over a handful of batches
    cum_host = cum.cpu()
    start, n_all = 0, int(faces_all.numel())
    while start < n_all:
        base = int(cum_host[start - 1]) if start > 0 else 0
        stop = int(torch.searchsorted(cum_host, torch.tensor(base + max_candidates), right=True))
        stop = max(stop, start + 1)
        fids = faces_all[start:stop]
        start = stop
        c = counts[fids]
        fi = torch.repeat_interleave(fids, c)
        offsets = torch.arange(fi.numel(), device=dev) - torch.repeat_interleave(torch.cumsum(c, 0) - c, c)
        w = bw[fi]
        cx = (x0[fi] + offsets % w).to(torch.float64) + 0.5
        cy = (y0[fi] + torch.div(offsets, w, rounding_mode="floor")).to(torch.float64) + 0.5
        t = t64[fi]
        a2 = area2[fi]
        l0 = ((t[:, 1, 0] - cx) * (t[:, 2, 1] - cy) - (t[:, 2, 0] - cx) * (t[:, 1, 1] - cy)) / a2
        l1 = ((t[:, 2, 0] - cx) * (t[:, 0, 1] - cy) - (t[:, 0, 0] - cx) * (t[:, 2, 1] - cy)) / a2
        l2 = 1.0 - l0 - l1
        inside = (l0 >= -eps) & (l1 >= -eps) & (l2 >= -eps)
        fi = fi[inside]
        pix = (cy[inside].long()) * width + cx[inside].long()
        lam = torch.stack([l0[inside], l1[inside], l2[inside]], 1)
        face_img.scatter_reduce_(0, pix, fi, reduce="amax", include_self=True)
        won = face_img[pix] == fi  # one row per texel: a face covers a texel once
        bary_img[pix[won]] = torch.clamp(lam[won], 0.0, 1.0).to(torch.float32)
    return TorchRaster(face_img.view(height, width), bary_img.view(height, width, 3))


def rasterize_atlas(uv: torch.Tensor, faces: torch.Tensor, size: int) -> TorchRaster:
    """Rasterise a mesh's UV triangles into a ``size × size`` atlas (texel centres at (i + 0.5)/size), as
    :func:`meshforge.mesh.bake.rasterize_atlas` does.

    Args:
        uv: ``[V, 2]`` float glTF UVs; faces: ``[F, 3]`` int64 indices (same device).
        size: texels per side.
    """
    return rasterize(uv.to(torch.float64)[faces.long()] * size, size, size)


def texel_points(
    vertices: torch.Tensor, normals: torch.Tensor | None, faces: torch.Tensor, raster: TorchRaster
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Surface data of every covered texel.

    Args:
        vertices: ``[V, 3]`` positions (metres); normals: ``[V, 3]`` unit vertex normals or ``None``;
        faces: ``[F, 3]`` int64; raster: the atlas.

    Returns:
        ``(flat, face, bary, points, normals)``: flat texel indices ``[N]`` int64 (row-major), low-poly face
        ``[N]`` int64, barycentrics ``[N, 3]`` float64, 3D points ``[N, 3]`` float64 and the unit interpolated
        vertex normals ``[N, 3]`` float64 (``None`` without normals).
    """
    flat = torch.nonzero(raster.face.view(-1) >= 0).view(-1)
    face = raster.face.view(-1)[flat]
    bary = raster.bary.view(-1, 3)[flat].to(torch.float64)
    idx = faces.long()[face]
    points = torch.einsum("nk,nkd->nd", bary, vertices.to(torch.float64)[idx])
    nrm = None
    if normals is not None:
        nrm = torch.einsum("nk,nkd->nd", bary, normals.to(torch.float64)[idx])
        nrm = nrm / torch.clamp(torch.linalg.norm(nrm, dim=1, keepdim=True), min=1e-20)
    return flat, face, bary, points, nrm
