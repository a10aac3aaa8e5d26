"""Noise schedules (ddpm, rectified_flow) against independent oracles: diffusers, numpy, scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from fvdm.core.plugins import load_plugins
from fvdm.plugins.noise_schedules.ddpm import DDPMSchedule
from fvdm.plugins.noise_schedules.rectified_flow import RectifiedFlowSchedule, shift_timesteps

DIFFUSERS_NAME = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}
STEPS = [0, 1, 250, 617, 999]


def _video(B=3, F=4, C=2, H=3, W=3, dtype=torch.float32, gen_seed=0):
    g = torch.Generator().manual_seed(gen_seed)
    return torch.randn(B, F, C, H, W, generator=g, dtype=dtype), torch.randn(B, F, C, H, W, generator=g, dtype=dtype)


def _levels(steps, T=1000):
    return torch.tensor(steps, dtype=torch.float32) / (T - 1)


def _close(a, b, tol=1e-6):
    torch.testing.assert_close(a, b, atol=tol, rtol=0)


# -- DDPM vs diffusers ------------------------------------------------------------------
@pytest.fixture(scope="module")
def diffusers_schedulers():
    diffusers = pytest.importorskip("diffusers")
    out = {}
    for k, v in DIFFUSERS_NAME.items():
        ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=v)
        # diffusers works in float32, where sqrt(1 - abar) at small n loses ~3e-6 to cancellation
        # (1 - 0.9999f). Keep its betas and formulas but run it in float64 (its add_noise casts
        # alphas_cumprod to the input dtype) so the comparison with fvdm's float32 output holds at 1e-6.
        torch.testing.assert_close(ref.alphas_cumprod.double(), DDPMSchedule(DDPMSchedule.Config(beta_schedule=k)).alphas_cumprod, atol=5e-7, rtol=0)
        ref.alphas_cumprod = torch.cumprod(1.0 - ref.betas.double(), dim=0)
        out[k] = ref
    return out


@pytest.mark.parametrize("beta_schedule", list(DIFFUSERS_NAME))
@pytest.mark.parametrize("B", [1, 3])
def test_ddpm_matches_diffusers_synchronized(diffusers_schedulers, beta_schedule, B):
    ref = diffusers_schedulers[beta_schedule]
    x0, noise = _video(B=B)
    for pred in ("epsilon", "v", "x0"):
        s = DDPMSchedule(DDPMSchedule.Config(beta_schedule=beta_schedule, prediction=pred))
        for n in STEPS:
            t = torch.full((B, 4), n / 999.0)
            xt, tgt = s.add_noise(x0, noise, t), s.target(x0, noise, t)
            assert xt.shape == x0.shape and tgt.shape == x0.shape  # B=1 keeps its shape
            steps = torch.full((B,), n, dtype=torch.long)
            for f in range(4):
                x, e = x0[:, f].double(), noise[:, f].double()
                _close(xt[:, f], ref.add_noise(x, e, steps).float())
                expected = {"epsilon": e, "x0": x, "v": ref.get_velocity(x, e, steps)}[pred]
                _close(tgt[:, f], expected.float())


@pytest.mark.parametrize("beta_schedule", list(DIFFUSERS_NAME))
def test_ddpm_matches_diffusers_per_frame(diffusers_schedulers, beta_schedule):
    ref = diffusers_schedulers[beta_schedule]
    s = DDPMSchedule(DDPMSchedule.Config(beta_schedule=beta_schedule, prediction="v"))
    x0, noise = _video(B=2, F=5)
    n = torch.tensor([[0, 1, 250, 617, 999], [999, 500, 3, 0, 998]])
    t = n.float() / 999
    assert torch.equal(s.steps(t), n)
    xt, v = s.add_noise(x0, noise, t), s.target(x0, noise, t)
    for b in range(2):
        for f in range(5):
            x, e = x0[b, f][None].double(), noise[b, f][None].double()
            _close(xt[b, f], ref.add_noise(x, e, n[b, f][None])[0].float())
            _close(v[b, f], ref.get_velocity(x, e, n[b, f][None])[0].float())
    a, sig = s.alpha_sigma(t)
    _close(a, (ref.alphas_cumprod[n] ** 0.5).float())
    _close(sig, ((1 - ref.alphas_cumprod[n]) ** 0.5).float())
    assert s.alphas_cumprod.dtype == torch.float64


def test_ddpm_snap_and_timestep_input():
    s = DDPMSchedule(DDPMSchedule.Config(num_timesteps=10))
    u = torch.tensor([[0.0, 0.0999, 0.1, 0.55, 0.9999, 1.0]])
    n = torch.tensor([[0, 0, 1, 5, 9, 9]])
    torch.testing.assert_close(s.snap(u), n.float() / 9)
    assert torch.equal(s.timestep_input(s.snap(u)), n.float())
    # uniform over the T steps: u at bin centres hit every step once
    T = 1000
    s = DDPMSchedule(DDPMSchedule.Config())
    u = ((torch.arange(T) + 0.5) / T)[None]
    assert torch.equal(s.steps(s.snap(u))[0], torch.arange(T))


# -- rectified flow ----------------------------------------------------------------------
def test_rectified_flow_closed_forms():
    s = RectifiedFlowSchedule(RectifiedFlowSchedule.Config())
    assert (s.prediction, s.learn_sigma, s.continuous, s.num_timesteps) == ("flow", False, True, None)
    x0, noise = _video(B=1, F=3)
    t = torch.tensor([[0.0, 0.3, 1.0]])
    xt = s.add_noise(x0, noise, t)
    assert xt.shape == x0.shape
    for f, tf in enumerate([0.0, 0.3, 1.0]):
        torch.testing.assert_close(xt[:, f], (1 - tf) * x0[:, f] + tf * noise[:, f])
    torch.testing.assert_close(s.target(x0, noise, t), noise - x0)
    a, sig = s.alpha_sigma(t)
    torch.testing.assert_close(a, 1 - t)
    torch.testing.assert_close(sig, t)
    torch.testing.assert_close(s.timestep_input(t), t * 1000)
    assert s.out_channels(4) == 4 and s.split_output(x0)[1] is None
    loss = s.loss(torch.zeros_like(x0), x0, xt, noise, t)
    torch.testing.assert_close(loss, ((noise - x0) ** 2).mean(dim=(2, 3, 4)))


def test_rectified_flow_shift_and_density():
    u = torch.linspace(0, 1, 11)[None]
    for shift in (1.0, 3.0, 0.5):
        t = RectifiedFlowSchedule(RectifiedFlowSchedule.Config(shift=shift)).snap(u)
        expected = np.array([shift * x / (1 + (shift - 1) * x) for x in u[0].tolist()])
        np.testing.assert_allclose(t[0].numpy(), expected, atol=1e-6)
        assert t[0, 0] == 0 and t[0, -1] == 1 and bool((t.diff(dim=1) >= 0).all())
    assert math.isclose(float(shift_timesteps(torch.tensor(0.5), 3.0)), 0.75, abs_tol=1e-7)
    from scipy.special import expit
    from scipy.stats import norm

    u = torch.tensor([[0.0, 0.01, 0.3, 0.5, 0.9, 1.0]])
    t = RectifiedFlowSchedule(RectifiedFlowSchedule.Config(density="logit_normal", logit_mean=0.5, logit_std=0.8, shift=2.0)).snap(u)
    base = expit(0.5 + 0.8 * norm.ppf(u[0].double().numpy()))
    np.testing.assert_allclose(t[0].numpy(), 2 * base / (1 + base), atol=1e-6)


# -- conversions -------------------------------------------------------------------------
SCHEDULES = [("ddpm", dict(prediction=p, learn_sigma=ls, beta_schedule=b))
             for p in ("epsilon", "v", "x0") for ls in (True, False) for b in ("linear", "cosine")]
SCHEDULES += [("rectified_flow", dict(shift=3.0))]


@pytest.mark.parametrize("name,params", SCHEDULES)
def test_predict_x0_eps_round_trip(name, params):
    s = load_plugins()["noise_schedules"].build({"name": name, **params})
    x0, noise = _video(B=2, F=4, dtype=torch.float64)
    t = torch.tensor([[0.0, 0.2, 0.7, 1.0], [1.0, 0.5, 1 / 999, 0.0]], dtype=torch.float64)
    xt = s.add_noise(x0, noise, t)
    out = s.target(x0, noise, t)
    if s.learn_sigma:
        out = torch.cat([out, torch.rand_like(out)], dim=2)  # (B, F, 2C, H, W)
    assert out.shape[2] == s.out_channels(x0.shape[2])
    x0_hat, eps_hat = s.predict_x0_eps(out, xt, t)
    torch.testing.assert_close(x0_hat, x0, atol=1e-5, rtol=0)
    torch.testing.assert_close(eps_hat, noise, atol=1e-5, rtol=0)
    # float32 at moderate levels
    t32 = torch.full((2, 4), 0.5)
    x0f, nf = x0.float(), noise.float()
    out = s.target(x0f, nf, t32)
    if s.learn_sigma:
        out = torch.cat([out, out], dim=2)
    x0_hat, eps_hat = s.predict_x0_eps(out, s.add_noise(x0f, nf, t32), t32)
    torch.testing.assert_close(x0_hat, x0f, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(eps_hat, nf, atol=1e-5, rtol=1e-5)


# -- hybrid loss -------------------------------------------------------------------------
def _np_tables(T=1000):
    betas = np.linspace(1e-4, 0.02, T)
    abar = np.cumprod(1 - betas)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    pv = betas * (1 - abar_prev) / (1 - abar)
    return betas, abar, abar_prev, pv


def _np_model_posterior(eps_hat, v, xt, n, T=1000):
    """Independent numpy: model mean and log variance of p(x_{n-1} | x_n) (IDDPM learned range)."""
    betas, abar, abar_prev, pv = _np_tables(T)
    x0_hat = (xt - np.sqrt(1 - abar[n]) * eps_hat) / np.sqrt(abar[n])
    c1 = betas[n] * np.sqrt(abar_prev[n]) / (1 - abar[n])
    c2 = (1 - abar_prev[n]) * np.sqrt(1 - betas[n]) / (1 - abar[n])
    min_log = np.log(pv[n]) if n > 0 else np.log(pv[1])
    frac = (v + 1) / 2
    return c1 * x0_hat + c2 * xt, frac * np.log(betas[n]) + (1 - frac) * min_log, (c1, c2, min_log)


def test_vb_kl_matches_numpy_closed_form():
    s = DDPMSchedule(DDPMSchedule.Config())
    x0, noise = _video(B=1, F=2, C=1, H=2, W=2, dtype=torch.float64)
    n = [5, 700]
    t = _levels(n).double()[None]
    xt = s.add_noise(x0, noise, t)
    eps_hat = noise + 0.3 * torch.randn_like(noise)
    v = torch.rand_like(noise) * 2 - 1
    vb = s.vb_terms(eps_hat, v, x0, xt, t)
    for f, nf in enumerate(n):
        X0, XT, E, V = (a[0, f].numpy() for a in (x0, xt, eps_hat, v))
        mean, logvar, (c1, c2, min_log) = _np_model_posterior(E, V, XT, nf)
        true_mean, true_logvar = c1 * X0 + c2 * XT, min_log
        kl = 0.5 * (-1 + logvar - true_logvar + np.exp(true_logvar - logvar) + (true_mean - mean) ** 2 * np.exp(-logvar))
        assert math.isclose(float(vb[0, f]), kl.mean() / np.log(2), rel_tol=1e-9)
    # whole loss = eps MSE + vb (T = 1000: rescale factor 1)
    out = torch.cat([eps_hat, v], dim=2)
    torch.testing.assert_close(s.loss(out, x0, xt, noise, t), ((eps_hat - noise) ** 2).mean(dim=(2, 3, 4)) + vb)


def test_decoder_nll_at_step_zero_per_frame():
    """A frame at n=0 gets the decoder NLL even when its neighbours are noisier (the public code's flaw)."""
    from scipy.special import ndtr

    s = DDPMSchedule(DDPMSchedule.Config())
    x0, noise = _video(B=1, F=3, C=1, H=4, W=4, dtype=torch.float64)
    x0 = x0.clamp(-1, 1)
    x0[0, 0, 0, 0] = torch.tensor([-1.0, 1.0, 0.5, -0.25], dtype=torch.float64)  # both edge bins
    n = [0, 400, 0]
    t = _levels(n).double()[None]
    xt = s.add_noise(x0, noise, t)
    eps_hat = noise + 0.1 * torch.randn_like(noise)
    v = torch.rand_like(noise) * 2 - 1
    vb = s.vb_terms(eps_hat, v, x0, xt, t)
    for f in (0, 2):
        X0, XT, E, V = (a[0, f].numpy() for a in (x0, xt, eps_hat, v))
        mean, logvar, _ = _np_model_posterior(E, V, XT, 0)
        std = np.exp(0.5 * logvar)
        # exact normal CDF here; fvdm (like IDDPM) uses the tanh approximation, hence rel 2e-2
        hi, lo = ndtr((X0 - mean + 1 / 255) / std), ndtr((X0 - mean - 1 / 255) / std)
        p = np.where(X0 < -0.999, hi, np.where(X0 > 0.999, 1 - lo, hi - lo))
        nll = -np.log(np.maximum(p, 1e-12)).mean() / np.log(2)
        assert math.isclose(float(vb[0, f]), nll, rel_tol=2e-2)
    # each frame's term equals that frame evaluated alone: no per-sample selection
    for f in range(3):
        alone = s.vb_terms(eps_hat[:, f:f + 1], v[:, f:f + 1], x0[:, f:f + 1], xt[:, f:f + 1], t[:, f:f + 1])
        assert float(alone) == pytest.approx(float(vb[0, f]), rel=1e-12)
    assert vb[0, 0] != vb[0, 2] and vb[0, 1] != vb[0, 0]


def test_vb_term_varies_with_frame_level_and_rescale():
    x0, noise = _video(B=2, F=4)
    out = torch.randn(2, 4, 4, 3, 3)
    t = torch.tensor([[0.1, 0.4, 0.7, 0.95]] * 2)
    s = DDPMSchedule(DDPMSchedule.Config())
    vb = s.vb_terms(*s.split_output(out), x0, s.add_noise(x0, noise, t), t)
    assert vb.shape == (2, 4) and len(set(vb[0].tolist())) == 4
    s100 = DDPMSchedule(DDPMSchedule.Config(num_timesteps=100))
    xt = s100.add_noise(x0, noise, t)
    pred, var = s100.split_output(out)
    mse = ((pred - noise) ** 2).mean(dim=(2, 3, 4))
    torch.testing.assert_close(s100.loss(out, x0, xt, noise, t) - mse, 0.1 * s100.vb_terms(pred, var, x0, xt, t))


def test_hybrid_loss_stops_gradient_on_mean():
    s = DDPMSchedule(DDPMSchedule.Config())
    x0, noise = _video(B=1, F=3)
    t = torch.tensor([[0.0, 0.5, 0.9]])
    xt = s.add_noise(x0, noise, t)
    out = torch.randn(1, 3, 4, 3, 3, requires_grad=True)
    s.loss(out, x0, xt, noise, t).sum().backward()
    pred, _ = out.detach().chunk(2, dim=2)
    torch.testing.assert_close(out.grad[:, :, :2], 2 * (pred - noise) / 18)  # MSE only
    assert out.grad[:, :, 2:].abs().sum() > 0  # the bound trains the variance


def test_plain_mse_and_min_snr():
    x0, noise = _video(B=2, F=3)
    t = torch.tensor([[0.0, 0.3, 1.0], [0.05, 0.5, 0.8]])
    out = torch.randn_like(x0)
    s = DDPMSchedule(DDPMSchedule.Config(learn_sigma=False))
    xt = s.add_noise(x0, noise, t)
    torch.testing.assert_close(s.loss(out, x0, xt, noise, t), ((out - noise) ** 2).mean(dim=(2, 3, 4)))
    _, abar, _, _ = _np_tables()
    snr = abar[s.steps(t).numpy()] / (1 - abar[s.steps(t).numpy()])
    for pred, closed in (("epsilon", np.minimum(snr, 5) / snr), ("v", np.minimum(snr, 5) / (snr + 1)),
                         ("x0", np.minimum(snr, 5))):
        s = DDPMSchedule(DDPMSchedule.Config(learn_sigma=False, loss_weighting="min_snr", prediction=pred))
        w = s.loss_weights(t)
        np.testing.assert_allclose(w.numpy(), closed, rtol=1e-6)
        torch.testing.assert_close(s.loss(out, x0, xt, noise, t), w * ((out - s.target(x0, noise, t)) ** 2).mean(dim=(2, 3, 4)))
    # snr_floor: the data-space weight is clamp(SNR, 1, 5); for v, 1 / (SNR + 1) at the noisiest levels
    s = DDPMSchedule(DDPMSchedule.Config(learn_sigma=False, loss_weighting="min_snr", prediction="v", snr_floor=1.0))
    np.testing.assert_allclose(s.loss_weights(t).numpy(), np.clip(snr, 1, 5) / (snr + 1), rtol=1e-6)
    assert snr.min() < 1 and snr.max() > 5  # both clamps are exercised
    with pytest.raises(ValueError, match="snr_floor=6.0 > snr_gamma=5.0"):
        DDPMSchedule.Config(loss_weighting="min_snr", snr_floor=6.0)


# -- respaced-step helpers ---------------------------------------------------------------
def test_posterior_helpers_respaced_against_numpy():
    s = DDPMSchedule(DDPMSchedule.Config())
    betas, abar, abar_prev, pv = _np_tables()
    # IDDPM respacing: betas of the kept steps from abar ratios
    kept = [0, 250, 500, 750, 999]
    new_betas = 1 - abar[kept] / np.concatenate([[1.0], abar[kept][:-1]])
    new_pv = new_betas * (1 - np.concatenate([[1.0], abar[kept][:-1]])) / (1 - abar[kept])
    t_from = _levels(kept[1:])[None]
    t_to = _levels(kept[:-1])[None]
    post = s.posterior(t_from, t_to, to_data=False)
    np.testing.assert_allclose(post.variance[0].numpy(), new_pv[1:], rtol=1e-10)
    np.testing.assert_allclose(post.log_beta[0].numpy(), np.log(new_betas[1:]), rtol=1e-10)
    kp = np.array(kept)
    np.testing.assert_allclose(post.coef_x0[0].numpy(), np.sqrt(abar[kp[:-1]]) * new_betas[1:] / (1 - abar[kp[1:]]), rtol=1e-10)
    np.testing.assert_allclose(post.coef_xt[0].numpy(), np.sqrt(1 - new_betas[1:]) * (1 - abar[kp[:-1]]) / (1 - abar[kp[1:]]), rtol=1e-10)
    var_values = torch.tensor([-1.0, 1.0, 0.0, 0.5]).reshape(1, 4, 1, 1, 1).expand(1, 4, 2, 2, 2)
    mlv = s.model_log_variance(var_values, t_from, t_to, to_data=False)
    frac = np.array([0.0, 1.0, 0.5, 0.75])
    expected = frac * np.log(new_betas[1:]) + (1 - frac) * np.log(new_pv[1:])
    np.testing.assert_allclose(mlv[0, :, 0, 0, 0].numpy(), expected, rtol=1e-6)
    # consecutive steps reproduce the training tables
    n = torch.tensor([[1, 2, 500, 999]])
    post = s.posterior(n.float() / 999, (n - 1).float() / 999, to_data=False)
    np.testing.assert_allclose(post.variance[0].numpy(), pv[n[0].numpy()], rtol=1e-8)
    # default: a step ending at t=0 lands on data (mean = x0, variance 0, log clipped as IDDPM)
    post = s.posterior(torch.tensor([[0.5, 1 / 999]]), torch.zeros(1, 2))
    torch.testing.assert_close(post.coef_x0, torch.ones(1, 2, dtype=torch.float64))
    torch.testing.assert_close(post.coef_xt, torch.zeros(1, 2, dtype=torch.float64))
    assert torch.isfinite(post.log_variance).all()
    np.testing.assert_allclose(post.log_variance[0].numpy(), np.log(pv[1]), rtol=1e-12)


# -- bad input and registration ----------------------------------------------------------
def test_bad_inputs_fail_loudly():
    s = DDPMSchedule(DDPMSchedule.Config())
    x0, noise = _video(B=2, F=3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        s.add_noise(x0, noise, torch.full((2, 3), 1.5))
    with pytest.raises(ValueError, match=r"\(B, F\)"):
        s.add_noise(x0, noise, torch.zeros(2))
    with pytest.raises(ValueError, match="x has"):
        s.add_noise(x0, noise, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="B, F, C, H, W"):
        s.add_noise(x0[0], noise[0], torch.zeros(2, 3))
    with pytest.raises(ValueError, match="must match"):
        s.add_noise(x0, noise[:, :, :1], torch.zeros(2, 3))
    with pytest.raises(TypeError, match="float"):
        s.snap(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="even channel count"):
        s.loss(torch.zeros(2, 3, 3, 3, 3), x0, x0, noise, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="must not exceed"):
        s.posterior(torch.zeros(1, 2), torch.ones(1, 2))
    with pytest.raises(ValidationError, match="greater than or equal to 2"):
        DDPMSchedule(DDPMSchedule.Config(num_timesteps=1))
    with pytest.raises(ValidationError, match="beta_start"):
        DDPMSchedule(DDPMSchedule.Config(beta_start=0.1, beta_end=0.01))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        RectifiedFlowSchedule(RectifiedFlowSchedule.Config()).snap(torch.full((1, 2), -0.1))


def test_registration_and_config_errors():
    reg = load_plugins()["noise_schedules"]
    assert {"ddpm", "rectified_flow"} <= set(reg.names())
    s = reg.build({"name": "ddpm", "beta_schedule": "cosine"})
    assert isinstance(s, DDPMSchedule) and s.cfg.beta_schedule == "cosine"
    assert (s.prediction, s.learn_sigma, s.continuous, s.num_timesteps) == ("epsilon", True, False, 1000)
    assert s.out_channels(4) == 8
    from fvdm.core.interfaces import NoiseSchedule

    assert isinstance(s, NoiseSchedule) and isinstance(reg.build("rectified_flow"), NoiseSchedule)
    with pytest.raises(ValidationError) as err:
        reg.build({"name": "ddpm", "beta_schedul": "cosine"})
    assert err.value.errors()[0]["type"] == "extra_forbidden"
    with pytest.raises(ValidationError):
        reg.build({"name": "rectified_flow", "shift": 0})


@pytest.mark.parametrize("beta_schedule", ["linear", "cosine"])
def test_posterior_preserves_marginals(beta_schedule):
    """x_from ~ q(x_from | x0) then x_to ~ q(x_to | x_from, x0) must have q(x_to | x0)'s moments."""
    s = DDPMSchedule(DDPMSchedule.Config(beta_schedule=beta_schedule))
    g = torch.Generator().manual_seed(0)
    n_from = torch.randint(1, 1000, (4, 6), generator=g)
    n_to = (torch.rand(4, 6, generator=g) * n_from).floor().long()
    t_from, t_to = n_from.float() / 999, n_to.float() / 999
    for to_data in (False, None):
        abar_from, abar_to = s.step_alphas(t_from, t_to, to_data=to_data)
        post = s.posterior(t_from, t_to, to_data=to_data)
        torch.testing.assert_close(post.coef_x0 + post.coef_xt * abar_from.sqrt(), abar_to.sqrt())
        torch.testing.assert_close(post.coef_xt**2 * (1 - abar_from) + post.variance, 1 - abar_to)
    abar_from, abar_to = s.step_alphas(t_from, t_to)
    assert torch.equal(abar_to == 1, n_to == 0)
    torch.testing.assert_close(abar_from, s.abar(t_from))


def test_gaussian_posterior_preserves_marginals_of_a_non_vp_process():
    """The one posterior (schedule and ddpm sampler) on rectified flow's x_t = (1-t) x0 + t eps: a step from
    q(x_from | x0) must land on q(x_to | x0)'s moments; a step onto data has variance 0, logged by choice."""
    from fvdm.plugins.noise_schedules.posterior import VARIANCE_FLOOR, gaussian_posterior

    g = torch.Generator().manual_seed(0)
    t_from = torch.rand(3, 5, generator=g, dtype=torch.float64) * 0.98 + 0.01
    t_to = t_from * torch.rand(3, 5, generator=g, dtype=torch.float64)
    a_f, s_f, a_t, s_t = 1 - t_from, t_from, 1 - t_to, t_to
    post = gaussian_posterior(a_f, s_f, a_t, s_t)
    torch.testing.assert_close(post.coef_x0 + post.coef_xt * a_f, a_t)
    torch.testing.assert_close(post.coef_xt**2 * s_f**2 + post.variance, s_t**2)
    one, zero = torch.ones_like(t_to), torch.zeros_like(t_to)
    onto_data = gaussian_posterior(a_f, s_f, one, zero)
    assert torch.equal(onto_data.variance, zero)
    assert torch.equal(onto_data.log_variance, torch.full_like(zero, math.log(VARIANCE_FLOOR)))
    floor = torch.full_like(zero, -9.0)
    assert torch.equal(gaussian_posterior(a_f, s_f, one, zero, zero_log_variance=floor).log_variance, floor)
