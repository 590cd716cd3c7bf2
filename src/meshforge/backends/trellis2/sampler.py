"""Flow-matching Euler samplers with classifier-free guidance (the TRELLIS / TRELLIS.2 samplers).

A rectified-flow model predicts the velocity ``v(x_t, t)`` of the straight path between data ``x_0`` and
noise ``ε``::

    x_t = (1 − t) · x_0 + (σ_min + (1 − σ_min) · t) · ε,     v = dx_t/dt ≈ (σ_min + (1 − σ_min)·… ) ε − x_0

and sampling integrates ``dx/dt = v`` from ``t = 1`` (noise) to ``t = 0`` with explicit Euler steps on a
time grid that may be warped towards ``t = 1`` (``rescale_t``)::

    t_i = s · u_i / (1 + (s − 1) · u_i),   u_i = linspace(1, 0, steps + 1),   s = rescale_t.

The network sees the time as ``1000 · t`` (float32, one value per batch item). Classifier-free guidance
mixes a conditional and an unconditional prediction, ``v = w · v_cond + (1 − w) · v_uncond``
(``w = guidance_strength``; ``w = 1`` runs only the conditional pass, ``w = 0`` only the unconditional one),
optionally pulls the guided ``x_0`` estimate's standard deviation back towards the conditional one
(``guidance_rescale``, Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed"),
and may be restricted to ``t ∈ guidance_interval`` (Kynkäänniemi et al. 2024, "Applying Guidance in a
Limited Interval").

Works on dense tensors (``[B, C, …]``) and on :class:`~.sparse.SparseTensor` (per-item statistics over its
rows), with the arithmetic in the same order as the reference (TRELLIS.2 @5565d24,
``trellis2/pipelines/samplers``) so results match it bit for bit on the same device.

Sources: Lipman et al. 2023 (flow matching), Liu et al. 2023 (rectified flow), Xiang et al. 2024 (TRELLIS),
TRELLIS.2 (2025); Ho & Salimans 2022 (classifier-free guidance).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .sparse import SparseTensor

__all__ = [
    "SAMPLERS",
    "FlowEulerCfgSampler",
    "FlowEulerGuidanceIntervalSampler",
    "FlowEulerSampler",
    "SampleResult",
    "make_sampler",
    "per_item_std",
    "time_grid",
]

#: a sample: a dense tensor or a sparse tensor
Latent = Any
#: ``on_step(index, total)`` after each Euler step
StepCallback = Callable[[int, int], None]


def time_grid(steps: int, rescale_t: float = 1.0) -> list[float]:
    """The ``steps + 1`` times from 1 to 0 of the Euler integration, warped by ``rescale_t``.

    ``t = s·u / (1 + (s − 1)·u)`` with ``u = linspace(1, 0, steps + 1)`` computed in float64 (``s = 1``: the
    uniform grid; ``s > 1`` spends more steps near ``t = 1``, the noisy end).

    Args:
        steps: number of Euler steps (≥ 1).
        rescale_t: the warp ``s`` (> 0).

    Returns:
        ``steps + 1`` Python floats, ``1.0`` first and ``0.0`` last, decreasing.

    Raises:
        ValueError: ``steps < 1`` or ``rescale_t <= 0``.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if rescale_t <= 0:
        raise ValueError(f"rescale_t must be positive, got {rescale_t}")
    u = np.linspace(1, 0, steps + 1)
    warped = rescale_t * u / (1 + (rescale_t - 1) * u)
    out: list[float] = warped.tolist()
    return out


def per_item_std(x: Latent) -> torch.Tensor:
    """The standard deviation of each batch item, shaped to broadcast against ``x``.

    Dense ``[B, …]``: :meth:`torch.Tensor.std` over every axis but the first (Bessel-corrected), keepdim.
    Sparse: ``sqrt(E[x²] − E[x]²)`` over the item's rows and channels (population form), computed as the
    mean over channels per row, then the mean over the item's rows (``torch.segment_reduce``) — the
    reference's reduction order; returns ``[B, 1]``.
    """
    if isinstance(x, SparseTensor):
        lengths = torch.tensor(x.seqlens, dtype=torch.long, device=x.device)
        mean = torch.segment_reduce(x.feats.mean(dim=1, keepdim=True), reduce="mean", lengths=lengths)
        mean_sq = torch.segment_reduce((x.feats**2).mean(dim=1, keepdim=True), reduce="mean", lengths=lengths)
        return (mean_sq - mean**2).sqrt()
    return x.std(dim=list(range(1, x.ndim)), keepdim=True)


@dataclass
class SampleResult:
    """What :meth:`FlowEulerSampler.sample` returns.

    Attributes:
        samples: the final sample ``x_0`` (same kind and shape as the noise).
        pred_x_t: the sample after each step (only with ``keep_trajectory``).
        pred_x_0: the ``x_0`` estimate at each step (only with ``keep_trajectory``).
    """

    samples: Latent
    pred_x_t: list[Latent] = field(default_factory=list)
    pred_x_0: list[Latent] = field(default_factory=list)


class FlowEulerSampler:
    """Euler integration of a flow-matching velocity model from noise (``t = 1``) to data (``t = 0``).

    Args:
        sigma_min: the noise scale left at ``t = 0`` of the flow's path (TRELLIS.2: 1e-5).

    The model is called as ``model(x_t, t, cond, **kwargs)`` with ``t`` a float32 ``[B]`` tensor of
    ``1000 · t`` on ``x_t``'s device, and returns the velocity with ``x_t``'s shape.
    """

    def __init__(self, sigma_min: float) -> None:
        self.sigma_min = float(sigma_min)

    # -- conversions between the parametrisations (reference formulae) ---------------------------
    def _noise_scale(self, t: float) -> float:
        return self.sigma_min + (1 - self.sigma_min) * t

    def velocity_to_x0(self, x_t: Latent, t: float, v: Latent) -> Latent:
        """``x_0 = (1 − σ_min)·x_t − (σ_min + (1 − σ_min)·t)·v``."""
        return (1 - self.sigma_min) * x_t - self._noise_scale(t) * v

    def x0_to_velocity(self, x_t: Latent, t: float, x_0: Latent) -> Latent:
        """The inverse of :meth:`velocity_to_x0`: ``v = ((1 − σ_min)·x_t − x_0) / (σ_min + (1 − σ_min)·t)``."""
        return ((1 - self.sigma_min) * x_t - x_0) / self._noise_scale(t)

    # -- one network evaluation -------------------------------------------------------------------
    def _call(self, model: Callable[..., Latent], x_t: Latent, t: float, cond: Any, **kwargs: Any) -> Latent:
        batch = int(x_t.shape[0])
        t_in = torch.tensor([1000 * t] * batch, device=x_t.device, dtype=torch.float32)
        return model(x_t, t_in, cond, **kwargs)

    def velocity(self, model: Callable[..., Latent], x_t: Latent, t: float, cond: Any, **kwargs: Any) -> Latent:
        """The velocity used for the step at time ``t`` (plain: one conditional evaluation)."""
        return self._call(model, x_t, t, cond, **kwargs)

    # -- integration --------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        model: Callable[..., Latent],
        noise: Latent,
        cond: Any = None,
        steps: int = 50,
        rescale_t: float = 1.0,
        *,
        on_step: StepCallback | None = None,
        keep_trajectory: bool = False,
        **kwargs: Any,
    ) -> SampleResult:
        """Integrate from ``noise`` at ``t = 1`` to ``t = 0`` in ``steps`` Euler steps.

        Each step: ``x ← x − (t − t_next) · v(x, t)`` on :func:`time_grid` ``(steps, rescale_t)``.

        Args:
            model: the velocity network (see the class docstring).
            noise: ``x_1``: a dense ``[B, C, …]`` tensor or a :class:`~.sparse.SparseTensor`.
            cond: the condition passed to the model (e.g. ``[B, T, D]`` image tokens).
            steps, rescale_t: see :func:`time_grid`.
            on_step: called as ``on_step(i, steps)`` after step ``i`` (1-based).
            keep_trajectory: also return every intermediate sample and ``x_0`` estimate.
            **kwargs: guidance options of the subclasses, and extra model inputs (e.g. ``concat_cond``).

        Returns:
            A :class:`SampleResult`.
        """
        times = time_grid(steps, rescale_t)
        x = noise
        out = SampleResult(samples=None)
        for i in range(steps):
            t, t_next = times[i], times[i + 1]
            v = self.velocity(model, x, t, cond, **kwargs)
            if keep_trajectory:
                out.pred_x_0.append(self.velocity_to_x0(x, t, v))
            x = x - (t - t_next) * v
            if keep_trajectory:
                out.pred_x_t.append(x)
            if on_step is not None:
                on_step(i + 1, steps)
        out.samples = x
        return out


class FlowEulerCfgSampler(FlowEulerSampler):
    """:class:`FlowEulerSampler` with classifier-free guidance (and optional guidance rescale).

    ``sample(model, noise, cond, neg_cond, steps, rescale_t, guidance_strength=3.0, guidance_rescale=0.0)``.
    """

    def velocity(
        self,
        model: Callable[..., Latent],
        x_t: Latent,
        t: float,
        cond: Any,
        *,
        neg_cond: Any = None,
        guidance_strength: float = 3.0,
        guidance_rescale: float = 0.0,
        **kwargs: Any,
    ) -> Latent:
        """``w·v(cond) + (1 − w)·v(neg_cond)``; with ``guidance_rescale = φ > 0`` the guided ``x_0`` becomes
        ``φ·x0_cfg·(std(x0_cond)/std(x0_cfg)) + (1 − φ)·x0_cfg`` (:func:`per_item_std`) and the velocity is
        recomputed from it. ``w = 1``/``w = 0`` evaluate only the conditional/unconditional pass."""
        w = guidance_strength
        if w == 1:
            return self._call(model, x_t, t, cond, **kwargs)
        if w == 0:
            return self._call(model, x_t, t, neg_cond, **kwargs)
        v_pos = self._call(model, x_t, t, cond, **kwargs)
        v_neg = self._call(model, x_t, t, neg_cond, **kwargs)
        v = w * v_pos + (1 - w) * v_neg
        if guidance_rescale > 0:
            x0_pos = self.velocity_to_x0(x_t, t, v_pos)
            x0_cfg = self.velocity_to_x0(x_t, t, v)
            ratio = per_item_std(x0_pos) / per_item_std(x0_cfg)
            x0_rescaled = x0_cfg * ratio
            x0 = guidance_rescale * x0_rescaled + (1 - guidance_rescale) * x0_cfg
            v = self.x0_to_velocity(x_t, t, x0)
        return v

    def sample(  # type: ignore[override]
        self,
        model: Callable[..., Latent],
        noise: Latent,
        cond: Any,
        neg_cond: Any,
        steps: int = 50,
        rescale_t: float = 1.0,
        guidance_strength: float = 3.0,
        **kwargs: Any,
    ) -> SampleResult:
        """:meth:`FlowEulerSampler.sample` with guidance (see :meth:`velocity`)."""
        return super().sample(
            model, noise, cond, steps, rescale_t, neg_cond=neg_cond, guidance_strength=guidance_strength, **kwargs
        )


class FlowEulerGuidanceIntervalSampler(FlowEulerCfgSampler):
    """:class:`FlowEulerCfgSampler` whose guidance applies only while ``lo ≤ t ≤ hi`` (``guidance_interval``,
    a keyword of :meth:`sample` passed on to :meth:`velocity`); outside it the step uses the conditional
    velocity alone (strength 1)."""

    def velocity(
        self,
        model: Callable[..., Latent],
        x_t: Latent,
        t: float,
        cond: Any,
        *,
        guidance_strength: float = 3.0,
        guidance_interval: Sequence[float] = (0.0, 1.0),
        **kwargs: Any,
    ) -> Latent:
        lo, hi = guidance_interval
        strength = guidance_strength if lo <= t <= hi else 1
        return super().velocity(model, x_t, t, cond, guidance_strength=strength, **kwargs)


#: the sampler classes by the names ``pipeline.json`` uses
SAMPLERS: dict[str, type[FlowEulerSampler]] = {
    "FlowEulerSampler": FlowEulerSampler,
    "FlowEulerCfgSampler": FlowEulerCfgSampler,
    "FlowEulerGuidanceIntervalSampler": FlowEulerGuidanceIntervalSampler,
}


def make_sampler(spec: dict[str, Any]) -> FlowEulerSampler:
    """A sampler from a ``pipeline.json`` entry ``{"name": ..., "args": {"sigma_min": ...}}``.

    Raises:
        ValueError: unknown sampler name or bad arguments.
    """
    name = spec.get("name")
    cls = SAMPLERS.get(str(name))
    if cls is None:
        raise ValueError(f"unknown sampler {name!r} (choices: {', '.join(SAMPLERS)})")
    try:
        return cls(**spec.get("args", {}))
    except TypeError as exc:
        raise ValueError(f"sampler {name}: {exc}") from None
