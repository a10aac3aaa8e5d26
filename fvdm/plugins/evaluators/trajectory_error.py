"""trajectory_error: how far, in pixels, generated digits are from where the true digits are.

For every scored frame and every true digit (moving_digits ground truth: label and
top-left per frame; centre = top-left + digit_size / 2), the error is the distance from
the true centre to the nearest detected peak *of the same class* (the detector's
probability-weighted centre), capped at ``cap_fraction`` x the frame height (8 px at
32x32). A digit the detector does not find scores the cap, so ``value`` is in [0, cap]:
0 = every digit where it should be; the cap = nothing there. ``matched_error_px`` is
the mean over found digits only and ``miss_rate`` the fraction not found. Meant for
interpolation and extension, where the given frames pin the true trajectory.
"""

from __future__ import annotations

from typing import Any

import torch
from einops import rearrange
from pydantic import Field

from fvdm.plugins.evaluators.digits_frame_net import Detections, FrameDigitsConfig, FrameDigitsMetric, frame_mask
from fvdm.plugins.evaluators.digits_truth import as_truth


def position_errors(det: Detections, centres: torch.Tensor, labels: torch.Tensor, cap: float
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame n and true digit d: (error (N, D) capped at ``cap``, found (N, D) bool).

    det over N frames; centres (N, D, 2) [y, x] px; labels (N, D), -1 = no digit (error 0, not found).
    """
    n, d = labels.shape
    lab = labels.clamp(min=0)
    rows = torch.arange(n)[:, None]
    pos = det.pos[rows, lab]  # (N, D, G, G, 2) the peaks of each true digit's class
    keep = det.keep[rows, lab]  # (N, D, G, G)
    dist = (pos - centres[:, :, None, None, :].to(pos.dtype)).norm(dim=-1).masked_fill(~keep, float("inf"))
    nearest = dist.flatten(2).amin(dim=2)  # (N, D), inf where the class was not found
    valid = labels >= 0
    found = valid & torch.isfinite(nearest)
    err = torch.where(valid, nearest.clamp(max=cap), torch.zeros_like(nearest))
    return err, found


class TrajectoryErrorConfig(FrameDigitsConfig):
    cap_fraction: float = Field(0.25, gt=0, le=1.5, description="error cap (and miss penalty) as a fraction of H")


class TrajectoryError(FrameDigitsMetric):
    """Mean capped pixel distance between true digit centres and same-class detections."""

    Config = TrajectoryErrorConfig

    def evaluate(self, fake: Any, real: Any = None, **kwargs: Any) -> dict[str, Any]:
        """``fake``: (B, F, C, H, W). Ground truth: ``truth`` (or ``real``) = DigitsTruth from
        ``digits_truth(moving_digits_dataset, clip_indices)`` for the same B clips and F frames (pixels of
        fake's H x W). ``mask`` (B, F)/(F,) bool: scored frames (e.g. the generated ones; default all)."""
        truth = kwargs.get("truth", real)
        if truth is None:
            truth = {}
        truth = as_truth(truth, "trajectory_error")
        v = self.videos(fake, "fake")
        b, f, _, h, _ = v.shape
        if truth.trajectories.shape[0] != b or truth.trajectories.shape[2] != f:
            raise ValueError(f"ground truth covers {truth.trajectories.shape[0]} clips x "
                             f"{truth.trajectories.shape[2]} frames, fake has {b} x {f}; pass the same clips")
        m = frame_mask(kwargs.get("mask"), (b, f))
        cap = self.cfg.cap_fraction * h
        det = self.detections(v)
        centres = rearrange(truth.centres, "b d f c -> (b f) d c")
        labels = rearrange(truth.labels[:, None, :].expand(-1, f, -1), "b f d -> (b f) d")
        err, found = position_errors(det, centres, labels, cap)
        scored = (labels >= 0) & rearrange(m, "b f -> (b f)")[:, None]  # (B*F, D)
        return {
            "metric": "trajectory_error",
            "value": float(err[scored].mean()),
            "matched_error_px": float(err[scored & found].mean()) if (scored & found).any() else float("nan"),
            "miss_rate": float(1 - found[scored].float().mean()),
            "cap_px": cap,
            "n_digit_frames": int(scored.sum()),
            **self.provenance(),
        }
