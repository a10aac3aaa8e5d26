"""The Gaussian posterior q(x_to | x_from, x0) between two levels, and IDDPM's learned variance on it.

For any forward process x_t = alpha_t x0 + sigma_t eps and a step from level ``from`` down to ``to``:

    alpha_ft = alpha_from / alpha_to,   beta = sigma_from² - alpha_ft² sigma_to²
    mean     = alpha_to beta / sigma_from² · x0 + alpha_ft sigma_to² / sigma_from² · x_from
    variance = beta sigma_to² / sigma_from²              (beta tilde, DDPM's "small" variance)

For a variance-preserving schedule beta = 1 - abar_from / abar_to: the beta of a respaced step
(IDDPM). The DDPM schedule (``DDPMSchedule.posterior``) and the ancestral sampler (any schedule,
through ``fvdm.core.sampling.alpha_sigma``) both use this one implementation; they differ only in
how a zero variance (a step that lands on data) is logged, which the caller names with
``zero_log_variance``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from fvdm.core.tensor import append_dims

#: variances are clamped to at least this before their log unless ``zero_log_variance`` is given
VARIANCE_FLOOR = 1e-20


class Posterior(NamedTuple):
    """q(x_to | x_from, x0) for one step between levels, each shaped like the inputs (float64).

    mean = coef_x0 * x0 + coef_xt * x_from; ``log_variance`` is finite (clipped, see
    ``gaussian_posterior``); ``beta`` is sigma_from² - alpha_ft² sigma_to² and ``log_beta`` its log,
    the upper end of the learned range ("large" variance).
    """

    coef_x0: torch.Tensor
    coef_xt: torch.Tensor
    variance: torch.Tensor
    log_variance: torch.Tensor
    beta: torch.Tensor
    log_beta: torch.Tensor


def gaussian_posterior(a_from: torch.Tensor, s_from: torch.Tensor, a_to: torch.Tensor, s_to: torch.Tensor, *,
                       zero_log_variance: torch.Tensor | None = None) -> Posterior:
    """The posterior of a step from (alpha, sigma) = (a_from, s_from) to (a_to, s_to), elementwise, float64.

    Computed in float64 by the caller's choice of inputs: sigma_from² - alpha_ft² sigma_to² cancels.
    ``zero_log_variance`` says how a zero variance is logged: None clamps every variance (and beta)
    at ``VARIANCE_FLOOR`` before the log (the sampler: finite, and exp(log) ~ 0 there); a tensor is
    used where the variance is 0 and log_beta is kept >= log_variance (IDDPM clips with the log
    variance of step 1, so the learned range stays ordered).
    """
    s_from2 = (s_from**2).clamp_min(VARIANCE_FLOOR)
    a_ft = a_from / a_to.clamp_min(1e-12)
    beta = (s_from**2 - a_ft**2 * s_to**2).clamp_min(0)
    variance = beta * s_to**2 / s_from2
    if zero_log_variance is None:
        log_variance = variance.clamp_min(VARIANCE_FLOOR).log()
        log_beta = beta.clamp_min(VARIANCE_FLOOR).log()
    else:
        log_variance = torch.where(variance > 0, torch.log(variance.clamp(min=1e-300)), zero_log_variance)
        log_beta = torch.maximum(torch.log(beta.clamp(min=1e-300)), log_variance)
    return Posterior(coef_x0=a_to * beta / s_from2, coef_xt=a_ft * s_to**2 / s_from2, variance=variance,
                     log_variance=log_variance, beta=beta, log_beta=log_beta)


def learned_log_variance(var_values: torch.Tensor, min_log: torch.Tensor, max_log: torch.Tensor) -> torch.Tensor:
    """IDDPM's learned range: frac·max_log + (1 - frac)·min_log, frac = (v + 1) / 2 for model outputs v in [-1, 1].

    ``var_values`` (B, F, C, H, W); ``min_log``/``max_log`` per frame (B, F) (or already broadcastable),
    cast to var_values' dtype first.
    """
    frac = (var_values + 1.0) / 2.0
    d = var_values.ndim
    lo, hi = append_dims(min_log, d).to(var_values.dtype), append_dims(max_log, d).to(var_values.dtype)
    return frac * hi + (1.0 - frac) * lo
