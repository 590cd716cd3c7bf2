"""TripoSR's NeRF volume rendering of a triplane, in the native frame (for parity checks and previews).

Cameras follow the reference's spherical rig: a camera at azimuth φ (from +x towards +y) and elevation θ, at
distance d from the origin, looks at the origin with +z up; the picture's column index grows towards the camera's
right and its row index downwards. Rays go through pixel centres with focal length ``0.5·H / tan(fovy/2)``.

Rendering (Mildenhall et al. 2020, NeRF, with TripoSR's fixed-step quirk): each ray is clipped to the scene cube
shrunk by a factor ``1 − 1e-3`` (slab test, entry clamped at 0; rays whose clipped length is ≤ 0.01 show only the
background); ``num_samples_per_ray`` samples sit at the mid-points of equal bins between entry and exit; opacity
``α = 1 − exp(−σ·δ)`` uses the **normalised** bin width ``δ = 1/num_samples`` for every ray (not the metric step);
transmittance is the exclusive cumulative product of ``1 − α + 1e-10``; the background is white.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .model import TripoSRModel

__all__ = ["render", "spherical_camera_rays"]


def spherical_camera_rays(
    n_views: int,
    elevation_deg: float = 0.0,
    camera_distance: float = 1.9,
    fovy_deg: float = 40.0,
    height: int = 256,
    width: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays of ``n_views`` cameras at azimuths ``360°·i / n_views`` around the +z axis.

    Returns:
        ``(rays_o, rays_d)``, each ``[n_views, H, W, 3]`` float32 (CPU); ``rays_d`` unit length.
    """
    azimuth = torch.linspace(0.0, 360.0, n_views + 1)[:n_views] * math.pi / 180
    elevation = torch.full_like(azimuth, elevation_deg) * math.pi / 180
    dist = torch.full_like(azimuth, camera_distance)
    position = torch.stack(
        [
            dist * torch.cos(elevation) * torch.cos(azimuth),
            dist * torch.cos(elevation) * torch.sin(azimuth),
            dist * torch.sin(elevation),
        ],
        dim=-1,
    )  # [V, 3]
    forward = F.normalize(-position, dim=-1)
    world_up = torch.tensor([0.0, 0.0, 1.0]).expand_as(forward)
    right = F.normalize(torch.linalg.cross(forward, world_up, dim=-1), dim=-1)
    up = F.normalize(torch.linalg.cross(right, forward, dim=-1), dim=-1)
    rotation = torch.stack([right, up, -forward], dim=-1)  # camera → world, columns = camera axes [V, 3, 3]

    fovy = torch.full_like(azimuth, fovy_deg) * math.pi / 180
    focal = 0.5 * height / torch.tan(0.5 * fovy)  # [V]
    cols = torch.arange(width, dtype=torch.float32) + 0.5
    rows = torch.arange(height, dtype=torch.float32) + 0.5
    jj, ii = torch.meshgrid(rows, cols, indexing="ij")  # [H, W]
    cam = torch.stack([ii - width / 2, -(jj - height / 2), -torch.ones_like(ii)], dim=-1)  # focal 1, [H, W, 3]
    cam = F.normalize(cam, dim=-1)[None].repeat(n_views, 1, 1, 1)
    cam[..., :2] = cam[..., :2] / focal[:, None, None, None]
    rays_d = F.normalize((cam[..., None, :] * rotation[:, None, None]).sum(-1), dim=-1)
    rays_o = position[:, None, None, :].expand_as(rays_d).contiguous()
    return rays_o, rays_d


def _clip_to_cube(
    rays_o: torch.Tensor, rays_d: torch.Tensor, radius: float, min_length: float = 0.01
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slab test against the cube ``[−r', r']³``, ``r' = (1 − 1e-3)·radius``; returns near, far, valid ``[N]``."""
    d = torch.where(rays_d.abs() < 1e-6, torch.full_like(rays_d, 1e-6), rays_d)
    bound = (1.0 - 1.0e-3) * torch.tensor([radius], dtype=torch.float32, device=rays_o.device)
    t_hi = (bound - rays_o) / d
    t_lo = (-bound - rays_o) / d
    near = torch.minimum(t_hi, t_lo).amax(dim=-1).clamp_min(0.0)
    far = torch.maximum(t_hi, t_lo).amin(dim=-1)
    valid = far - near > min_length
    return near, far, valid


def render(
    model: TripoSRModel, scene_code: torch.Tensor, rays_o: torch.Tensor, rays_d: torch.Tensor, chunk: int = 1 << 18
) -> torch.Tensor:
    """Volume-render one triplane along rays (white background).

    Args:
        model: supplies the decoder and renderer settings.
        scene_code: ``[3, Co, H, W]``.
        rays_o: ``[..., 3]`` ray origins (native frame), on the scene code's device.
        rays_d: ``[..., 3]`` unit directions.
        chunk: points per decoder batch.

    Returns:
        ``[..., 3]`` float32 RGB in [0, 1].
    """
    shape = rays_o.shape[:-1]
    o, d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
    near, far, valid = _clip_to_cube(o, d, model.renderer.radius)
    n = model.renderer.num_samples_per_ray
    t = torch.linspace(0, 1, n + 1, device=o.device)
    mid = (t[:-1] + t[1:]) / 2.0
    delta = t[1:] - t[:-1]
    near_v, far_v = near[valid, None], far[valid, None]
    z = near_v * (1 - mid[None]) + far_v * mid[None]  # [Nv, n]
    xyz = o[valid, None, :] + z[..., None] * d[valid, None, :]
    out = model.query(scene_code, xyz.reshape(-1, 3), chunk=chunk)
    sigma = out["density"].reshape(-1, n)
    color = out["rgb"].reshape(-1, n, 3)
    alpha = 1 - torch.exp(-delta * sigma)
    trans = torch.cat([torch.ones_like(alpha[:, :1]), torch.cumprod(1 - alpha[:, :-1] + 1e-10, dim=-1)], dim=-1)
    weights = alpha * trans
    rgb = torch.zeros(o.shape[0], 3, dtype=color.dtype, device=o.device)
    opacity = torch.zeros(o.shape[0], dtype=color.dtype, device=o.device)
    rgb[valid] = (weights[..., None] * color).sum(dim=-2)
    opacity[valid] = weights.sum(dim=-1)
    return (rgb + (1 - opacity[:, None])).reshape(*shape, 3)
