"""DDPM with per-frame levels: the FVDM / Latte / DiT forward process and hybrid loss.

Levels are floats ``t`` (B, F) in [0, 1]; the integer step is ``n = round(t * (T - 1))``
and is computed here only. Every coefficient is gathered per frame from float64
tables (IDDPM style) and broadcast with ``append_dims``, so B=1 keeps its shape.

Hybrid loss (learn_sigma, as DiT/Latte): MSE on the prediction target plus the
variational-bound term of IDDPM with a stop-gradient on the mean. Unlike the public
FVDM code, which picks the decoder-NLL term per *sample* ("max t over frames == 0"),
the bound is evaluated per *frame*: a frame at step 0 gets the decoder NLL, every
other frame the KL, whatever its neighbours' steps are.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from fvdm.core.interfaces import PluginConfig
from fvdm.core.tensor import append_dims, check_timesteps
from fvdm.plugins.noise_schedules._common import as_float32, check_inputs, frame_mean, high_precision
from fvdm.plugins.noise_schedules.posterior import Posterior, gaussian_posterior, learned_log_variance


def make_betas(kind: str, num_timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
    """Betas as diffusers' DDPMScheduler builds them ("cosine" = its ``squaredcos_cap_v2``), in float64.

    The start/end are used as given for every T (diffusers); IDDPM instead rescales
    linear betas by 1000/T. Pick beta_start/beta_end for that if you need it.
    """
    T = num_timesteps
    if kind == "linear":
        return np.linspace(beta_start, beta_end, T, dtype=np.float64)
    if kind == "scaled_linear":
        return np.linspace(beta_start**0.5, beta_end**0.5, T, dtype=np.float64) ** 2
    if kind == "cosine":  # Nichol & Dhariwal 2021, betas capped at 0.999

        def abar(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        return np.array([min(1 - abar((i + 1) / T) / abar(i / T), 0.999) for i in range(T)], dtype=np.float64)
    raise ValueError(f"unknown beta_schedule {kind!r}; use linear, scaled_linear or cosine")


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise (nats)."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    # IDDPM's tanh approximation, kept so losses match DiT/Latte numerically.
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """Log-likelihood (nats) of data in [-1, 1] quantised to 256 bins under N(means, e^(2 log_scales)).

    IDDPM's decoder term; applied to latents too, exactly as DiT/Latte do.
    """
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = _approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


class DDPMSchedule:
    """DDPM with T discrete steps and per-frame levels; epsilon/v/x0 prediction, learned variance (hybrid loss)."""

    class Config(PluginConfig):
        num_timesteps: int = Field(1000, ge=2, description="T, number of diffusion steps (>= 2)")
        beta_schedule: Literal["linear", "scaled_linear", "cosine"] = Field(
            "linear", description="cosine is diffusers' squaredcos_cap_v2 (betas capped at 0.999)"
        )
        beta_start: float = Field(1e-4, gt=0, lt=1, description="first beta (linear, scaled_linear)")
        beta_end: float = Field(0.02, gt=0, lt=1, description="last beta (linear, scaled_linear)")
        prediction: Literal["epsilon", "v", "x0"] = "epsilon"
        learn_sigma: bool = Field(True, description="model also outputs variance values (2C channels), hybrid loss")
        loss_weighting: Literal["uniform", "min_snr"] = Field(
            "uniform", description="min_snr: Hang et al. 2023 weights on the MSE term"
        )
        snr_gamma: float = Field(5.0, gt=0, description="gamma of min_snr weighting")
        snr_floor: float = Field(0.0, ge=0, description=(
            "min_snr only: lower clamp of the data-space weight, clamp(SNR, floor, gamma); 1 keeps the "
            "high-noise levels at the weight plain v-loss gives them (truncated SNR, Salimans & Ho 2022), "
            "which frames next to clean context need"))

        @model_validator(mode="after")
        def _betas_ordered(self) -> "DDPMSchedule.Config":
            if self.beta_schedule != "cosine" and self.beta_start > self.beta_end:
                raise ValueError(
                    f"beta_start={self.beta_start} > beta_end={self.beta_end}; betas must grow with t (swap them)"
                )
            if self.snr_floor > self.snr_gamma:
                raise ValueError(f"snr_floor={self.snr_floor} > snr_gamma={self.snr_gamma}; the weight is "
                                 "clamp(SNR, floor, gamma): lower snr_floor or raise snr_gamma")
            return self

    continuous = False

    def __init__(self, cfg: "DDPMSchedule.Config"):
        self.cfg = cfg
        self.prediction: str = cfg.prediction
        self.learn_sigma: bool = cfg.learn_sigma
        self.num_timesteps: int = cfg.num_timesteps
        betas = make_betas(cfg.beta_schedule, cfg.num_timesteps, cfg.beta_start, cfg.beta_end)
        abar = np.cumprod(1.0 - betas)
        abar_prev = np.append(1.0, abar[:-1])
        post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
        # IDDPM tables (float64); index n = integer step.
        tables = {
            "betas": betas,
            "alphas_cumprod": abar,
            "alphas_cumprod_prev": abar_prev,
            "posterior_variance": post_var,
            # the variance at n=0 is 0: clip with the n=1 value, as IDDPM
            "posterior_log_variance_clipped": np.log(np.append(post_var[1], post_var[1:])),
            "posterior_mean_coef1": betas * np.sqrt(abar_prev) / (1.0 - abar),
            "posterior_mean_coef2": (1.0 - abar_prev) * np.sqrt(1.0 - betas) / (1.0 - abar),
            "log_betas": np.log(betas),
        }
        self._cpu = {k: torch.from_numpy(v) for k, v in tables.items()}
        self._cache: dict[tuple[str, str], torch.Tensor] = {}

    def __repr__(self) -> str:
        c = self.cfg
        return (f"DDPMSchedule(T={c.num_timesteps}, {c.beta_schedule}, prediction={c.prediction}, "
                f"learn_sigma={c.learn_sigma}, weighting={c.loss_weighting})")

    # -- tables -----------------------------------------------------------------------
    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """abar_n for n = 0..T-1, float64 on CPU."""
        return self._cpu["alphas_cumprod"]

    @property
    def betas(self) -> torch.Tensor:
        return self._cpu["betas"]

    def _table(self, name: str, device: torch.device) -> torch.Tensor:
        key = (name, str(device))
        if key not in self._cache:
            dtype = torch.float32 if device.type == "mps" else torch.float64  # mps has no float64
            self._cache[key] = self._cpu[name].to(device=device, dtype=dtype)
        return self._cache[key]

    def _gather(self, name: str, n: torch.Tensor) -> torch.Tensor:
        return self._table(name, n.device)[n]

    # -- level <-> step ----------------------------------------------------------------
    def steps(self, t: torch.Tensor) -> torch.Tensor:
        """Integer steps n = round(t * (T - 1)), (B, F) int64."""
        check_timesteps(t)
        return self._steps(t)

    def _steps(self, t: torch.Tensor) -> torch.Tensor:  # unchecked: callers validated t
        return torch.round(high_precision(t) * (self.num_timesteps - 1)).long()

    def abar(self, t: torch.Tensor) -> torch.Tensor:
        """Cumulative alpha at each frame's step, (B, F) float64."""
        return self._gather("alphas_cumprod", self.steps(t))

    def snap(self, u: torch.Tensor) -> torch.Tensor:
        """u ~ U[0, 1] (B, F) -> t = n / (T - 1) with n = min(floor(u T), T - 1): uniform over the T steps."""
        check_timesteps(u, name="u")
        T = self.num_timesteps
        n = torch.clamp(torch.floor(high_precision(u) * T), max=T - 1)
        return (n / (T - 1)).to(u.dtype)

    def timestep_input(self, t: torch.Tensor) -> torch.Tensor:
        """What the backbone embeds: the integer step n as float (B, F), as DiT/Latte."""
        return self.steps(t).to(t.dtype)

    # -- forward process ---------------------------------------------------------------
    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(abar), sqrt(1 - abar)), each (B, F) in t's dtype."""
        abar = self.abar(t)
        return abar.sqrt().to(t.dtype), (1.0 - abar).sqrt().to(t.dtype)

    def _coefs(self, t: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sqrt(abar), sqrt(1 - abar) as (B, F, 1, 1, 1) in x's dtype (t already checked)."""
        abar = self._gather("alphas_cumprod", self._steps(t))
        return (append_dims(abar.sqrt(), x.ndim).to(x.dtype), append_dims((1.0 - abar).sqrt(), x.ndim).to(x.dtype))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_n) x0 + sqrt(1 - abar_n) noise, per frame. (B, F, C, H, W)."""
        check_inputs(t, x0=x0, noise=noise)
        a, s = self._coefs(t, x0)
        return a * x0 + s * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Regression target: noise (epsilon), a*noise - s*x0 (v), or x0."""
        check_inputs(t, x0=x0, noise=noise)
        return self._target(x0, noise, t)

    def _target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.prediction == "epsilon":
            return noise
        if self.prediction == "x0":
            return x0
        a, s = self._coefs(t, x0)
        return a * noise - s * x0

    # -- model output ------------------------------------------------------------------
    def out_channels(self, c: int) -> int:
        return 2 * c if self.learn_sigma else c

    def split_output(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, F, C', H, W) -> (prediction, variance values in [-1, 1] or None), split along dim 2."""
        if not self.learn_sigma:
            return out, None
        if out.ndim != 5 or out.shape[2] % 2:
            raise ValueError(
                f"learn_sigma=True needs model output (B, F, 2C, H, W) with an even channel count, got "
                f"{tuple(out.shape)}; build the backbone with learn_sigma=True or set the schedule's learn_sigma=false"
            )
        pred, var_values = out.chunk(2, dim=2)
        return pred, var_values

    def _x0_eps(self, pred: torch.Tensor, xt: torch.Tensor, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        abar = self._gather("alphas_cumprod", n)
        d = xt.ndim
        if self.prediction == "v":
            a = append_dims(abar.sqrt(), d).to(xt.dtype)
            s = append_dims((1.0 - abar).sqrt(), d).to(xt.dtype)
            return a * xt - s * pred, s * xt + a * pred
        recip = append_dims(abar.rsqrt(), d).to(xt.dtype)  # 1 / sqrt(abar)
        recipm1 = append_dims((1.0 / abar - 1.0).sqrt(), d).to(xt.dtype)  # sqrt(1 / abar - 1)
        if self.prediction == "epsilon":
            return recip * xt - recipm1 * pred, pred
        return pred, (recip * xt - pred) / recipm1  # x0

    def predict_x0_eps(self, model_out: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw model output at (xt, t) -> (x0_hat, eps_hat), each (B, F, C, H, W)."""
        pred, _ = self.split_output(model_out)
        check_inputs(t, xt=xt, prediction=pred)
        return self._x0_eps(pred, xt, self._steps(t))

    # -- steps between arbitrary levels (samplers, respacing) --------------------------
    def step_alphas(self, t_from: torch.Tensor, t_to: torch.Tensor, *, to_data: torch.Tensor | bool | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(abar_from, abar_to), each (B, F) float64, for a sampler step from level t_from to t_to.

        ``to_data`` (B, F) bool marks frames whose step ends on clean data (abar_to = 1)
        rather than on step 0; the default, ``(t_to == 0) & (t_from > 0)``, makes a
        sampling matrix that ends at 0 finish on data, as diffusers' DDIM
        (``set_alpha_to_one``) and IDDPM's last step do. Use it in every DDPM-family
        sampler (DDIM, ancestral) so they agree on the last step.
        """
        check_timesteps(t_from, name="t_from")
        check_timesteps(t_to, name="t_to")
        if t_from.shape != t_to.shape:
            raise ValueError(f"t_from {tuple(t_from.shape)} and t_to {tuple(t_to.shape)} must have the same (B, F) shape")
        n_from, n_to = self._steps(t_from), self._steps(t_to)
        if bool((n_to > n_from).any()):
            raise ValueError("t_to must not exceed t_from (levels decrease while sampling)")
        if to_data is None:
            to_data = (n_to == 0) & (n_from > 0)
        elif isinstance(to_data, bool):
            to_data = torch.full_like(n_to, to_data, dtype=torch.bool)
        abar_from = self._gather("alphas_cumprod", n_from)
        abar_to = torch.where(to_data, torch.ones_like(abar_from), self._gather("alphas_cumprod", n_to))
        return abar_from, abar_to

    def posterior(self, t_from: torch.Tensor, t_to: torch.Tensor, *, to_data: torch.Tensor | bool | None = None) -> Posterior:
        """q(x_to | x_from, x0) for a (respaced) step from level t_from to t_to, per frame, (B, F) float64 each.

        ``fvdm.plugins.noise_schedules.posterior.gaussian_posterior`` on this schedule's abar, so any pair
        of grid levels works, as IDDPM's respacing (beta = 1 - abar_from / abar_to). ``to_data``: see
        ``step_alphas`` (default: a step ending at t_to = 0 lands on data). There the posterior variance
        is 0; its log is clipped to the n=0 table value (variance of step 1 -> 0) as IDDPM does.
        Frames with t_from == t_to get the identity mean (coef_xt = 1); mask them.
        """
        abar_from, abar_to = self.step_alphas(t_from, t_to, to_data=to_data)
        floor = self._gather("posterior_log_variance_clipped", torch.zeros_like(self._steps(t_from)))
        return gaussian_posterior(abar_from.sqrt(), (1.0 - abar_from).sqrt(), abar_to.sqrt(), (1.0 - abar_to).sqrt(),
                                  zero_log_variance=floor)

    def posterior_log_variance(self, t_from: torch.Tensor, t_to: torch.Tensor, *, to_data=None) -> torch.Tensor:
        """Clipped log of the posterior variance (beta tilde) for t_from -> t_to, (B, F) float64."""
        return self.posterior(t_from, t_to, to_data=to_data).log_variance

    def model_log_variance(self, var_values: torch.Tensor, t_from: torch.Tensor, t_to: torch.Tensor, *, to_data=None) -> torch.Tensor:
        """Learned log variance (IDDPM): frac * log(beta) + (1 - frac) * log(beta_tilde), frac = (v + 1) / 2.

        ``var_values`` (B, F, C, H, W) from ``split_output``; betas come from the
        abar ratio of the step, so respaced samplers get the respaced range.
        """
        post = self.posterior(t_from, t_to, to_data=to_data)
        return learned_log_variance(var_values, post.log_variance, post.log_beta)

    # -- loss --------------------------------------------------------------------------
    def snr(self, t: torch.Tensor) -> torch.Tensor:
        abar = self.abar(t)
        return abar / (1.0 - abar)

    def loss_weights(self, t: torch.Tensor) -> torch.Tensor:
        """Per-frame weights of the MSE term, (B, F) in t's dtype.

        min_snr (Hang et al. 2023): min(SNR, gamma) / SNR for epsilon, / (SNR + 1) for v,
        unchanged for x0; the weight applies to the MSE term only, not to the bound. With
        ``snr_floor`` f > 0 the data-space weight is clamp(SNR, f, gamma): min-SNR alone drives the
        weight of the noisiest levels to 0, and those are the levels at which a frame has to be
        drawn from clean neighbours (measured in the README's recipe table).
        """
        if self.cfg.loss_weighting == "uniform":
            check_timesteps(t)
            return torch.ones_like(t)
        snr = self.snr(t)
        clipped = snr.clamp(min=self.cfg.snr_floor, max=self.cfg.snr_gamma)
        w = {"epsilon": clipped / snr, "v": clipped / (snr + 1.0), "x0": clipped}[self.prediction]
        return w.to(t.dtype)

    def vb_terms(self, pred: torch.Tensor, var_values: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-frame variational-bound term in bits, (B, F): KL(q || p) for n > 0, decoder NLL at n = 0.

        ``pred`` should be detached by the caller (the bound trains only the variance).
        Consecutive-step (training) tables, exactly as IDDPM's ``_vb_terms_bpd``.
        """
        check_inputs(t, x0=x0, xt=xt, prediction=pred, var_values=var_values)
        return self._vb_terms(pred, var_values, x0, xt, self._steps(t))

    def _vb_terms(self, pred, var_values, x0, xt, n: torch.Tensor) -> torch.Tensor:
        d = x0.ndim

        def g(name: str) -> torch.Tensor:
            return append_dims(self._gather(name, n), d).to(x0.dtype)

        x0_hat, _ = self._x0_eps(pred, xt, n)  # no clipping during training (IDDPM clip_denoised=False)
        c1, c2 = g("posterior_mean_coef1"), g("posterior_mean_coef2")
        true_mean = c1 * x0 + c2 * xt
        true_log_var = g("posterior_log_variance_clipped")
        model_mean = c1 * x0_hat + c2 * xt
        model_log_var = learned_log_variance(
            var_values, self._gather("posterior_log_variance_clipped", n), self._gather("log_betas", n)
        )
        kl = frame_mean(normal_kl(true_mean, true_log_var, model_mean, model_log_var)) / math.log(2.0)
        nll = -frame_mean(discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_log_var)) / math.log(2.0)
        return torch.where(n == 0, nll, kl)

    def loss(self, model_out: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-frame loss (B, F): weight * MSE(target) [+ (T / 1000) * vb when learn_sigma].

        MSE is the mean over (C, H, W) of each frame; the T/1000 factor on the bound is
        IDDPM's RESCALED_MSE (1 for T = 1000, i.e. DiT/Latte's plain hybrid loss).
        """
        pred, var_values = self.split_output(model_out)
        check_inputs(t, x0=x0, xt=xt, noise=noise, prediction=pred)
        pred, x0, xt, noise = as_float32(pred), as_float32(x0), as_float32(xt), as_float32(noise)
        target = self._target(x0, noise, t)
        loss = self.loss_weights(t).to(pred.dtype) * frame_mean((target - pred) ** 2)
        if var_values is not None:
            vb = self._vb_terms(pred.detach(), as_float32(var_values), x0, xt, self._steps(t))
            loss = loss + vb * (self.num_timesteps / 1000.0)
        return loss
