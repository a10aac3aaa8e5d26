"""VTV training strategies: laws (binomial / KS oracles), determinism, shapes, registration."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from scipy import stats

from fvdm.core.plugins import load_plugins
from fvdm.plugins.noise_schedules.ddpm import DDPMSchedule

NAMES = ["synchronized", "independent", "ptss", "diffusion_forcing"]


@pytest.fixture(scope="module")
def vtv():
    return load_plugins()["vtv_strategies"]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _synced(u):
    return (u == u[:, :1]).all(dim=1)  # (B,) rows with one shared level


@pytest.mark.parametrize("spec", NAMES + ["context_mix", {"name": "context_mix", "masks": ["prefix"]},
                                          {"name": "ptss", "coin": "per_batch"}, {"name": "diffusion_forcing", "mode": "causal"},
                                          {"name": "diffusion_forcing", "mode": "pyramid"}])
def test_contract_shape_dtype_range_determinism(vtv, spec):
    s = vtv.build(spec)
    for B, F in ((1, 1), (1, 16), (5, 3)):
        u = s(B, F, generator=_gen(1))
        assert u.shape == (B, F) and u.dtype == torch.float32 and u.device.type == "cpu"
        assert float(u.min()) >= 0 and float(u.max()) <= 1
        assert torch.equal(u, s(B, F, generator=_gen(1)))  # a function of the seed only
    assert not torch.equal(s(64, 8, generator=_gen(1)), s(64, 8, generator=_gen(2)))
    state = torch.get_rng_state()
    s(4, 4, generator=_gen(3))
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is untouched
    assert s(2, 3, generator=_gen(), device="meta").device.type == "meta"  # device honoured
    assert s(2, 3, generator=_gen(), device=torch.device("cpu")).device.type == "cpu"


def test_synchronized_and_independent_laws(vtv):
    u = vtv.build("synchronized")(4000, 4, generator=_gen())
    assert bool(_synced(u).all())
    assert stats.kstest(u[:, 0].numpy(), "uniform").pvalue > 1e-3
    u = vtv.build("independent")(4000, 4, generator=_gen())
    assert not bool(_synced(u).any())
    for f in range(4):
        assert stats.kstest(u[:, f].numpy(), "uniform").pvalue > 1e-3
    # frames are independent: correlation within 5 sigma of 0
    corr = torch.corrcoef(u.T)[0, 1:]
    assert bool((corr.abs() < 5 / math.sqrt(4000)).all())


@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 1.0])
def test_ptss_fraction_of_independent_rows_is_binomial(vtv, p):
    N = 20000
    u = vtv.build({"name": "ptss", "p": p})(N, 4, generator=_gen(7))
    frac = 1.0 - float(_synced(u).float().mean())
    assert abs(frac - p) <= 5 * math.sqrt(p * (1 - p) / N) + 1e-9
    # both modes have uniform marginals
    assert stats.kstest(u[:, 1].numpy(), "uniform").pvalue > 1e-3


def test_ptss_per_batch_coin(vtv):
    s = vtv.build({"name": "ptss", "p": 0.3, "coin": "per_batch"})
    g, n_batches, indep = _gen(11), 2000, 0
    for _ in range(n_batches):
        synced = _synced(s(6, 4, generator=g))
        assert bool(synced.all()) or not bool(synced.any())  # one mode per batch
        indep += int(not bool(synced.any()))
    assert abs(indep / n_batches - 0.3) <= 5 * math.sqrt(0.3 * 0.7 / n_batches)
    # the per-sample default mixes modes inside a batch
    synced = _synced(vtv.build({"name": "ptss", "p": 0.5})(64, 4, generator=_gen()))
    assert bool(synced.any()) and not bool(synced.all())


def test_synchronized_rows_survive_snap(vtv):
    u = vtv.build({"name": "ptss", "p": 0.5})(256, 8, generator=_gen())
    t = DDPMSchedule(DDPMSchedule.Config()).snap(u)
    assert torch.equal(_synced(t), _synced(u))


def test_diffusion_forcing_modes(vtv):
    N, F = 4000, 6
    u = vtv.build("diffusion_forcing")(N, F, generator=_gen())
    assert stats.kstest(u.flatten().numpy(), "uniform").pvalue > 1e-3
    u = vtv.build({"name": "diffusion_forcing", "mode": "causal"})(N, F, generator=_gen())
    assert bool((u.diff(dim=1) >= 0).all())  # later frames never cleaner
    assert stats.kstest(u.flatten().numpy(), "uniform").pvalue > 1e-3  # pooled law unchanged
    for f in (0, F - 1):  # frame f ~ Beta(f + 1, F - f)
        assert stats.kstest(u[:, f].numpy(), stats.beta(f + 1, F - f).cdf).pvalue > 1e-3
    u = vtv.build({"name": "diffusion_forcing", "mode": "pyramid", "slope": 0.5})(N, F, generator=_gen())
    assert bool((u.diff(dim=1) >= 0).all())
    assert float((u[:, -1] - u[:, 0]).max()) <= 0.5 + 1e-6
    assert bool((u == 0).any()) and bool((u == 1).any())  # covers all-clean to all-noisy rows


def _context_rows(u: torch.Tensor) -> torch.Tensor:
    """(B,) rows with some frames at level 0 and the others one shared positive level."""
    zero = u == 0
    rest = torch.where(zero, torch.full_like(u, -1.0), u)
    level = rest.max(dim=1, keepdim=True).values  # the generated frames' level
    return zero.any(1) & ~zero.all(1) & ((u == 0) | (u == level)).all(1)


@pytest.mark.parametrize("p_context", [0.0, 0.5, 1.0])
def test_context_mix_share_is_binomial_and_rest_is_ptss(vtv, p_context):
    N, F = 20000, 8
    u = vtv.build({"name": "context_mix", "p_context": p_context, "p": 0.2})(N, F, generator=_gen(5))
    ctx = _context_rows(u)
    # a context coin that lands on an empty or a full random subset (2/2^F of a quarter) leaves the clip noisy
    expected = p_context * (1 - 0.5 / 2 ** F)
    assert abs(float(ctx.float().mean()) - expected) <= 5 * math.sqrt(expected * (1 - expected) / N) + 1e-9
    rest = u[~ctx]
    indep = 1.0 - float(_synced(rest).float().mean())  # the other clips: PTSS(0.2), independent w.p. 0.2
    n = len(rest)
    if n:
        assert abs(indep - 0.2) <= 5 * math.sqrt(0.16 / n) + 0.5 / 2 ** F
        assert stats.kstest(rest[:, 3].numpy(), "uniform").pvalue > 1e-3
    if p_context:  # the generated frames' shared level is uniform too
        assert stats.kstest(u[ctx].max(dim=1).values.numpy(), "uniform").pvalue > 1e-3


def test_context_mix_shapes(vtv):
    N, F = 4000, 8
    for shape, check in (
        ("first", lambda z: bool((z[:, 0] & ~z[:, 1:].any(1)).all())),
        ("ends", lambda z: bool((z[:, 0] & z[:, -1] & ~z[:, 1:-1].any(1)).all())),
        # a prefix of 1..F-1 frames, every length drawn
        ("prefix", lambda z: bool((z.int().diff(dim=1) <= 0).all()) and set(z.sum(1).tolist()) == set(range(1, F))),
    ):
        u = vtv.build({"name": "context_mix", "p_context": 1.0, "masks": [shape]})(N, F, generator=_gen(2))
        assert bool(_context_rows(u).all()) and check(u == 0), shape
    z = vtv.build({"name": "context_mix", "p_context": 1.0, "masks": ["random"]})(N, F, generator=_gen(2)) == 0
    assert not bool(z.all(1).any())  # never every frame given
    assert abs(float(z.float().mean()) - 0.5) < 0.02  # each frame given w.p. 1/2 (all-given draws dropped)
    one = vtv.build({"name": "context_mix", "p_context": 1.0})(64, 1, generator=_gen())
    assert bool((one > 0).all())  # one frame: nothing to give, the clip stays noisy
    lvl = vtv.build({"name": "context_mix", "p_context": 1.0, "context_level": 0.02})(64, F, generator=_gen())
    assert bool(((lvl == 0.02) | (lvl > 0)).all()) and bool((lvl == 0.02).any())


def test_bad_inputs(vtv):
    s = vtv.build("ptss")
    for B, F in ((0, 4), (2, 0), (2.0, 4), (True, 4)):
        with pytest.raises(ValueError, match="positive int"):
            s(B, F)
    for bad in ({"name": "ptss", "p": 1.5}, {"name": "ptss", "p": -0.1}, {"name": "ptss", "coin": "per_clip"},
                {"name": "diffusion_forcing", "mode": "causl"}, {"name": "synchronized", "p": 0.2},
                {"name": "context_mix", "p_context": 1.2}, {"name": "context_mix", "masks": []},
                {"name": "context_mix", "masks": ["first", "first"]}, {"name": "context_mix", "masks": ["last"]}):
        with pytest.raises(ValidationError):
            vtv.build(bad)


def test_registration(vtv):
    from fvdm.core.interfaces import VTVStrategy

    assert set(NAMES) <= set(vtv.names())
    assert all(isinstance(vtv.build(n), VTVStrategy) for n in NAMES)
    assert vtv.build("ptss").cfg.p == 0.2 and vtv.build("ptss").cfg.coin == "per_sample"
    with pytest.raises(ValidationError) as err:
        vtv.build({"name": "ptss", "prob": 0.2})
    assert err.value.errors()[0]["type"] == "extra_forbidden"
