"""Attribute sampling of dense surface parts on tensors: the torch twins of
:meth:`meshforge.io.scene.SourcePart.sample` and :meth:`meshforge.fields.surface.FieldSurfacePart.sample`,
so the GPU bake queries the source where its projection ran, without a host round trip.

Same formulas, same order of operations, same float32 roundings where the numpy path rounds (its sRGB
transfer functions return float32): base colour as the linear product of texture, factor and vertex
colour (glTF 2.0 §3.9.2), metallic/roughness from the B/G channels, occlusion with its strength
(§3.9.3), and the shading normal perturbed by the normal map in the part's tangent frame (§3.7.2.1).
Textures are sampled bilinearly with the glTF sampler wrap modes (§3.8.4), as
:func:`meshforge.geometry.texture.sample_texture`.

A part of another type is sampled by its own numpy method: the (face, barycentric) rows are copied to
the host once per call. A field's numpy methods (``material``; ``color`` without ``color_tensor``) get
the points copied to the host; a field with ``pbr_tensor`` (TRELLIS.2's sparse voxels) is sampled on the device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..fields.base import PBRAttributes, has_real_alpha
from ..fields.surface import FieldSurfacePart
from ..gltf import CLAMP_TO_EDGE, MIRRORED_REPEAT, REPEAT
from ..io.scene import SourcePart

Tensors = dict[str, torch.Tensor]


def _wrap_index(i: torch.Tensor, n: int, mode: int) -> torch.Tensor:
    if mode == CLAMP_TO_EDGE:
        return i.clamp(0, n - 1)
    if mode == MIRRORED_REPEAT:
        m = torch.remainder(i, 2 * n)
        return torch.where(m >= n, 2 * n - 1 - m, m)
    return torch.remainder(i, n)


def sample_texture(image: torch.Tensor, uv: torch.Tensor, wrap: tuple[int, int] = (REPEAT, REPEAT)) -> torch.Tensor:
    """Bilinear texture sampling with glTF wrap modes; :func:`meshforge.geometry.texture.sample_texture` on
    tensors (texel centres at ``((j + 0.5)/W, (i + 0.5)/H)``, neighbours wrapped independently).

    Args:
        image: ``[H, W, C]`` or ``[H, W]`` tensor (uint8 or float); uv: ``[N, 2]`` float tensor (same device).
        wrap: ``(wrapS, wrapT)`` glTF sampler constants.

    Returns:
        ``[N, C]`` (or ``[N]``) float64 values in the image's units (0–255 for uint8).
    """
    h, w = int(image.shape[0]), int(image.shape[1])
    uv = torch.nan_to_num(uv.to(torch.float64), nan=0.0, posinf=0.0, neginf=0.0)
    x = uv[:, 0] * w - 0.5
    y = uv[:, 1] * h - 0.5
    if wrap[0] != CLAMP_TO_EDGE:
        x = torch.remainder(x, 2.0 * w)
    if wrap[1] != CLAMP_TO_EDGE:
        y = torch.remainder(y, 2.0 * h)
    x = x.clamp(-2.0 * w, 4.0 * w)
    y = y.clamp(-2.0 * h, 4.0 * h)
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = x - x0, y - y0
    xi, yi = x0.long(), y0.long()
    c0, c1 = _wrap_index(xi, w, wrap[0]), _wrap_index(xi + 1, w, wrap[0])
    r0, r1 = _wrap_index(yi, h, wrap[1]), _wrap_index(yi + 1, h, wrap[1])
    if image.ndim == 3:
        fx, fy = fx[:, None], fy[:, None]

    def at(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return image[r, c].to(torch.float64)

    top = at(r0, c0) * (1.0 - fx) + at(r0, c1) * fx
    bottom = at(r1, c0) * (1.0 - fx) + at(r1, c1) * fx
    return top * (1.0 - fy) + bottom * fy


def srgb_to_linear(c: torch.Tensor) -> torch.Tensor:
    """IEC 61966-2-1 decoding, as :func:`meshforge.geometry.color.srgb_to_linear` (rounded to float32)."""
    c = c.to(torch.float64).clamp(0.0, 1.0)
    return torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).to(torch.float32)


def linear_to_srgb(c: torch.Tensor) -> torch.Tensor:
    """IEC 61966-2-1 encoding, as :func:`meshforge.geometry.color.linear_to_srgb` (rounded to float32)."""
    c = c.to(torch.float64).clamp(0.0, 1.0)
    return torch.where(c <= 0.0031308, c * 12.92, 1.055 * torch.pow(c, 1.0 / 2.4) - 0.055).to(torch.float32)


def _unit_rows(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    length = torch.linalg.norm(v, dim=-1)
    out = torch.where(length[..., None] > 1e-20, v / length.clamp(min=1e-300)[..., None], torch.zeros_like(v))
    return out, length


class TorchSourcePart:
    """A :class:`SourcePart`'s geometry, factors and maps as tensors on a device; :meth:`sample` mirrors
    :meth:`SourcePart.sample` (``base_color``, ``metallic``, ``roughness``, ``occlusion``, ``normal``)."""

    def __init__(self, part: SourcePart, device: torch.device) -> None:
        def t(x: Any) -> torch.Tensor | None:
            return None if x is None else torch.tensor(np.asarray(x), device=device)

        mesh = part.mesh
        self.part = part
        self.faces = torch.as_tensor(np.asarray(mesh.faces, dtype=np.int64), device=device)
        self.uv = t(mesh.uv)
        self.normals = t(mesh.normals)
        self.linear_colors = t(part._linear_colors)
        self.face_normals = torch.as_tensor(part.face_normals, device=device)
        self.base_color, self.metallic_roughness = t(part.base_color), t(part.metallic_roughness)
        self.normal_map, self.occlusion = t(part.normal), t(part.occlusion)
        tangents = part.frame_tangents if part.normal is not None else None
        self.tangents = t(tangents)
        self.factor = torch.as_tensor(np.asarray(part.material.base_color_factor, dtype=np.float64), device=device)

    def sample(self, face: torch.Tensor, bary: torch.Tensor) -> Tensors:
        """Attributes at (face ``[N]`` int64, barycentrics ``[N, 3]``) rows; see :meth:`SourcePart.sample`."""
        part, mat = self.part, self.part.material
        bary = bary.to(torch.float64)
        n = int(face.numel())
        dev = bary.device
        f = self.faces[face]

        def interp(values: torch.Tensor) -> torch.Tensor:
            return torch.einsum("nk,nkd->nd", bary, values.to(torch.float64)[f])

        uv = interp(self.uv) if self.uv is not None else None
        out: Tensors = {}
        rgb = torch.ones((n, 3), dtype=torch.float64, device=dev)
        alpha = torch.ones(n, dtype=torch.float64, device=dev)
        if self.base_color is not None and uv is not None:
            tex = sample_texture(self.base_color, uv, part._wrap("base_color")) / 255.0
            rgb = srgb_to_linear(tex[:, :3]).to(torch.float64)
            alpha = tex[:, 3]
        if self.linear_colors is not None:
            vc = interp(self.linear_colors)
            rgb = rgb * vc[:, :3]
            alpha = alpha * vc[:, 3]
        rgb = rgb * self.factor[:3]
        alpha = (alpha * self.factor[3]).clamp(0.0, 1.0)
        out["base_color"] = torch.cat([linear_to_srgb(rgb).to(torch.float64), alpha[:, None]], 1)
        metallic = torch.full((n,), float(mat.metallic_factor), dtype=torch.float64, device=dev)
        roughness = torch.full((n,), float(mat.roughness_factor), dtype=torch.float64, device=dev)
        if self.metallic_roughness is not None and uv is not None:
            mr = sample_texture(self.metallic_roughness, uv, part._wrap("metallic_roughness")) / 255.0
            metallic = metallic * mr[:, 2]
            roughness = roughness * mr[:, 1]
        out["metallic"], out["roughness"] = metallic, roughness
        occlusion = torch.ones(n, dtype=torch.float64, device=dev)
        if self.occlusion is not None and uv is not None:
            occ = sample_texture(self.occlusion, uv, part._wrap("occlusion")) / 255.0
            occlusion = 1.0 + float(part.occlusion_strength) * (occ - 1.0)
        out["occlusion"] = occlusion
        geometric = self.face_normals[face]
        if self.normals is not None:
            normal, length = _unit_rows(interp(self.normals))
            normal = torch.where((length <= 1e-12)[:, None], geometric, normal)
        else:
            normal = geometric.clone()
        if self.normal_map is not None and uv is not None and self.tangents is not None:
            tg = interp(self.tangents[:, :3])
            w = torch.where(interp(self.tangents[:, 3:4])[:, 0] < 0.0, -1.0, 1.0)
            tg = tg - normal * (normal * tg).sum(1, keepdim=True)
            tg, t_len = _unit_rows(tg)
            b = torch.cross(normal, tg, dim=1) * w[:, None]
            m = sample_texture(self.normal_map, uv, part._wrap("normal")) / 255.0 * 2.0 - 1.0
            m = torch.cat([m[:, :2] * float(part.normal_scale), m[:, 2:]], 1)
            m, _ = _unit_rows(m)
            perturbed, p_len = _unit_rows(m[:, 0:1] * tg + m[:, 1:2] * b + m[:, 2:3] * normal)
            ok = (t_len > 1e-12) & (p_len > 1e-12)
            normal = torch.where(ok[:, None], perturbed, normal)
        out["normal"] = normal
        return out


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals; :func:`meshforge.geometry.normals.vertex_normals` on tensors
    (``+Z`` for vertices on no face).

    Args:
        vertices: ``[V, 3]`` float tensor; faces: ``[F, 3]`` int tensor, counter-clockwise.

    Returns:
        ``[V, 3]`` float64 unit normals on the inputs' device.
    """
    v = vertices.to(torch.float64)
    f = faces.long()
    cross = torch.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]], dim=1)  # length = 2·area
    n = torch.zeros_like(v)
    n.index_add_(0, f.reshape(-1), cross.repeat_interleave(3, dim=0))
    length = torch.linalg.norm(n, dim=1, keepdim=True)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64, device=v.device).expand_as(n)
    return torch.where(length > 0, n / length.clamp(min=1e-300), up)


def sample_pbr_tensor(
    field: PBRAttributes, points: torch.Tensor, device: torch.device, alpha: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The device twin of :func:`meshforge.fields.base.sample_pbr` for a field with one lookup for every channel
    (``pbr_tensor``: TRELLIS.2's sparse voxels): at ``[N, 3]`` float32 canonical points on the field's device.

    Returns:
        ``(base colour [N, 3], metallic [N], roughness [N], opacity [N] or None when not asked)``, float32 on
        ``device``.
    """
    pbr = field.pbr_tensor(points)
    channels = [pbr[key].to(device, torch.float32) for key in ("base_color", "metallic", "roughness")]
    opacity = pbr["alpha"].to(device, torch.float32) if alpha else None
    return channels[0], channels[1], channels[2], opacity


class TorchFieldPart:
    """A dense isosurface sampled through the field it was extracted from, on a device: the tensor twin of
    :class:`FieldSurfacePart`. Points and normals (area-weighted vertex normals) are interpolated on the
    dense surface; every channel comes from the field's ``pbr_tensor`` when it has one
    (:class:`~meshforge.fields.base.PBRAttributes`: TRELLIS.2's sparse voxels, one lookup on the device); else
    the colour from its ``color_tensor`` when it has one (TripoSR's, on the field's device) or its numpy
    ``color``, the material from its numpy ``material``. The numpy methods get the points copied to the host
    (``[N, 3]`` float32 per call).

    Args:
        vertices: ``[V, 3]`` float tensor; faces: ``[F, 3]`` int tensor (the device of the bake).
        field: the backend's field.
        normals: ``[V, 3]`` vertex normals (default: :func:`vertex_normals`).
    """

    def __init__(self, vertices: torch.Tensor, faces: torch.Tensor, field: Any, normals: torch.Tensor | None = None):
        self.vertices = vertices.to(torch.float64)
        self.faces = faces.long()
        self.field = field
        self.normals = (normals if normals is not None else vertex_normals(vertices, faces)).to(torch.float64)

    @classmethod
    def from_part(cls, part: FieldSurfacePart, device: torch.device) -> TorchFieldPart:
        """The tensors of a :class:`FieldSurfacePart` (its vertices, faces and normals) on ``device``."""
        return cls(
            torch.as_tensor(np.asarray(part.mesh.vertices), device=device),
            torch.as_tensor(np.asarray(part.mesh.faces, dtype=np.int64), device=device),
            part.field,
            torch.as_tensor(part._normals, device=device),
        )

    def sample(self, face: torch.Tensor, bary: torch.Tensor) -> Tensors:
        """Attributes at (face, barycentric) rows; see :meth:`FieldSurfacePart.sample`."""
        bary = bary.to(torch.float64)
        idx = self.faces[face]
        dev = bary.device
        pts = torch.einsum("nk,nkd->nd", bary, self.vertices[idx]).to(torch.float32)
        normal = torch.einsum("nk,nkd->nd", bary, self.normals[idx])
        normal = (normal / torch.linalg.norm(normal, dim=1, keepdim=True).clamp(min=1e-20)).to(torch.float32)
        if isinstance(self.field, PBRAttributes):  # every channel from one lookup, on the device
            rgb, met, rough, real = sample_pbr_tensor(self.field, pts, dev, has_real_alpha(self.field))
            if real is None:
                real = torch.ones(len(pts), dtype=torch.float32, device=dev)
            rgba = torch.cat([rgb, real[:, None]], 1)
            return {"base_color": rgba, "metallic": met, "roughness": rough, "normal": normal}
        host: np.ndarray | None = None
        if callable(getattr(self.field, "color_tensor", None)):
            color = self.field.color_tensor(pts).to(dev, torch.float32)
        else:
            host = pts.cpu().numpy()
            color = torch.as_tensor(np.asarray(self.field.color(host), dtype=np.float32), device=dev)
        metallic, roughness = self.field.material(host if host is not None else pts.cpu().numpy())
        if has_real_alpha(self.field):
            alpha = np.asarray(self.field.alpha(host if host is not None else pts.cpu().numpy()), dtype=np.float32)
            opacity = torch.as_tensor(alpha, device=dev)[:, None]
        else:
            opacity = torch.ones((len(pts), 1), dtype=torch.float32, device=dev)
        return {
            "base_color": torch.cat([color, opacity], 1),
            "metallic": torch.as_tensor(np.asarray(metallic, dtype=np.float32), device=dev),
            "roughness": torch.as_tensor(np.asarray(roughness, dtype=np.float32), device=dev),
            "normal": normal,
        }


class HostPart:
    """Any other part: its numpy ``sample``, with one host round trip per call."""

    def __init__(self, part: Any, device: torch.device) -> None:
        self.part = part
        self.device = device

    def sample(self, face: torch.Tensor, bary: torch.Tensor) -> Tensors:
        vals = self.part.sample(face.cpu().numpy(), bary.to(torch.float64).cpu().numpy())
        return {k: torch.as_tensor(np.asarray(v), device=self.device) for k, v in vals.items()}


def torch_part(part: Any, device: torch.device) -> TorchSourcePart | TorchFieldPart | HostPart:
    """The tensor sampler of a dense surface part (see the module docstring for which parts stay on the host)."""
    if isinstance(part, SourcePart):
        return TorchSourcePart(part, device)
    if isinstance(part, FieldSurfacePart):
        return TorchFieldPart.from_part(part, device)
    return HostPart(part, device)


def sample_parts(
    parts: list[TorchSourcePart | TorchFieldPart | HostPart],
    part_of_face: torch.Tensor,
    face_offset: list[int],
    face: torch.Tensor,
    bary: torch.Tensor,
) -> Tensors:
    """:meth:`meshforge.fields.surface.SurfaceField.attributes` on tensors: every part's attributes at dense
    (face into the concatenated parts, barycentric) rows, as float32 ``[N, ...]`` tensors."""
    part = part_of_face[face]
    out: Tensors = {}
    n = int(face.numel())
    for i in torch.unique(part).tolist():
        rows = torch.nonzero(part == i).view(-1)
        vals = parts[i].sample(face[rows] - face_offset[i], bary[rows])
        for key, val in vals.items():
            if key not in out:
                out[key] = torch.zeros((n,) + tuple(val.shape[1:]), dtype=torch.float32, device=face.device)
            out[key][rows] = val.to(torch.float32)
    return out
