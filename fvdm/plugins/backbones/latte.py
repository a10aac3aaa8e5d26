"""Latte (spatial/temporal DiT) with FVDM's vectorized timestep: every frame has its own t.

Tokens live as ``x: (B, F, N, D)`` (N = patches per frame). Spatial blocks attend over N within a
frame, temporal blocks over F at one patch position. The conditioning ``c`` is (B, F, D) (one
timestep+class embedding per frame) or (B, 1, D) for a scalar timestep; each block computes its
adaLN modulation from ``c`` ONCE, (B, F, 6D), and broadcasts it over the N positions. This is
exactly what FVDM's public code computes with a Linear on every (position, frame) row (kept as
``temporal_modulation: per_token`` for the overhead ablation), at the scalar model's cost.

Parameter names follow Latte; ``latte_import.py`` maps Latte / FVDM checkpoints onto them.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
import torch
from einops import rearrange
from pydantic import Field, create_model, model_validator
from torch import nn
from torch.utils.checkpoint import checkpoint

from fvdm.plugins.backbones.common import AttentionFn, BackboneMixin, ClassConditionedConfig, sdpa_attention
from fvdm.plugins.backbones.embeddings import LabelEmbedder, PatchEmbed, TimestepEmbedder, sincos_1d, sincos_2d

class LatteConfig(ClassConditionedConfig):
    """Latte/FVDM backbone. ``depth`` counts blocks as Latte does: depth/2 spatial+temporal pairs."""

    # BackboneConfig leaves the shape fields None for the build to fill; Latte's stand for Latte's own setting
    # (SD-VAE latents of 256-pixel, 16-frame clips), so LatteConfig() alone builds a model (tests, imports)
    in_channels: int = Field(4, ge=1, description="channels per frame (filled by the engine)")
    input_size: int = Field(32, ge=1, description="latent height = width (filled by the engine)")
    num_frames: int = Field(16, ge=1, description="frame capacity of the temporal position embedding")
    # True where the base says False: Latte, like DiT, learns its variance (the hybrid loss of its checkpoints)
    learn_sigma: bool = Field(True, description="output 2C channels (DiT/Latte hybrid loss)")
    patch_size: int = Field(2, ge=1)
    hidden_size: int = Field(384, ge=4)
    depth: int = Field(12, ge=2, description="number of blocks (spatial, temporal alternate), even")
    num_heads: int = Field(6, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)
    temporal_attention: Literal["full", "causal"] = "full"
    temporal_modulation: Literal["once", "per_token"] = Field(
        "once", description="once: adaLN per frame, broadcast over positions; per_token: public-code ablation"
    )
    gradient_checkpointing: bool = False

    @model_validator(mode="after")
    def _check(self) -> "LatteConfig":
        if self.depth % 2:
            raise ValueError(f"depth={self.depth} must be even (spatial and temporal blocks alternate)")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}")
        if self.hidden_size % 4:
            raise ValueError(f"hidden_size={self.hidden_size} must be divisible by 4 (2-D sin-cos positions)")
        if self.input_size % self.patch_size:
            raise ValueError(f"input_size={self.input_size} must be divisible by patch_size={self.patch_size}")
        return self


#: Latte sizes, one row each (as DiT's ``DiT_models``): name -> (hidden_size, depth, num_heads, what for).
#: depth counts blocks as Latte does (spatial and temporal alternate); patch size 2 throughout.
LATTE_SIZES: dict[str, tuple[int, int, int, str]] = {
    "latte_tiny": (64, 4, 4, "tests and the CPU demo"),
    "latte_s_2": (384, 12, 6, "Latte-S/2"),
    "latte_b_2": (768, 12, 12, "Latte-B/2"),
    "latte_l_2": (1024, 24, 16, "Latte-L/2"),
    "latte_xl_2": (1152, 28, 16, "Latte-XL/2"),
}


@functools.cache
def size_config(name: str) -> type[LatteConfig]:
    """The Config of Latte size ``name``: LatteConfig with that row's defaults (registered per size)."""
    if name not in LATTE_SIZES:
        raise KeyError(f"unknown Latte size {name!r}; choose one of {', '.join(LATTE_SIZES)}")
    d, depth, heads, _ = LATTE_SIZES[name]
    return create_model(f"LatteConfig_{name}", __base__=LatteConfig, __doc__=f"Latte backbone, size {name}.",
                        hidden_size=(int, Field(d, ge=4)), depth=(int, Field(depth, ge=2)),
                        num_heads=(int, Field(heads, ge=1)))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class Attention(nn.Module):
    """Multi-head self-attention over the second-to-last axis of (B, S, L, D) tokens (batch B*S)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)
        self.kernel: AttentionFn = sdpa_attention

    def forward(self, x: torch.Tensor, *, causal: bool = False) -> torch.Tensor:
        s = x.shape[1]
        # Latte's qkv layout: output channels are (3, heads, head_dim).
        q, k, v = rearrange(self.qkv(x), "b s l (three h e) -> three (b s) l h e", three=3, h=self.num_heads)
        out = self.kernel(q, k, v, mask=None, causal=causal, scale=None)  # (B*S, L, H, E)
        return self.proj(rearrange(out, "(b s) l h e -> b s l (h e)", s=s))


class Mlp(nn.Module):
    """timm-style MLP (fc1 -> tanh-GELU -> fc2), names match Latte checkpoints."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LatteBlock(nn.Module):
    """adaLN-Zero transformer block on (B, S, L, D): attention over L, modulation broadcast over S or L."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim, bias=True))

    def forward(self, x: torch.Tensor, mod: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """x (B, S, L, D); mod = adaLN_modulation(c), broadcastable to (B, S, L, 6D)."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=-1)
        x = x + gate_msa * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), causal=causal)
        x = x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    """Per-frame adaLN + linear to patch pixels."""

    def __init__(self, dim: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim, bias=True))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).unsqueeze(2).chunk(2, dim=-1)  # (B, F|1, 1, D) each
        return self.linear(modulate(self.norm_final(x), shift, scale))


class Latte(BackboneMixin, nn.Module):
    """FVDM Latte: ``model(x (B,F,C,H,W), t_in (B,F) | (B,), y (B,) | None) -> (B,F,C_out,H,W)``.

    ``t_in`` is the schedule's ``timestep_input(t)`` (e.g. DDPM steps as floats). A (B,) ``t_in``
    runs the classic Latte path: one embedding per sample, broadcast over frames.
    """

    Config = LatteConfig

    def __init__(self, cfg: LatteConfig):
        super().__init__()
        self.config = cfg
        D = cfg.hidden_size
        self.in_channels = cfg.in_channels
        self.out_channels = cfg.in_channels * 2 if cfg.learn_sigma else cfg.in_channels
        self.num_frames = cfg.num_frames
        self.input_size = cfg.input_size
        self.num_classes = cfg.num_classes
        self.learn_sigma = cfg.learn_sigma
        self.patch_size = cfg.patch_size
        self.causal_time = cfg.temporal_attention == "causal"
        self.per_token = cfg.temporal_modulation == "per_token"
        self.gradient_checkpointing = cfg.gradient_checkpointing
        grid = cfg.input_size // cfg.patch_size

        self.x_embedder = PatchEmbed(cfg.in_channels, D, cfg.patch_size)
        self.t_embedder = TimestepEmbedder(D)
        self.y_embedder = LabelEmbedder(cfg.num_classes, D, cfg.class_dropout) if cfg.num_classes > 0 else None
        # Fixed sin-cos tables; persistent buffers so Latte checkpoints' pos_embed/temp_embed keys line up.
        self.register_buffer("pos_embed", torch.from_numpy(sincos_2d(D, grid)).float()[None])  # (1, N, D)
        temp = sincos_1d(D, np.arange(cfg.num_frames))
        self.register_buffer("temp_embed", torch.from_numpy(temp).float()[None])  # (1, F_max, D)
        n_pairs = cfg.depth // 2
        self.spatial_blocks = nn.ModuleList(LatteBlock(D, cfg.num_heads, cfg.mlp_ratio) for _ in range(n_pairs))
        self.temporal_blocks = nn.ModuleList(LatteBlock(D, cfg.num_heads, cfg.mlp_ratio) for _ in range(n_pairs))
        self.final_layer = FinalLayer(D, cfg.patch_size, self.out_channels)
        self.initialize_weights()

    # -- init -------------------------------------------------------------------------------------
    def initialize_weights(self) -> None:
        """Latte/DiT init: xavier linears, zero adaLN and output layer, so the output is exactly 0."""

        def _basic(m: nn.Module) -> None:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

        self.apply(_basic)
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in [*self.spatial_blocks, *self.temporal_blocks]:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for lin in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    # -- forward ----------------------------------------------------------------------------------
    def conditioning(self, t_in: torch.Tensor, y: torch.Tensor | None = None, force_drop: torch.Tensor | None = None):
        """Per-frame conditioning c: (B, F, D) from t_in (B, F), or (B, 1, D) from a scalar t_in (B,)."""
        c = self.t_embedder(t_in if t_in.ndim == 2 else t_in[:, None])  # (B, F|1, D)
        if self.y_embedder is not None:
            c = c + self.y_embedder(y, train=self.training, force_drop=force_drop)[:, None]
        return c

    def _temporal_mod(self, block: LatteBlock, c: torch.Tensor, n: int) -> torch.Tensor:
        if self.per_token:
            # Ablation (FVDM public code): the Linear runs on every (position, frame) row.
            return block.adaLN_modulation(c[:, None].expand(-1, n, -1, -1))  # (B, N, F, 6D)
        return block.adaLN_modulation(c).unsqueeze(1)  # (B, 1, F|1, 6D), broadcast over positions

    def _run(self, block: LatteBlock, x: torch.Tensor, mod: torch.Tensor, causal: bool) -> torch.Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, x, mod, causal, use_reentrant=False)
        return block(x, mod, causal)

    def forward(
        self, x: torch.Tensor, t_in: torch.Tensor, y: torch.Tensor | None = None, *,
        force_drop: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, F, C, H, W), t_in (B, F) or (B,), y (B,) int or None -> (B, F, C_out, H, W).

        ``force_drop`` (B,) bool replaces y by the null class (unconditional branch of CFG).
        """
        self._check_inputs(x, t_in, y)
        B, F = x.shape[:2]
        p, g = self.patch_size, self.input_size // self.patch_size
        tokens = self.x_embedder(rearrange(x, "b f c h w -> (b f) c h w")) + self.pos_embed  # (B*F, N, D)
        h = rearrange(tokens, "(b f) n d -> b f n d", b=B)  # (B, F, N, D)
        c = self.conditioning(t_in, y, force_drop)  # (B, F|1, D)
        n = h.shape[2]
        for i, (sblock, tblock) in enumerate(zip(self.spatial_blocks, self.temporal_blocks)):
            smod = sblock.adaLN_modulation(c).unsqueeze(2)  # (B, F|1, 1, 6D): one modulation per frame
            h = self._run(sblock, h, smod, False)  # attention over N inside each frame
            h = rearrange(h, "b f n d -> b n f d")
            if i == 0:  # Latte adds the temporal position embedding once, after the first spatial block
                h = h + self.temp_embed[:, None, :F]
            h = self._run(tblock, h, self._temporal_mod(tblock, c, n), self.causal_time)  # attention over F
            h = rearrange(h, "b n f d -> b f n d")
        out = self.final_layer(h, c)  # (B, F, N, p*p*C_out)
        return rearrange(out, "b f (gh gw) (p q c) -> b f c (gh p) (gw q)", gh=g, p=p, q=p)


def build_latte(name_or_cfg: "str | LatteConfig" = "latte_tiny", **overrides) -> Latte:
    """Convenience constructor outside the registry: ``build_latte("latte_s_2", in_channels=4)``."""
    if isinstance(name_or_cfg, LatteConfig):  # overrides re-validated with the given Config's own class
        return Latte(type(name_or_cfg).model_validate({**name_or_cfg.model_dump(), **overrides}))
    return Latte(size_config(name_or_cfg)(**overrides))
