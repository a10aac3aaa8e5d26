"""Sampling-matrix builders against their closed forms (Diffusion Forcing's pyramid family), spacing vs diffusers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fvdm.core.plugins import load_plugins
from fvdm.core.sampling import check_matrix


@pytest.fixture(scope="module")
def R():
    return load_plugins(entry_points=False)["sampling_schedules"]


def df_pyramid(K, F, u):
    """Diffusion Forcing closed form: M[m, t] = clip(K + floor(t*u) - m, 0, K), rows 0..K+floor((F-1)u)."""
    rows = K + math.floor((F - 1) * u) + 1
    return np.array([[min(max(K + math.floor(t * u) - m, 0), K) for t in range(F)] for m in range(rows)])


@pytest.mark.parametrize("K,F", [(1, 1), (5, 4), (10, 16)])
def test_standard_is_shared_levels(R, K, F):
    S = R.build("standard")(K, F)
    assert S.shape == (K + 1, F)
    want = 1 - torch.arange(K + 1, dtype=torch.float64)[:, None].expand(K + 1, F) / K
    torch.testing.assert_close(S, want.float(), atol=0, rtol=0)


@pytest.mark.parametrize("K,F,u", [(4, 6, 1.0), (10, 16, 0.5), (3, 5, 2.5), (6, 4, 0.0)])
def test_pyramid_matches_diffusion_forcing(R, K, F, u):
    S = R.build({"name": "pyramid", "u": u})(K, F)
    np.testing.assert_allclose(S.numpy(), df_pyramid(K, F, u) / K, atol=1e-7)
    if u == 0:
        torch.testing.assert_close(S, R.build("standard")(K, F))


def test_autoregressive_is_pyramid_with_u_equal_K(R):
    K, F = 3, 4
    S = R.build("autoregressive")(K, F)
    np.testing.assert_allclose(S.numpy(), df_pyramid(K, F, K) / K, atol=1e-7)
    assert S.shape == (K * F + 1, F)
    # one frame at a time: in every row at most one frame is strictly between 0 and 1
    assert int(((S > 0) & (S < 1)).sum(1).max()) == 1


@pytest.mark.parametrize("F", [5, 6])
def test_trapezoid_is_pyramid_mirrored(R, F):
    K, u = 4, 1.0
    S = R.build({"name": "trapezoid", "u": u})(K, F)
    d = [min(f, F - 1 - f) for f in range(F)]
    rows = K + math.floor(max(d) * u) + 1
    want = np.array([[min(max(K + math.floor(d[f] * u) - m, 0), K) for f in range(F)] for m in range(rows)]) / K
    np.testing.assert_allclose(S.numpy(), want, atol=1e-7)
    torch.testing.assert_close(S, S.flip(1))


@pytest.mark.parametrize("name", ["standard", "pyramid", "autoregressive", "trapezoid"])
def test_context_columns_zero_and_matrix_valid(R, name):
    ctx = torch.tensor([True, False, False, True, False, False])
    S = R.build(name)(5, 6, context=ctx)
    assert torch.equal(S[:, ctx], torch.zeros(S.shape[0], 2))
    assert bool((S[0, ~ctx] == 1).all()) and bool((S[-1] == 0).all())
    check_matrix(S, 6)  # in [0, 1], columns non-increasing
    # generated frames follow the builder on G frames (context skipped)
    torch.testing.assert_close(S[:, ~ctx], R.build(name)(5, 4))


def test_invalid_requests_raise_clear_errors(R):
    b = R.build("standard")
    with pytest.raises(ValueError, match="K must be an integer >= 1"):
        b(0, 4)
    with pytest.raises(ValueError, match="all 4 frames"):
        b(5, 4, context=[True] * 4)
    with pytest.raises(ValueError, match="frame count mismatch"):
        b(5, 4, context=[True, False, False])
    with pytest.raises(ValueError, match="unknown spacing|Input should be"):
        R.build({"name": "standard", "spacing": "cosine"})
    with pytest.raises(ValueError, match="non-increasing"):
        check_matrix(torch.tensor([[0.5, 1.0], [0.7, 0.0]]))
    with pytest.raises(ValueError, match="F=3"):
        check_matrix(torch.ones(3, 2), 3)


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_spacing_matches_diffusers_timesteps(R, spacing):
    from diffusers import DDIMScheduler

    ref = DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing,
                        steps_offset=1 if spacing == "leading" else 0)
    ref.set_timesteps(50)
    S = R.build({"name": "standard", "spacing": spacing})(50, 1, num_timesteps=1000)
    steps = torch.round(S[:-1, 0].double() * 999).long()
    assert steps.tolist() == ref.timesteps.tolist()
    assert S[-1, 0] == 0


@pytest.mark.parametrize("K", [5, 25])
@pytest.mark.parametrize("spacing,scheduler", [("leading", "DDIMScheduler"), ("leading", "DDPMScheduler"),
                                               ("leading_multistep", "DPMSolverMultistepScheduler"),
                                               ("leading_multistep", "UniPCMultistepScheduler")])
def test_both_leading_definitions_match_their_diffusers_schedulers(R, spacing, scheduler, K):
    """diffusers has two "leading" spacings: DDIM/DDPM's (801, 601, ... for K=5) and the multistep solvers'
    (831, 665, ...); each of ours equals its schedulers' timesteps, steps_offset 1."""
    import diffusers

    ref = getattr(diffusers, scheduler)(num_train_timesteps=1000, timestep_spacing="leading", steps_offset=1)
    ref.set_timesteps(K)
    S = R.build({"name": "standard", "spacing": spacing})(K, 1, num_timesteps=1000)
    steps = torch.round(S[:-1, 0].double() * 999).long()
    assert steps.tolist() == ref.timesteps.tolist()
    assert S[-1, 0] == 0
    if K == 5:  # the two definitions really differ
        assert steps.tolist() == ([801, 601, 401, 201, 1] if spacing == "leading" else [831, 665, 499, 333, 167])


def test_shift_spacing_is_sd3_shift(R):
    s = R.build({"name": "standard", "shift": 3.0})(10, 1)[:, 0].double()
    u = 1 - torch.arange(11, dtype=torch.float64) / 10
    torch.testing.assert_close(s, (3 * u / (1 + 2 * u)).float().double(), atol=1e-7, rtol=0)
