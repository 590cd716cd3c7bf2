"""The flow-matching Euler samplers against analytic velocity fields."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from meshforge.backends.trellis2.sampler import (
    FlowEulerCfgSampler,
    FlowEulerGuidanceIntervalSampler,
    FlowEulerSampler,
    make_sampler,
    per_item_std,
    time_grid,
)
from meshforge.backends.trellis2.sparse import SparseTensor

SIGMA = 1e-5


def _sparse(n_per_item: tuple[int, ...], channels: int, seed: int = 0) -> SparseTensor:
    g = torch.Generator().manual_seed(seed)
    coords = []
    for b, n in enumerate(n_per_item):
        xyz = torch.randperm(4096, generator=g)[:n]
        coords.append(torch.stack([torch.full((n,), b), xyz // 256, (xyz // 16) % 16, xyz % 16], 1))
    c = torch.cat(coords).int()
    return SparseTensor(torch.randn(c.shape[0], channels, generator=g, dtype=torch.float64), c)


def test_time_grid_is_the_warp_formula() -> None:
    for steps, s in ((1, 1.0), (12, 3.0), (12, 5.0), (7, 0.5)):
        grid = time_grid(steps, s)
        assert len(grid) == steps + 1
        assert grid[0] == 1.0 and grid[-1] == 0.0
        for i, t in enumerate(grid):
            u = 1 - i / steps
            assert t == pytest.approx(s * u / (1 + (s - 1) * u), abs=1e-15)
        assert all(a > b for a, b in itertools.pairwise(grid))
    with pytest.raises(ValueError):
        time_grid(0)
    with pytest.raises(ValueError):
        time_grid(4, 0.0)


def _point_mass_model(target: torch.Tensor | SparseTensor, noise: torch.Tensor | SparseTensor):  # type: ignore[no-untyped-def]
    """The exact velocity of the flow whose data is the single point ``target``: along each path x_t is affine
    in t, so v is constant and Euler is exact; the sample at t = 0 is ``target + σ_min·noise``."""
    seen: list[torch.Tensor] = []

    def model(x, t, cond):  # type: ignore[no-untyped-def]
        seen.append(t)
        tt = float(t[0]) / 1000
        eps = (x - (1 - tt) * target) / (SIGMA + (1 - SIGMA) * tt)
        return (1 - SIGMA) * eps - target

    return model, seen


@pytest.mark.parametrize("rescale_t", [1.0, 3.0])
def test_euler_exact_on_the_point_mass_flow_dense(rescale_t: float) -> None:
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(2, 3, 4, 4, 4, generator=g, dtype=torch.float64)
    target = torch.randn(2, 3, 4, 4, 4, generator=g, dtype=torch.float64)
    model, seen = _point_mass_model(target, noise)
    out = FlowEulerSampler(SIGMA).sample(model, noise, None, steps=7, rescale_t=rescale_t).samples
    torch.testing.assert_close(out, target + SIGMA * noise, rtol=0, atol=1e-6)
    assert len(seen) == 7
    grid = time_grid(7, rescale_t)
    for t, expected in zip(seen, grid, strict=False):
        assert t.dtype == torch.float32 and t.shape == (2,)
        assert torch.equal(t, torch.tensor([1000 * expected] * 2, dtype=torch.float32))


def test_euler_exact_on_the_point_mass_flow_sparse() -> None:
    noise = _sparse((5, 9), 4, seed=2)
    target = noise.replace(torch.randn_like(noise.feats))
    model, _ = _point_mass_model(target, noise)
    out = FlowEulerSampler(SIGMA).sample(model, noise, None, steps=5, rescale_t=3.0).samples
    assert isinstance(out, SparseTensor)
    assert torch.equal(out.coords, noise.coords)
    torch.testing.assert_close(out.feats, target.feats + SIGMA * noise.feats, rtol=0, atol=1e-6)


def test_euler_on_a_linear_field_is_the_product_of_step_factors() -> None:
    lam = 0.7
    x1 = torch.randn(3, 2, dtype=torch.float64)

    def model(x, t, cond):  # type: ignore[no-untyped-def]
        return lam * x

    steps, s = 9, 2.0
    out = FlowEulerSampler(SIGMA).sample(model, x1, steps=steps, rescale_t=s).samples
    factor = 1.0
    for i in range(steps):
        u0, u1 = 1 - i / steps, 1 - (i + 1) / steps
        t0, t1 = s * u0 / (1 + (s - 1) * u0), s * u1 / (1 + (s - 1) * u1)
        factor *= 1 - (t0 - t1) * lam
    torch.testing.assert_close(out, x1 * factor, rtol=1e-12, atol=0)
    # and it converges to the ODE solution x1·exp(−λ) with many steps
    fine = FlowEulerSampler(SIGMA).sample(model, x1, steps=4000).samples
    torch.testing.assert_close(fine, x1 * math.exp(-lam), rtol=1e-4, atol=0)


def _cond_model(calls: list[tuple[float, str]]):  # type: ignore[no-untyped-def]
    """v = x·a(cond) + b(cond): a different affine field per condition."""

    def model(x, t, cond):  # type: ignore[no-untyped-def]
        calls.append((float(t[0]) / 1000, cond["name"]))
        return x * cond["a"] + cond["b"]

    return model


def test_cfg_mixes_the_two_predictions() -> None:
    calls: list[tuple[float, str]] = []
    model = _cond_model(calls)
    pos = {"name": "pos", "a": 0.3, "b": 1.0}
    neg = {"name": "neg", "a": -0.2, "b": -2.0}
    x = torch.randn(2, 5, dtype=torch.float64)
    sampler = FlowEulerCfgSampler(SIGMA)
    w = 3.0
    v = sampler.velocity(model, x, 0.4, pos, neg_cond=neg, guidance_strength=w)
    torch.testing.assert_close(v, w * (x * 0.3 + 1.0) + (1 - w) * (x * -0.2 - 2.0))
    assert [c[1] for c in calls] == ["pos", "neg"]
    calls.clear()
    torch.testing.assert_close(sampler.velocity(model, x, 0.4, pos, neg_cond=neg, guidance_strength=1), x * 0.3 + 1)
    torch.testing.assert_close(sampler.velocity(model, x, 0.4, pos, neg_cond=neg, guidance_strength=0), x * -0.2 - 2)
    assert [c[1] for c in calls] == ["pos", "neg"]  # one pass each


def test_cfg_rescale_matches_the_std_formula_dense() -> None:
    calls: list[tuple[float, str]] = []
    model = _cond_model(calls)
    pos = {"name": "pos", "a": 0.3, "b": 0.5}
    neg = {"name": "neg", "a": -0.6, "b": -1.0}
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    t, w, phi = 0.7, 5.0, 0.6
    v = FlowEulerCfgSampler(SIGMA).velocity(model, x, t, pos, neg_cond=neg, guidance_strength=w, guidance_rescale=phi)
    # independent computation, item by item
    k = SIGMA + (1 - SIGMA) * t
    for i in range(3):
        xi = x[i]
        vp, vn = xi * 0.3 + 0.5, xi * -0.6 - 1.0
        vc = w * vp + (1 - w) * vn
        x0p, x0c = (1 - SIGMA) * xi - k * vp, (1 - SIGMA) * xi - k * vc
        x0 = phi * x0c * (x0p.std() / x0c.std()) + (1 - phi) * x0c
        torch.testing.assert_close(v[i], ((1 - SIGMA) * xi - x0) / k)


def test_cfg_rescale_on_sparse_uses_population_std_per_item() -> None:
    x = _sparse((6, 11, 3), 4, seed=5)
    std = per_item_std(x)
    assert std.shape == (3, 1)
    for i, s in enumerate(x.layout):
        feats = x.feats[s]
        assert float(std[i, 0]) == pytest.approx(float(feats.std(unbiased=False)), rel=1e-9)
    calls: list[tuple[float, str]] = []
    model = _cond_model(calls)
    pos = {"name": "pos", "a": 0.3, "b": 0.5}
    neg = {"name": "neg", "a": -0.6, "b": -1.0}
    t, w, phi = 0.8, 4.0, 0.5
    v = FlowEulerCfgSampler(SIGMA).velocity(model, x, t, pos, neg_cond=neg, guidance_strength=w, guidance_rescale=phi)
    k = SIGMA + (1 - SIGMA) * t
    for s in x.layout:
        xi = x.feats[s]
        vp, vn = xi * 0.3 + 0.5, xi * -0.6 - 1.0
        vc = w * vp + (1 - w) * vn
        x0p, x0c = (1 - SIGMA) * xi - k * vp, (1 - SIGMA) * xi - k * vc
        x0 = phi * x0c * (x0p.std(unbiased=False) / x0c.std(unbiased=False)) + (1 - phi) * x0c
        torch.testing.assert_close(v.feats[s], ((1 - SIGMA) * xi - x0) / k)


def test_guidance_interval_guides_only_inside() -> None:
    calls: list[tuple[float, str]] = []
    model = _cond_model(calls)
    pos = {"name": "pos", "a": 0.1, "b": 0.2}
    neg = {"name": "neg", "a": 0.0, "b": 0.0}
    x = torch.randn(1, 3, dtype=torch.float64)
    sampler = make_sampler({"name": "FlowEulerGuidanceIntervalSampler", "args": {"sigma_min": SIGMA}})
    assert isinstance(sampler, FlowEulerGuidanceIntervalSampler)
    steps, s, lo, hi = 12, 3.0, 0.6, 0.9
    sampler.sample(model, x, pos, neg, steps, s, guidance_strength=7.5, guidance_interval=(lo, hi))
    grid = time_grid(steps, s)[:-1]
    negs = sorted(t for t, name in calls if name == "neg")
    assert negs == pytest.approx(sorted(t for t in grid if lo <= t <= hi), abs=1e-6)
    assert len([c for c in calls if c[1] == "pos"]) == steps
    assert 0 < len(negs) < steps


def test_extra_model_inputs_are_forwarded() -> None:
    got: list[object] = []

    def model(x, t, cond, concat_cond=None):  # type: ignore[no-untyped-def]
        got.append(concat_cond)
        return torch.zeros_like(x)

    x = torch.randn(1, 2)
    FlowEulerGuidanceIntervalSampler(SIGMA).sample(
        model, x, 1, 0, 2, 1.0, guidance_strength=2.0, guidance_rescale=0.3, concat_cond="shape"
    )
    assert got == ["shape"] * 4


def test_make_sampler_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler({"name": "DDIM", "args": {}})
    with pytest.raises(ValueError, match="FlowEulerSampler"):
        make_sampler({"name": "FlowEulerSampler", "args": {"sigma": 1}})
