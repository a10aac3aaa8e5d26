"""What every built-in video backbone shares: input checks at the boundary and batched classifier-free guidance.

A backbone here has ``in_channels``, ``num_frames``, ``input_size``, ``num_classes``, a ``y_embedder``
(``LabelEmbedder`` or None) and ``forward(x, t_in, y, *, force_drop=None)``.
"""

from __future__ import annotations

from typing import Any

import torch

from fvdm.core.tensor import check_video


def check_inputs(model: Any, x: torch.Tensor, t_in: torch.Tensor, y: torch.Tensor | None) -> None:
    """Fail loudly, naming the fix, on x (B, F, C, H, W), t_in (B, F) | (B,) and y (B,) | None that do not fit."""
    check_video(x, "x", channels=model.in_channels)
    B, F, _, H, W = x.shape
    if F > model.num_frames:
        raise ValueError(
            f"x has {F} frames but this backbone holds at most num_frames={model.num_frames} "
            "(temporal position embedding); sample longer videos in chunks or build with a larger num_frames"
        )
    if H != model.input_size or W != model.input_size:
        raise ValueError(
            f"x has spatial size {H}x{W} but the backbone was built for input_size={model.input_size} "
            "(latent size: resolution / autoencoder downsample); set backbone input_size accordingly"
        )
    if not isinstance(t_in, torch.Tensor) or tuple(t_in.shape) not in ((B, F), (B,)):
        shape = tuple(t_in.shape) if isinstance(t_in, torch.Tensor) else type(t_in).__name__
        raise ValueError(f"t_in must be per-frame (B, F) = {(B, F)} (or (B,) for one level per clip), got {shape}")
    if t_in.dtype == torch.bool or t_in.is_complex():
        raise TypeError(f"t_in must be real timestep inputs (schedule.timestep_input(t)), got {t_in.dtype}")
    if model.y_embedder is None and y is not None:
        raise ValueError("y was given but the backbone is unconditional (num_classes=0); pass y=None")
    if model.y_embedder is not None and y is None:
        raise ValueError(f"the backbone is class-conditional (num_classes={model.num_classes}); pass y (B,)")
    if y is not None and tuple(y.shape) != (B,):
        raise ValueError(f"y must have shape (B,) = ({B},), got {tuple(y.shape)}")


def forward_with_cfg(model: Any, x: torch.Tensor, t_in: torch.Tensor, y: torch.Tensor, cfg_scale: float,
                     guided_channels: int | None = None) -> torch.Tensor:
    """Classifier-free guidance in one batched pass; guidance on the first ``guided_channels`` output
    channels (default: the C predicted channels, not the learned variance)."""
    if model.y_embedder is None or model.y_embedder.dropout_prob <= 0:
        raise ValueError("forward_with_cfg needs a class-conditional model trained with class_dropout > 0")
    B = x.shape[0]
    drop = torch.cat([torch.zeros(B, dtype=torch.bool), torch.ones(B, dtype=torch.bool)]).to(x.device)
    out = model.forward(torch.cat([x, x]), torch.cat([t_in, t_in]), torch.cat([y, y]), force_drop=drop)
    cond, uncond = out[:B], out[B:]  # (B, F, C_out, H, W) each
    k = model.in_channels if guided_channels is None else guided_channels
    guided = uncond[:, :, :k] + cfg_scale * (cond[:, :, :k] - uncond[:, :, :k])
    return torch.cat([guided, cond[:, :, k:]], dim=2)
