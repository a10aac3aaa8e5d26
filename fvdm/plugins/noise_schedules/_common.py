"""Input checks and per-frame reductions shared by the noise schedules."""

from __future__ import annotations

import torch

from fvdm.core.tensor import check_timesteps, check_video


def check_inputs(t: torch.Tensor, **videos: torch.Tensor) -> None:
    """Fail loudly unless every video is (B, F, C, H, W), all share one shape, and t is (B, F) in [0, 1]."""
    ref_name, ref = next(iter(videos.items()))
    for name, x in videos.items():
        check_video(x, name)
        if x.shape != ref.shape:
            raise ValueError(f"{name} has shape {tuple(x.shape)} but {ref_name} has {tuple(ref.shape)}; they must match")
    check_timesteps(t, ref)


def frame_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over (C, H, W): (B, F, C, H, W) -> (B, F). Per frame, never per sample."""
    return x.mean(dim=(2, 3, 4))


def as_float32(x: torch.Tensor) -> torch.Tensor:
    """Losses are computed in at least float32 (bf16/fp16 model outputs are upcast)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def high_precision(x: torch.Tensor) -> torch.Tensor:
    """float64 copy for index/coefficient arithmetic; float32 on mps, which has no float64."""
    return x.float() if x.device.type == "mps" else x.double()
