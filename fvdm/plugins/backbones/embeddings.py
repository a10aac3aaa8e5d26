"""Embeddings of the Latte backbone: patches, per-frame timesteps, class labels, fixed sin-cos positions.

Parameter names (``proj``, ``mlp.0``/``mlp.2``, ``embedding_table``) follow Latte/DiT so public
checkpoints load with a key remap only (``latte_import.py``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from einops import rearrange
from torch import nn


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> tokens: (M, C, H, W) -> (M, N, D), N = (H/p)(W/p), row-major."""

    def __init__(self, in_channels: int, hidden_size: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.proj(x), "m d gh gw -> m (gh gw) d")  # row-major patches, as timm/Latte


def timestep_features(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of (possibly fractional) timesteps, any shape ``S`` -> ``S + (dim,)``.

    ``[cos(t w_i), sin(t w_i)]`` with ``w_i = max_period^(-i/half)``, i < half (GLIDE/DiT/Latte order).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[..., None] * freqs
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[..., :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """Timesteps of any shape (per frame: (B, F); scalar: (B,)) -> embeddings of shape ``t.shape + (D,)``."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        feats = timestep_features(t, self.frequency_embedding_size)
        return self.mlp(feats.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class labels (B,) -> (B, D) with label dropout for classifier-free guidance.

    When ``dropout_prob > 0`` the table has one extra row, the null class ``num_classes``;
    passing ``y = num_classes`` forces the unconditional embedding.
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), hidden_size)

    def forward(self, labels: torch.Tensor, *, train: bool, force_drop: torch.Tensor | None = None) -> torch.Tensor:
        if labels.ndim != 1 or labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"y must be integer class labels of shape (B,), got {labels.dtype} {tuple(labels.shape)}")
        hi = self.embedding_table.num_embeddings - 1
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > hi):
            null = f" ({self.num_classes} = null class for CFG)" if self.dropout_prob > 0 else (
                "; there is no null class because class_dropout=0 (set class_dropout>0 to train one)"
            )
            raise ValueError(f"class labels must lie in [0, {hi}]{null}; got [{int(labels.min())}, {int(labels.max())}]")
        labels = labels.long()
        if force_drop is not None:
            labels = torch.where(force_drop.bool(), self.num_classes, labels)
        elif train and self.dropout_prob > 0:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
            labels = torch.where(drop, self.num_classes, labels)
        return self.embedding_table(labels)


def sincos_1d(embed_dim: int, pos: np.ndarray) -> np.ndarray:
    """MAE 1-D sin-cos embedding: positions (M,) -> (M, D) as ``[sin(p w), cos(p w)]``, w_i = 10000^(-2i/D)."""
    if embed_dim % 2:
        raise ValueError(f"sin-cos position embedding needs an even hidden size, got {embed_dim}")
    omega = np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(embed_dim: int, grid_size: int) -> np.ndarray:
    """MAE/Latte 2-D sin-cos embedding for a row-major grid: (grid_size**2, D).

    The first half of the channels encodes the column (w) index, the second half the row
    index, exactly as MAE's ``meshgrid(grid_w, grid_h)`` does (kept for checkpoint compatibility).
    """
    if embed_dim % 4:
        raise ValueError(f"2-D sin-cos position embedding needs hidden size divisible by 4, got {embed_dim}")
    gw, gh = np.meshgrid(np.arange(grid_size, dtype=np.float32), np.arange(grid_size, dtype=np.float32))
    return np.concatenate([sincos_1d(embed_dim // 2, gw), sincos_1d(embed_dim // 2, gh)], axis=1)
