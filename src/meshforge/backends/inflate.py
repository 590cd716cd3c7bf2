"""``inflate``: a weightless single-view reconstruction by silhouette inflation.

The classical method of Teddy (Igarashi et al., SIGGRAPH 1999) and Monster Mash (Dvorožňák et al.,
SIGGRAPH Asia 2020), with the Poisson inflation of Lumo (Johnston, NPAR 2002) and Ink-and-Ray (Sýkora et
al., TOG 2014): the object's mask, seen by an orthographic camera looking down −Z, is turned into a closed,
smooth volume symmetric about the plane z = 0.

**Profile.** Let Ω be the mask, in metres (the prepared square picture spans [−0.5, 0.5]² in x and y).
Solve the Poisson equation ∇²P = −1 in Ω with P = 0 on ∂Ω, and set the half-thickness

    t(x, y) = depth_scale · sqrt(2 · P(x, y)),   t ≥ min_thickness inside Ω.

For a long strip of half-width a this gives t = sqrt(a² − d²) at distance d from the strip's axis: a
*circular* cross-section, so tubes (legs, handles, antennae) become round; for a disc of radius a it gives
an oblate spheroid of half-depth a/√2. Thickness therefore grows with the local width of the mask and
vanishes with a vertical tangent at the silhouette, the behaviour of Teddy's "chordal axis" inflation
without its triangulation.

**Volume.** The field's density is the signed function (positive inside, metres)

    f(x, y, z) = min( s(x, y),  t(x, y) − |z| )

where s is the 2D signed distance to the mask boundary (positive inside). Its zero set is the inflated
surface; the first term makes the isosurface cross the silhouette exactly at the mask boundary.

**Appearance.** One picture shows the front only; the back is made up, plausibly and without mirrored
detail (no face on the back of a head, no mirror-written label). With F(x, y) the picture's colour (extended
outward past the mask, so the silhouette never picks up background colour):

* **front** (z > 0): F, the picture;
* **back** (z < 0): B = (1 − w)·R + w·L, where L is the *low-pass* front, a Gaussian blur of F over the
  mask (normalised convolution, σ = ``back_blur`` × the object's size, √(mask area)), which keeps the
  object's overall colours and drops every detail; R is the *rim colour*, F on a band along the
  silhouette (smoothed along it, σ = ``back_blur``/4 × size) carried inward from the nearest rim point,
  so the colours at the silhouette wrap round onto the back; and w = smoothstep(d / (``rim_carry`` ×
  size)) grows with the distance d from the silhouette: the rim colour near the outline, the low-pass
  colour in the middle. Thin parts (legs, handles) are therefore their own rim colour all round;
* **sides**: front and back are blended by q = z / t(x, y) (the point's height over the half-thickness:
  ±1 on the front and back surfaces, crossing 0 at the silhouette) with smoothstep(−½, ½, q); at the
  silhouette B ≈ F, since both come from the same rim colours, so the seam is soft.

Colours are blended in sRGB. Metallic is 0 and roughness a constant (0.8 by default, a matte dielectric),
since one picture does not separate specular response.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as sla
from scipy import ndimage

from ..errors import InputError
from ..fields.base import grid_axes
from ..types import Camera, Image


def _poisson_inflation(mask: np.ndarray, spacing: float) -> np.ndarray:
    """Solve ∇²P = −1 on the mask with P = 0 outside (5-point Laplacian, direct sparse solve).

    Args:
        mask: ``[H, W]`` bool.
        spacing: grid spacing in metres.

    Returns:
        ``[H, W]`` float64 P (0 outside the mask), in m².
    """
    h, w = mask.shape
    n = int(mask.sum())
    if n == 0:
        return np.zeros(mask.shape)
    index = -np.ones(mask.shape, dtype=np.int64)
    index[mask] = np.arange(n)
    ii, jj = np.nonzero(mask)
    rows = [np.arange(n)]
    cols = [np.arange(n)]
    vals = [np.full(n, 4.0)]
    for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        ni, nj = ii + di, jj + dj
        ok = (ni >= 0) & (ni < h) & (nj >= 0) & (nj < w)
        k = np.full(n, -1, dtype=np.int64)
        k[ok] = index[ni[ok], nj[ok]]
        good = k >= 0
        rows.append(np.flatnonzero(good))
        cols.append(k[good])
        vals.append(-np.ones(int(good.sum())))
    a = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    p = sla.spsolve(a, np.full(n, spacing * spacing))
    out = np.zeros(mask.shape)
    out[mask] = p
    return out


def _signed_distance(mask: np.ndarray) -> np.ndarray:
    """2D signed distance to the boundary of a binary mask, in pixels, positive inside.

    The boundary is taken half-way between an inside and an outside pixel centre.
    """
    inside = ndimage.distance_transform_edt(mask)
    outside = ndimage.distance_transform_edt(~mask)
    return np.where(mask, inside - 0.5, -(outside - 0.5)).astype(np.float32)


def _bilinear(img: np.ndarray, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Sample ``[H, W]`` or ``[H, W, C]`` at fractional pixel-centre coordinates (edge-clamped)."""
    h, w = img.shape[:2]
    c = np.clip(cols, 0.0, w - 1.0)
    r = np.clip(rows, 0.0, h - 1.0)
    c0 = np.minimum(c.astype(np.int64), w - 2)
    r0 = np.minimum(r.astype(np.int64), h - 2)
    fc = (c - c0).astype(np.float32)
    fr = (r - r0).astype(np.float32)
    if img.ndim == 3:
        fc = fc[..., None]
        fr = fr[..., None]
    top = img[r0, c0] * (1 - fc) + img[r0, c0 + 1] * fc
    bottom = img[r0 + 1, c0] * (1 - fc) + img[r0 + 1, c0 + 1] * fc
    return (top * (1 - fr) + bottom * fr).astype(np.float32)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _masked_blur(rgb: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Normalised convolution: the Gaussian-weighted mean of ``rgb`` over the pixels where ``weight`` is 1.

    Args:
        rgb: ``[H, W, 3]`` float32.
        weight: ``[H, W]`` bool or float32 in [0, 1].
        sigma: Gaussian standard deviation, pixels.

    Returns:
        ``[H, W, 3]`` float32 (where no weighted pixel is within reach the value is meaningless, near 0).
    """
    import cv2

    h, w = weight.shape
    k = max(1, int(sigma // 4))  # a wide blur runs on a k× smaller picture (area-averaged), then upsampled
    m = weight.astype(np.float32)
    stack = np.concatenate([rgb * m[..., None], m[..., None]], axis=2)
    if k > 1:
        stack = cv2.resize(stack, (max(1, w // k), max(1, h // k)), interpolation=cv2.INTER_AREA)
    stack = cv2.GaussianBlur(stack, (0, 0), sigma / k)
    if k > 1:
        stack = cv2.resize(stack, (w, h), interpolation=cv2.INTER_LINEAR)
    return (stack[..., :3] / np.maximum(stack[..., 3:], 1e-6)).astype(np.float32)


def back_color(rgb: np.ndarray, mask: np.ndarray, back_blur: float, rim_carry: float) -> np.ndarray:
    """The made-up colour of the unseen back: rim colours carried round, blending into the low-pass front.

    ``B = (1 − w)·R + w·L`` with L the front blurred over the mask (σ = ``back_blur`` × size), R the front on
    a 2-pixel band inside the silhouette, smoothed along it (σ = ``back_blur``/4 × size) and extended to every
    pixel from its nearest band pixel, and ``w = smoothstep(d / (rim_carry × size))`` for d the distance to
    the silhouette; size = √(mask area) in pixels. See the module docstring.

    Args:
        rgb: ``[S, S, 3]`` float32 sRGB in [0, 1], the picture (already extended past the mask).
        mask: ``[S, S]`` bool object mask.
        back_blur: low-pass σ as a fraction of the object's size.
        rim_carry: distance over which the rim colour gives way to the low-pass colour, same unit.

    Returns:
        ``[S, S, 3]`` float32 sRGB in [0, 1].
    """
    size = float(np.sqrt(mask.sum()))
    low = _masked_blur(rgb, mask, max(back_blur * size, 1.0))
    depth = ndimage.distance_transform_edt(mask)
    band = mask & (depth <= 2.0)
    rim = _masked_blur(rgb, band, max(0.25 * back_blur * size, 1.0))
    _, (ri, ci) = ndimage.distance_transform_edt(~band, return_indices=True)
    rim = rim[ri, ci]
    w = _smoothstep(depth / max(rim_carry * size, 1.0))[..., None].astype(np.float32)
    return np.clip(rim + (low - rim) * w, 0.0, 1.0).astype(np.float32)


class InflateField:
    """The field of an inflated silhouette; see the module docstring for the construction.

    Built by :class:`InflateBackend`; all maps are ``[S, S]`` over the prepared picture, whose pixel
    column c and row r have centres at x = (c + 0.5)/S − 0.5, y = 0.5 − (r + 0.5)/S (metres).
    """

    iso_level = 0.0

    def __init__(
        self,
        signed_distance: np.ndarray,
        half_thickness: np.ndarray,
        color: np.ndarray,
        roughness: float,
        back_color: np.ndarray | None = None,
        min_thickness: float = 1e-3,
    ) -> None:
        self.size = int(signed_distance.shape[0])
        self._sd = signed_distance.astype(np.float32)
        self._t = half_thickness.astype(np.float32)
        if back_color is None:
            self._rgb = self._back = color.astype(np.float32)
        else:
            # front, back and thickness stacked: color() gathers all three at once (front and back are views)
            self._maps = np.concatenate([color, back_color, self._t[..., None]], axis=2, dtype=np.float32)
            self._rgb, self._back = self._maps[..., :3], self._maps[..., 3:6]
        self._min_t = float(min_thickness)
        self._roughness = float(roughness)
        zmax = float(self._t.max()) if self._t.size else 0.0
        half = 0.5
        if zmax > half:
            raise InputError(f"inflated depth {zmax:.3f} m exceeds the bounding box")
        self.bbox_min = np.array([-half, -half, -half], dtype=np.float32)
        self.bbox_max = np.array([half, half, half], dtype=np.float32)

    def _pixel(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.size
        return (x + 0.5) * s - 0.5, (0.5 - y) * s - 0.5

    def density(self, points: np.ndarray) -> np.ndarray:
        """``[N, 3]`` float32 → ``[N]`` float32 signed value in metres, positive inside."""
        p = np.asarray(points, dtype=np.float32)
        cols, rows = self._pixel(p[:, 0], p[:, 1])
        sd = _bilinear(self._sd, cols, rows)
        t = _bilinear(self._t, cols, rows)
        return np.minimum(sd, t - np.abs(p[:, 2])).astype(np.float32)

    def density_grid(self, resolution: int) -> np.ndarray:
        """Fast path of :func:`~meshforge.fields.base.sample_grid`: the same values as :meth:`density`
        on the grid, computed from ``[R, R]`` bilinear samples of the 2D maps broadcast along z."""
        xs, ys, zs = grid_axes(self, resolution)
        cols, rows = self._pixel(xs[:, None], ys[None, :])
        cols = np.broadcast_to(cols, (resolution, resolution))
        rows = np.broadcast_to(rows, (resolution, resolution))
        sd = _bilinear(self._sd, cols, rows)
        t = _bilinear(self._t, cols, rows)
        out = t[:, :, None] - np.abs(zs)[None, None, :]
        np.minimum(out, sd[:, :, None], out=out)
        return out

    def color(self, points: np.ndarray) -> np.ndarray:
        """``[N, 3]`` float32 → ``[N, 3]`` float32 sRGB in [0, 1]: the picture on the front, the back
        colour behind, blended across the sides (see the module docstring)."""
        p = np.asarray(points, dtype=np.float32)
        cols, rows = self._pixel(p[:, 0], p[:, 1])
        if self._back is self._rgb:
            return np.clip(_bilinear(self._rgb, cols, rows), 0.0, 1.0)
        # front, back and thickness from one bilinear gather of the stacked maps (same values as three)
        maps = _bilinear(self._maps, cols, rows)
        front, back = maps[:, :3], maps[:, 3:6]
        t = np.maximum(maps[:, 6], self._min_t)
        w = np.clip(p[:, 2] / t + 0.5, 0.0, 1.0)  # smoothstep(-1/2, 1/2, z / t)
        w = (w * w * (3.0 - 2.0 * w))[:, None]
        return np.clip(back + (front - back) * w, 0.0, 1.0).astype(np.float32)

    def material(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Metallic 0 and the backend's constant roughness, ``[N]`` float32 each."""
        n = len(points)
        return np.zeros(n, dtype=np.float32), np.full(n, self._roughness, dtype=np.float32)


class InflateGridField(InflateField):
    """An :class:`InflateField` whose extraction grid is built on a device (a CUDA GPU): the ``[R, R]`` maps of
    :meth:`~InflateField.density_grid` are sampled on the host, then broadcast along z on ``device``, so the
    isosurface (:func:`meshforge.fields.isosurface.extract`, ``torch`` engine) and the finishing stages
    (``--finish-engine auto``) run there and the ``R³`` grid never exists on the host.

    Args:
        field: the field to wrap (its maps are shared, not copied).
        device: the ``torch`` device of the grid.
    """

    def __init__(self, field: InflateField, device: str) -> None:
        self.__dict__.update(field.__dict__)
        self.device = device

    def density_grid_tensor(self, resolution: int) -> Any:
        """:meth:`~InflateField.density_grid` as a ``[R, R, R]`` float32 tensor on :attr:`device` (the same
        values: the 2D maps are the same host samples, the broadcast is exact)."""
        import torch

        xs, ys, zs = grid_axes(self, resolution)
        cols, rows = self._pixel(xs[:, None], ys[None, :])
        cols = np.broadcast_to(cols, (resolution, resolution))
        rows = np.broadcast_to(rows, (resolution, resolution))
        sd = torch.from_numpy(_bilinear(self._sd, cols, rows)).to(self.device)
        t = torch.from_numpy(_bilinear(self._t, cols, rows)).to(self.device)
        z = torch.from_numpy(np.abs(zs)).to(self.device)
        return torch.minimum(t[:, :, None] - z[None, None, :], sd[:, :, None])


class InflateBackend:
    """Weightless single-view backend: silhouette inflation (see the module docstring).

    Args:
        depth_scale: multiplies the half-thickness profile (1.0: round tubes).
        min_thickness: smallest half-thickness inside the mask, metres (keeps thin parts meshable).
        roughness: the constant roughness of the material, in [0, 1].
        back_blur: σ of the low-pass front colour used on the back, as a fraction of the object's size
            (√(mask area)); larger keeps less of the front's layout.
        rim_carry: how far in from the silhouette the back shows the rim colours, same unit.
        work_size: resolution of the Poisson solve (the picture is resampled to this size).
        device: ``"cpu"`` or ``"auto"`` (the CPU; ``meshforge generate`` resolves ``--device auto`` to the first
            CUDA device first), ``"cuda"``/``"cuda:N"``: the Poisson solve and the colours run on the CPU; on a
            CUDA device the field is an :class:`InflateGridField`, whose extraction grid is built there (so the
            isosurface and the finishing stages run on that GPU).

    Raises:
        InputError: bad option values or device spelling.
        BackendError: a CUDA device PyTorch does not see.

    Attributes:
        input_size: side of the square prepared picture it expects (pixels).
        camera: orthographic, extent 1 m, looking down −Z.
    """

    name = "inflate"
    input_size = 512
    camera = Camera(kind="orthographic", extent=1.0)

    def __init__(
        self,
        *,
        depth_scale: float = 1.0,
        min_thickness: float = 0.004,
        roughness: float = 0.8,
        back_blur: float = 0.15,
        rim_carry: float = 0.1,
        work_size: int = 256,
        device: str = "cpu",
        **_: Any,
    ) -> None:
        if not 0.0 <= roughness <= 1.0:
            raise InputError(f"roughness must be in [0, 1], got {roughness}")
        if depth_scale <= 0:
            raise InputError(f"depth_scale must be positive, got {depth_scale}")
        if back_blur <= 0 or rim_carry <= 0:
            raise InputError(f"back_blur and rim_carry must be positive, got {back_blur} and {rim_carry}")
        self.back_blur = float(back_blur)
        self.rim_carry = float(rim_carry)
        self.depth_scale = float(depth_scale)
        self.min_thickness = float(min_thickness)
        self.roughness = float(roughness)
        self.work_size = int(work_size)
        from ..devices import resolve_device

        # "auto" stays on the CPU without importing torch (the CLI and the service pass a resolved device)
        self.device = "cpu" if device in ("cpu", "auto") else resolve_device(device)

    def info(self) -> dict[str, Any]:
        """Provenance of this backend for reports and the asset's extras."""
        return {
            "name": self.name,
            "weights": None,
            "device": self.device,
            "depth_scale": self.depth_scale,
            "min_thickness": self.min_thickness,
            "roughness": self.roughness,
            "back_blur": self.back_blur,
            "rim_carry": self.rim_carry,
        }

    def __call__(self, image: Image) -> InflateField:
        """Inflate a prepared picture into a field.

        Args:
            image: a prepared ``[S, S, 4]`` picture whose alpha is the object mask (see
                :func:`meshforge.preprocess.prepare`).

        Raises:
            InputError: the picture is not square or its mask is empty.
        """
        rgba = image.rgba
        s = rgba.shape[0]
        if rgba.shape[1] != s:
            raise InputError(f"{image.name}: inflate needs a square prepared picture, got {rgba.shape[1]}x{s}")
        mask = rgba[..., 3] >= 128
        if not mask.any():
            raise InputError(f"{image.name}: the object mask is empty")
        # Poisson on a coarser work grid, upsampled to the picture (P is smooth; the silhouette itself
        # comes from the full-resolution signed distance).
        import cv2

        w = min(self.work_size, s)
        alpha_small = cv2.resize(rgba[..., 3], (w, w), interpolation=cv2.INTER_AREA)
        p = _poisson_inflation(alpha_small >= 128, 1.0 / w)
        p_full = cv2.resize(p.astype(np.float32), (s, s), interpolation=cv2.INTER_LINEAR)
        t = self.depth_scale * np.sqrt(np.maximum(2.0 * p_full, 0.0))
        t = np.where(mask, np.maximum(t, self.min_thickness), 0.0)
        t = np.minimum(t, 0.49)
        sd = _signed_distance(mask) / s
        # outside the mask the half-thickness continues linearly negative, so the field is continuous
        t = np.where(mask, t, sd)
        rgb = rgba[..., :3].astype(np.float32) / 255.0
        inner = ndimage.binary_erosion(mask, iterations=1) if mask.sum() > 64 else mask
        if inner.any() and not inner.all():
            _, (ri, ci) = ndimage.distance_transform_edt(~inner, return_indices=True)
            rgb = rgb[ri, ci]
        back = back_color(rgb, mask, self.back_blur, self.rim_carry)
        field = InflateField(sd, t.astype(np.float32), rgb, self.roughness, back, self.min_thickness)
        return InflateGridField(field, self.device) if self.device.startswith("cuda") else field
