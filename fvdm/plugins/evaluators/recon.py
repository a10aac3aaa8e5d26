"""Per-frame reconstruction metrics against ground truth (conditional tasks): PSNR and SSIM.

Inputs are videos (B, F, C, H, W), uint8 or float declared in [0, 1]; both are scored
on [0, 1] (data range 1). PSNR is capped at :data:`PSNR_MAX_DB` = 100 dB per frame
(the per-frame MSE is floored at 1e-10): identical frames score 100 dB, not infinity,
so a copy-the-context baseline cannot dominate a mean (100 dB is already far above any
8-bit error: one grey level off in one pixel of 32x32 is 78 dB).
SSIM follows Wang et al. 2004 as scikit-image computes it with ``gaussian_weights=True,
use_sample_covariance=False``: 11x11 Gaussian window (sigma 1.5), K1=0.01, K2=0.03,
mean over the valid region, averaged over channels.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import Field

from fvdm.core.interfaces import PluginConfig
from fvdm.plugins.evaluators.common import to_uint8_video


def load_videos(x: Any) -> Any:
    """A directory of videos (sorted by name, equal shapes) -> uint8 (N, F, C, H, W); tensors pass through."""
    import os

    if isinstance(x, (str, os.PathLike)):
        from fvdm.plugins.evaluators.sources import DirectorySource

        src = DirectorySource(x)
        order = sorted(range(len(src)), key=lambda i: src.keys[i])
        vids = [src.load(i, range(src.length(i))) for i in order]
        if len({tuple(v.shape) for v in vids}) != 1:
            raise ValueError(f"{x}: videos differ in shape; per-frame metrics need equal shapes")
        return torch.stack(vids)
    return x


def _unit(x: Any, name: str) -> torch.Tensor:
    x = torch.as_tensor(load_videos(x))
    if x.ndim != 5:
        raise ValueError(f"{name} must be videos (B, F, C, H, W), got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.double() / 255.0
    to_uint8_video(x, name)  # range check only: float must lie in [0, 1]
    return x.double()


def _pair(pred: Any, target: Any) -> tuple[torch.Tensor, torch.Tensor]:
    p, t = _unit(pred, "pred"), _unit(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred {tuple(p.shape)} and target {tuple(t.shape)} must have the same shape")
    return p, t


PSNR_MAX_DB = 100.0
_MSE_FLOOR = 10.0 ** (-PSNR_MAX_DB / 10)  # 1e-10: the MSE at which PSNR reaches the cap


def psnr_per_frame(pred: Any, target: Any) -> torch.Tensor:
    """PSNR in dB per frame, (B, F), capped at PSNR_MAX_DB (identical frames give 100 dB)."""
    p, t = _pair(pred, target)
    mse = (p - t).pow(2).mean(dim=(2, 3, 4))  # (B, F)
    return 10.0 * torch.log10(1.0 / mse.clamp(min=_MSE_FLOOR))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return torch.outer(g, g)  # (size, size)


def ssim_per_frame(pred: Any, target: Any, *, win_size: int = 11, sigma: float = 1.5,
                   k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Mean SSIM per frame, (B, F), data range 1."""
    p, t = _pair(pred, target)
    b, f, c, h, w = p.shape
    if min(h, w) < win_size:
        raise ValueError(f"SSIM needs frames of at least {win_size}x{win_size} pixels, got {h}x{w}; lower win_size")
    x = rearrange(p, "b f c h w -> (b f c) 1 h w")
    y = rearrange(t, "b f c h w -> (b f c) 1 h w")
    win = _gaussian_window(win_size, sigma)[None, None]  # (1, 1, k, k)

    def filt(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, win)  # valid region only

    mx, my = filt(x), filt(y)
    vx = filt(x * x) - mx * mx
    vy = filt(y * y) - my * my
    cxy = filt(x * y) - mx * my
    c1, c2 = k1 ** 2, k2 ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    per_channel = s.mean(dim=(1, 2, 3))  # ((b f c),)
    return rearrange(per_channel, "(b f c) -> b f c", b=b, f=f).mean(dim=2)


class ReconMetric:
    """Per-frame PSNR or SSIM of generated frames against ground truth."""

    class Config(PluginConfig):
        metric: Literal["psnr", "ssim"] = "psnr"
        win_size: int = Field(11, ge=3)

    def __init__(self, cfg: "ReconMetric.Config"):
        self.cfg = cfg

    def evaluate(self, fake: Any, real: Any, **kwargs: Any) -> dict[str, Any]:
        """``fake``/``real``: (B, F, C, H, W); ``mask`` (B, F) bool selects scored frames
        (e.g. ``~ctx`` to skip given context frames)."""
        if self.cfg.metric == "psnr":
            vals = psnr_per_frame(fake, real)
        else:
            vals = ssim_per_frame(fake, real, win_size=self.cfg.win_size)
        mask = kwargs.get("mask")
        mask = torch.ones_like(vals, dtype=torch.bool) if mask is None else torch.as_tensor(mask, dtype=torch.bool)
        if mask.shape != vals.shape:
            raise ValueError(f"mask must be (B, F) = {tuple(vals.shape)}, got {tuple(mask.shape)}")
        if not mask.any():
            raise ValueError("mask selects no frames to score")
        per_frame = [float(vals[:, j][mask[:, j]].mean()) if mask[:, j].any() else math.nan
                     for j in range(vals.shape[1])]
        return {
            "metric": self.cfg.metric,
            "value": float(vals[mask].mean()),
            "per_frame": per_frame,
            "n_frames": int(mask.sum()),
            "data_range": 1.0,
            "protocol": {"win_size": self.cfg.win_size, "sigma": 1.5} if self.cfg.metric == "ssim"
            else {"max_db": PSNR_MAX_DB},
        }


class PSNRConfig(ReconMetric.Config):
    metric: Literal["psnr", "ssim"] = "psnr"


class SSIMConfig(ReconMetric.Config):
    metric: Literal["psnr", "ssim"] = "ssim"
