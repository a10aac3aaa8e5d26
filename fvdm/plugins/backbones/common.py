"""What every built-in video backbone shares: input checks at the boundary and a swappable attention kernel.

Classifier-free guidance is not here: it wraps any backbone at sampling time
(``fvdm.core.sampling.make_model_fn``, null label ``num_classes``).

A backbone here has ``in_channels``, ``num_frames``, ``input_size``, ``num_classes``, a ``y_embedder``
(``LabelEmbedder`` or None) and ``forward(x, t_in, y, *, force_drop=None)``; ``BackboneMixin`` turns
the functions below into its methods. The class-conditioned ones (Latte, the U-Net) take their label
dropout from ``ClassConditionedConfig``.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as Fn
from einops import rearrange
from pydantic import Field

from fvdm.core.interfaces import BackboneConfig
from fvdm.core.tensor import check_video

#: ``fn(q, k, v, *, mask=None, causal=False, scale=None)`` on (B, N, H, D) tensors -> (B, N, H, D)
AttentionFn = Callable[..., torch.Tensor]


class ClassConditionedConfig(BackboneConfig):
    """A backbone conditioned on class labels y (B,) besides x and t: ``class_dropout`` replaces a label by the
    null class (``LabelEmbedder``) during training, which is how classifier-free guidance is learned."""

    conditioning: ClassVar[frozenset[str]] = frozenset({"class"})

    class_dropout: float = Field(0.1, ge=0, lt=1, description="label dropout for CFG (adds a null class)")

    def guidance_dropout(self) -> dict[str, float]:
        return {"class": self.class_dropout} if self.num_classes > 0 else {}


def sdpa_attention(q, k, v, *, mask=None, causal=False, scale=None):
    """Default kernel: torch SDPA on (B, N, H, D) inputs (transposed to SDPA's (B, H, N, D) and back)."""
    q, k, v = (rearrange(a, "b n h d -> b h n d") for a in (q, k, v))
    out = Fn.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)
    return rearrange(out, "b h n d -> b n h d")


def check_inputs(model: Any, x: torch.Tensor, t_in: torch.Tensor, y: torch.Tensor | None) -> None:
    """Fail loudly, naming the fix, on x (B, F, C, H, W), t_in (B, F) | (B,) and y (B,) | None that do not fit."""
    check_video(x, "x", channels=model.in_channels)
    B, F, _, H, W = x.shape
    limit = getattr(model, "max_frames", model.num_frames)  # None: any length (relative positions, causal)
    if limit is not None and F > limit:
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


class BackboneMixin:
    """The methods every built-in backbone has, once: boundary checks, parameter count, attention kernel.

    Attention modules opt in to ``set_attention_kernel`` by holding a ``kernel`` attribute (an ``AttentionFn``).
    """

    def _check_inputs(self, x: torch.Tensor, t_in: torch.Tensor, y: torch.Tensor | None) -> None:
        check_inputs(self, x, t_in, y)

    def num_params(self, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def set_attention_kernel(self, fn: AttentionFn) -> None:
        """Use ``fn(q, k, v, *, mask=None, causal=False, scale=None)`` on (B, N, H, D) in every attention layer."""
        if not callable(fn):
            raise TypeError(f"attention kernel must be callable, got {type(fn).__name__}")
        for m in self.modules():
            if hasattr(m, "kernel") and m is not self:
                m.kernel = fn
