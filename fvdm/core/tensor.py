"""Tensor helpers shared by every layer."""

from __future__ import annotations

import torch

VIDEO_LAYOUT = "(B, F, C, H, W)"


def append_dims(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append trailing singleton dims so per-frame values broadcast over a video.

    ``t`` of shape (B, F) becomes (B, F, 1, 1, 1) for ``ndim=5``. This is the only
    sanctioned way to broadcast per-frame values: it never flattens, so B=1 keeps its
    shape (a peer scheduler that flattens ``t`` returns a wrong shape for B=1).
    """
    if t.ndim > ndim:
        raise ValueError(f"append_dims: tensor has {t.ndim} dims, more than target ndim={ndim}")
    return t.reshape(*t.shape, *([1] * (ndim - t.ndim)))


def check_video(x: torch.Tensor, name: str = "x", *, channels: int | None = None) -> None:
    """Fail loudly unless ``x`` is a floating (B, F, C, H, W) tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {VIDEO_LAYOUT}, got {type(x).__name__}")
    if x.ndim != 5:
        raise ValueError(
            f"{name} must have shape {VIDEO_LAYOUT}, got {tuple(x.shape)}; "
            "a single clip (F, C, H, W) needs x[None]"
        )
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {x.dtype}; convert uint8 with x.float()/127.5-1")
    if channels is not None and x.shape[2] != channels:
        raise ValueError(f"{name} has {x.shape[2]} channels at dim 2, expected {channels} (layout {VIDEO_LAYOUT})")


def check_timesteps(t: torch.Tensor, x: torch.Tensor | None = None, name: str = "t") -> None:
    """Fail loudly unless ``t`` is a float (B, F) tensor in [0, 1] matching ``x``."""
    if not isinstance(t, torch.Tensor) or t.ndim != 2:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name} must be a (B, F) tensor of per-frame levels, got {shape}")
    if not t.is_floating_point():
        raise TypeError(
            f"{name} must be float in [0, 1], got {t.dtype}; integer DDPM steps n map to n / (T - 1)"
        )
    if x is not None and tuple(t.shape) != tuple(x.shape[:2]):
        raise ValueError(f"{name} has shape {tuple(t.shape)} but x has (B, F) = {tuple(x.shape[:2])}")
    lo, hi = float(t.min()), float(t.max())
    if lo < 0.0 or hi > 1.0 or t.isnan().any():
        raise ValueError(f"{name} must lie in [0, 1] (0 = clean, 1 = pure noise); observed [{lo:.4g}, {hi:.4g}]")
