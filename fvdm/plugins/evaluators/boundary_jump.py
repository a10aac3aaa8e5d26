"""boundary_jump: how abruptly generated frames join the given (context) frames, relative to real video.

A boundary is a pair of adjacent frames (j, j+1) of which exactly one is given (after the
last context frame in extension and image-to-video; both ends in interpolation). The jump
is the mean absolute pixel difference across the boundaries (pixels on [0, 1]); ``value``
= fake jump / the same quantity on the real clips, so 1.0 = as smooth as real motion,
>1 = a visible seam, <1 = too little motion. ``interior_ratio`` does the same for the
pairs where both frames are generated (frozen video -> 0). Model-free: no detector.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from fvdm.core.interfaces import PluginConfig
from fvdm.plugins.evaluators.digits_frame_net import as_uint8, context_frames


def pair_change(v: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """uint8 videos (B, F, C, H, W), bool (F-1,) pairs -> mean |x[j+1] - x[j]| on [0, 1] over chosen pairs."""
    x = v.float() / 255.0
    diff = (x[:, 1:] - x[:, :-1]).abs().mean(dim=(2, 3, 4))  # (B, F-1)
    return diff[:, pairs].mean()


class BoundaryJump:
    """Mean |frame change| across context boundaries, fake over real (1.0 = like real)."""

    class Config(PluginConfig):
        value_range: Literal["-1_1", "0_1"] = Field(
            "-1_1", description="float videos are in '-1_1' or '0_1'; uint8 always accepted")

    def __init__(self, cfg: "BoundaryJump.Config"):
        self.cfg = cfg

    def evaluate(self, fake: Any, real: Any, **kwargs: Any) -> dict[str, Any]:
        """``fake``, ``real``: (B, F, C, H, W) with the same F (real = the ground-truth clips, or any real clips);
        ``context``: given frame indices (list) or (F,) bool — required."""
        f_v = as_uint8(fake, "fake", self.cfg.value_range)
        if real is None:
            raise ValueError("boundary_jump needs real clips to set the scale: pass real=(B, F, C, H, W) ground truth")
        r_v = as_uint8(real, "real", self.cfg.value_range)
        f = f_v.shape[1]
        if r_v.shape[1] != f or r_v.shape[2:] != f_v.shape[2:]:
            raise ValueError(f"real {tuple(r_v.shape)} and fake {tuple(f_v.shape)} must share F, C, H, W")
        if kwargs.get("context") is None:
            raise ValueError("boundary_jump needs context=[given frame indices]; it applies to conditional tasks only")
        ctx = context_frames(kwargs["context"], f)
        boundary = ctx[:-1] ^ ctx[1:]  # (F-1,) exactly one of the pair is given
        if not boundary.any():
            raise ValueError(f"context {torch.nonzero(ctx).flatten().tolist()} has no given/generated boundary")
        interior = ~ctx[:-1] & ~ctx[1:]
        real_jump = float(pair_change(r_v, boundary))
        fake_jump = float(pair_change(f_v, boundary))
        out: dict[str, Any] = {
            "metric": "boundary_jump",
            "value": fake_jump / max(real_jump, 1e-12),
            "fake_jump": fake_jump,
            "real_jump": real_jump,
            "n_boundaries": int(boundary.sum()),
        }
        if interior.any():
            out["interior_ratio"] = float(pair_change(f_v, interior)) / max(float(pair_change(r_v, interior)), 1e-12)
        return out
