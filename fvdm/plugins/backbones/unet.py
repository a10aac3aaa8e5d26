"""A small pseudo-3D U-Net with a per-frame timestep: the CPU backbone for the digits demo and benchmark.

The method only asks of a backbone that every frame is conditioned on its own noise level.
Here each frame runs through 2-D residual blocks (frames folded into the batch), and each
block is modulated by that frame's own timestep (+ class) embedding (FiLM: scale and shift
per channel). Frames exchange information through temporal attention (one token per
frame at every pixel position of a level, optionally causal), placed after the residual
blocks of the lower-resolution levels, as video U-Nets (VDM, Make-A-Video) do; optionally
(``spacetime_levels``) also through attention over every token of the clip at a level, which
lets content move to another place in another frame in one step, and (``temporal_kernel``)
through 3-D convolutions.

Why a U-Net next to Latte: on a 2-core CPU, a transformer over 4x4 patches of 32x32 frames
had not learned to draw digits after the demo's budget; convolutions carry the locality
prior that lets a model of this size learn sharp strokes in a few thousand steps (measured
in the README's digits table). Latte stays the paper's backbone.

Shapes: x (B, F, C, H, W), t_in (B, F) (or (B,) for one level per clip), y (B,) -> (B, F, C_out, H, W).
"""

from __future__ import annotations

import itertools
import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as Fn
from einops import rearrange
from pydantic import Field, model_validator
from torch import nn

from fvdm.plugins.backbones.common import AttentionFn, BackboneMixin, ClassConditionedConfig, sdpa_attention
from fvdm.plugins.backbones.embeddings import LabelEmbedder, TimestepEmbedder


class UNetVideoConfig(ClassConditionedConfig):
    """Pseudo-3D U-Net. ``channel_mult[i]`` scales ``base_channels`` at level i (resolution / 2^i)."""

    #: fields added after unet_video configs were in use, at the value that builds the model they built: left
    #: out of the canonical config there, so earlier runs keep their hash and resume
    added_defaults: ClassVar[dict[str, object]] = {"temporal_kernel": 1, "spacetime_levels": []}

    # BackboneConfig leaves the shape fields None for the build to fill; the U-Net's stand for the digits demo
    # it was made for (one-channel 32x32 frames, 16-frame clips), so UNetVideoConfig() alone builds a model
    in_channels: int = Field(1, ge=1, description="channels per frame (filled by the engine)")
    input_size: int = Field(32, ge=4, description="frame height = width (filled by the engine)")
    num_frames: int = Field(16, ge=1, description="frame capacity (the longest clip a forward accepts)")
    base_channels: int = Field(32, ge=8)
    channel_mult: list[int] = Field(default_factory=lambda: [1, 2, 2], min_length=1)
    num_res_blocks: int = Field(1, ge=1, description="residual blocks per level on the way down (+1 up)")
    temporal_levels: list[int] = Field(
        default_factory=lambda: [1, 2], description="levels with temporal attention after each residual block")
    spatial_attention_mid: bool = Field(True, description="spatial self-attention at the lowest resolution")
    num_heads: int = Field(4, ge=1)
    temporal_attention: Literal["full", "causal"] = "full"
    temporal_positions: Literal["absolute", "rope"] = Field(
        "absolute", description="absolute: sin-cos frame index added before attention (clips <= num_frames); "
                                "rope: rotary, relative offsets only, so a causal model rolls out any length "
                                "and cached keys stay valid")
    temporal_window: int | None = Field(
        None, ge=1, description="causal only: a frame attends to at most this many frames (itself included); "
                                "bounds a cached rollout's memory and time per frame")
    temporal_kernel: int = Field(
        1, ge=1, description="frames the first convolution of every residual block spans (odd; 1 = 2-D, frames "
                             "apart): 3 lets content move between neighbouring frames at every level, as a 3-D "
                             "U-Net does, where attention meets only the same pixel of other frames")
    spacetime_levels: list[int] = Field(
        default_factory=list,
        description="levels with one more attention after each temporal step, over every (frame, row, column) "
                    "token of the clip: content moves to another pixel of another frame in one step, where "
                    "temporal attention meets only the same pixel (8 frames at 8x8: 512 tokens; the level's "
                    "output projection starts at zero, so a model grown from one without it starts as that model)")
    groups: int = Field(8, ge=1, description="GroupNorm groups")
    patch_size: int = Field(2, ge=1, description="space-to-depth factor before the first level: p x p pixels "
                                                 "become p*p channels (4x less work per level at p=2)")

    @model_validator(mode="after")
    def _check(self) -> "UNetVideoConfig":
        down = self.patch_size * 2 ** (len(self.channel_mult) - 1)
        if self.input_size % down:
            raise ValueError(f"input_size={self.input_size} must be divisible by {down} "
                             f"(patch_size * 2^(len(channel_mult)-1)); use fewer levels, another patch_size "
                             f"or another resolution")
        for field in ("temporal_levels", "spacetime_levels"):
            bad = [lv for lv in getattr(self, field) if not 0 <= lv < len(self.channel_mult)]
            if bad:
                raise ValueError(f"{field} {bad} out of range for {len(self.channel_mult)} levels "
                                 f"(0..{len(self.channel_mult) - 1})")
        if self.spacetime_levels and self.temporal_attention == "causal":
            raise ValueError("spacetime_levels attend to every frame, which a causal model must not; use "
                             "spacetime_levels: [] with temporal_attention: causal")
        if self.temporal_kernel % 2 == 0:
            raise ValueError(f"temporal_kernel={self.temporal_kernel} must be odd (centred on the frame: 1, 3, 5)")
        if self.temporal_kernel > 1 and self.temporal_attention == "causal":
            raise ValueError("temporal_kernel > 1 sees the next frames, which a causal model must not; use "
                             "temporal_kernel: 1 with temporal_attention: causal")
        if self.temporal_window is not None and self.temporal_attention != "causal":
            raise ValueError("temporal_window needs temporal_attention: causal (a full-attention frame sees every "
                             "frame); drop temporal_window or set temporal_attention: causal")
        for m in self.channel_mult:
            ch = self.base_channels * m
            if self.temporal_positions == "rope" and (ch // self.num_heads) % 2:
                raise ValueError(f"rope needs an even head size; channels {ch} / num_heads {self.num_heads} is odd")
            if ch % self.groups or ch % self.num_heads:
                raise ValueError(f"channels {ch} must be divisible by groups={self.groups} and "
                                 f"num_heads={self.num_heads}; change base_channels or channel_mult")
        return self

def _zero(module: nn.Module) -> nn.Module:
    """Zero-initialise the last layer of a residual branch: every block starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def frame_positions(num_frames: int, dim: int, device: torch.device) -> torch.Tensor:
    """Fixed sin-cos embedding of frame indices 0..F-1: (F, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=device, dtype=torch.float32) / half)
    args = torch.arange(num_frames, device=device, dtype=torch.float32)[:, None] * freqs  # (F, half)
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)  # (F, dim)


class ResBlock(nn.Module):
    """Residual block on (B*F, C, H, W), FiLM-modulated by each frame's embedding (B*F, E).

    ``frames`` > 1 makes the first convolution 3-D (frames x 3 x 3, zero-padded at the clip's ends), so
    each frame's features mix with its neighbours' at nearby pixels: moving content is carried where
    per-pixel temporal attention only meets the same pixel. Norms and FiLM stay per frame."""

    def __init__(self, cin: int, cout: int, emb: int, groups: int, frames: int = 1):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.frames = frames
        self.conv1 = (nn.Conv2d(cin, cout, 3, padding=1) if frames == 1 else
                      nn.Conv3d(cin, cout, (frames, 3, 3), padding=(frames // 2, 1, 1)))
        self.film = nn.Linear(emb, 2 * cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor, batch: int = 1) -> torch.Tensor:
        h = Fn.silu(self.norm1(x))  # (BF, Ci, H, W)
        if self.frames == 1:
            h = self.conv1(h)  # (BF, Co, H, W)
        else:
            h = rearrange(self.conv1(rearrange(h, "(b f) c h w -> b c f h w", b=batch)), "b c f h w -> (b f) c h w")
        scale, shift = rearrange(self.film(Fn.silu(emb)), "m (two c) -> two m c 1 1", two=2)
        h = self.norm2(h) * (1 + scale) + shift  # the frame's own noise level sets the scale of its features
        return self.skip(x) + self.conv2(Fn.silu(h))


class Attention(nn.Module):
    """Pre-norm multi-head self-attention over the middle axis of (M, L, C) tokens, zero-init output.

    The kernel is the configured ``attention`` (``set_attention_kernel``); ``auto`` on CPU in bf16 runs
    these short sequences (8 frames, 64 pixels) through the plain math kernel, which beats SDPA's
    flash path there (0.87x train-step time measured on the 2-core machine)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = _zero(nn.Linear(dim, dim))
        self.kernel: AttentionFn = sdpa_attention

    def forward(self, x: torch.Tensor, *, causal: bool = False) -> torch.Tensor:
        q, k, v = self.project(x)
        out = self.kernel(q, k, v, mask=None, causal=causal, scale=None)  # (M, L, heads, d)
        return self.output(x, out)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(M, L, C) -> q, k, v, each (M, L, heads, d)."""
        return rearrange(self.qkv(self.norm(x)), "m l (three h d) -> three m l h d", three=3, h=self.num_heads)

    def output(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        return x + self.proj(rearrange(attended, "m l h d -> m l (h d)"))


def rotate(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of (M, L, heads, d) at integer ``positions`` (L,): q.k then depends on offsets only."""
    d = x.shape[-1]
    freqs = torch.exp(-math.log(10000.0) * torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    ang = positions.to(torch.float32)[:, None] * freqs  # (L, d/2)
    cos, sin = (rearrange(f(ang), "l k -> 1 l 1 k").to(x.dtype) for f in (torch.cos, torch.sin))
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return rearrange(torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1), "m l h k two -> m l h (k two)")


class TemporalKVCache:
    """Keys and values of finished frames, per temporal-attention layer: the state of a cached causal rollout.

    ``length`` frames have been committed (the next frame's position). A forward with the cache attends to
    them without recomputing them; a forward with ``commit=True`` appends its frames (called once per
    finished chunk, on its clean values). Only the last ``window - 1`` frames are kept when the model's
    temporal_window bounds attention, so memory and time per frame stay flat however long the video.
    """

    def __init__(self, window: int | None):
        self.window = window
        self.length = 0
        self.kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # layer -> (k, v), each (M, L, heads, d)

    def past(self, layer: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.kv.get(layer)

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        old = self.kv.get(layer)
        if old is not None:
            k, v = torch.cat([old[0], k], dim=1), torch.cat([old[1], v], dim=1)
        if self.window is not None:  # frame n + 1 sees back to n + 2 - window: keep window - 1 frames
            start = max(0, k.shape[1] - (self.window - 1))
            k, v = k[:, start:], v[:, start:]
        self.kv[layer] = (k, v)


class TemporalAttention(nn.Module):
    """Attention across frames at each pixel: (B*F, C, H, W) -> same; the only place frames meet.

    ``absolute`` positions add a sin-cos frame index to the tokens; ``rope`` rotates queries and keys by
    the frame index instead, so scores depend on frame offsets only. A causal ``window`` lets frame i
    see frames i - window + 1 .. i. With a ``TemporalKVCache`` (rope, causal) the frames of x come after
    the cached ones and attend to their stored keys and values.
    """

    def __init__(self, dim: int, num_heads: int, causal: bool, *, rope: bool = False, window: int | None = None,
                 layer: int = 0):
        super().__init__()
        self.attn = Attention(dim, num_heads)
        self.causal, self.rope, self.window, self.layer = causal, rope, window, layer

    def forward(self, x: torch.Tensor, batch: int, cache: TemporalKVCache | None = None,
                commit: bool = False) -> torch.Tensor:
        h, w = x.shape[-2:]
        tokens = rearrange(x, "(b f) c h w -> (b h w) f c", b=batch)  # (B*H*W, F, C)
        if not self.rope:
            pos = frame_positions(tokens.shape[1], tokens.shape[2], x.device).to(tokens.dtype)  # (F, C)
            tokens = self.attn(tokens + pos, causal=self.causal) - pos  # positions guide attention, not the stream
        else:
            tokens = self._rope_attention(tokens, cache, commit)
        return rearrange(tokens, "(b h w) f c -> (b f) c h w", b=batch, h=h, w=w)

    def _rope_attention(self, tokens: torch.Tensor, cache: TemporalKVCache | None, commit: bool) -> torch.Tensor:
        F = tokens.shape[1]
        offset = 0 if cache is None else cache.length
        q, k, v = self.attn.project(tokens)  # (M, F, heads, d)
        pos_q = torch.arange(offset, offset + F, device=tokens.device)
        q, k = rotate(q, pos_q), rotate(k, pos_q)
        past = None if cache is None else cache.past(self.layer)
        if commit:
            cache.append(self.layer, k, v)
        pos_k = pos_q
        if past is not None:
            pk, pv = past
            if pk.shape[0] != k.shape[0]:  # the branches of a guided batch share the one history
                pk, pv = (a.repeat(k.shape[0] // pk.shape[0], 1, 1, 1) for a in (pk, pv))
            k, v = torch.cat([pk, k], dim=1), torch.cat([pv, v], dim=1)
            pos_k = torch.arange(offset - pk.shape[1], offset + F, device=tokens.device)
        mask = None
        if self.causal:
            delta = pos_q[:, None] - pos_k[None, :]  # (F, L): how far back each key lies
            keep = delta >= 0
            if self.window is not None:
                keep = keep & (delta < self.window)
            mask = None if bool(keep.all()) else keep
        out = self.attn.kernel(q, k, v, mask=mask, causal=False, scale=None)  # (M, F, heads, d)
        return self.attn.output(tokens, out)


def spacetime_positions(frames: int, height: int, width: int, dim: int, device: torch.device) -> torch.Tensor:
    """Fixed sin-cos embedding of every (frame, row, column): (F*H*W, dim), half the channels for the frame
    index and a quarter for each spatial axis, so a token's place in the clip is readable from its features."""
    fd, sd = dim - 2 * (dim // 4), dim // 4
    f, h, w = (frame_positions(n, d, device) for n, d in ((frames, fd), (height, sd), (width, sd)))
    grid = torch.cat([rearrange(f, "f d -> f 1 1 d").expand(-1, height, width, -1),
                      rearrange(h, "h d -> 1 h 1 d").expand(frames, -1, width, -1),
                      rearrange(w, "w d -> 1 1 w d").expand(frames, height, -1, -1)], dim=-1)  # (F, H, W, dim)
    return rearrange(grid, "f h w d -> (f h w) d")


class SpaceTimeAttention(nn.Module):
    """Attention over every token of a clip at one level: (B*F, C, H, W) -> same.

    Per-pixel temporal attention can only move content between frames at the same place; a digit that
    moves 1-2.5 px per frame sits at another 8x8 token within a few frames, so carrying its shape
    forward needs a path from one pixel of one frame to another pixel of another. Here every token of
    every frame sees every other (the positions say where and when), as a video transformer's full
    attention does; at the 8x8 and 4x4 levels of 8 frames that is 512 and 128 tokens.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.attn = Attention(dim, num_heads)

    def forward(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        frames, (h, w) = x.shape[0] // batch, x.shape[-2:]
        tokens = rearrange(x, "(b f) c h w -> b (f h w) c", b=batch)  # (B, F*H*W, C)
        pos = spacetime_positions(frames, h, w, tokens.shape[-1], x.device).to(tokens.dtype)  # (F*H*W, C)
        q, k, v = self.attn.project(tokens + pos)  # positions guide attention, not the stream: (B, N, heads, d)
        tokens = self.attn.output(tokens, self.attn.kernel(q, k, v, mask=None, causal=False, scale=None))
        return rearrange(tokens, "b (f h w) c -> (b f) c h w", f=frames, h=h, w=w)


class SpatialAttention(nn.Module):
    """Attention across the pixels of one frame: (B*F, C, H, W) -> same."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.attn = Attention(dim, num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        out = self.attn(rearrange(x, "m c h w -> m (h w) c"))  # (BF, H*W, C)
        return rearrange(out, "m (h w) c -> m c h w", h=h, w=w)


class UNetVideo(BackboneMixin, nn.Module):
    """Pseudo-3D U-Net with per-frame timestep (and class) conditioning; see the module docstring."""

    Config = UNetVideoConfig

    def __init__(self, cfg: UNetVideoConfig):
        super().__init__()
        self.cfg = cfg
        self.in_channels = cfg.in_channels
        self.out_channels = 2 * cfg.in_channels if cfg.learn_sigma else cfg.in_channels
        self.num_frames = cfg.num_frames
        self.input_size = cfg.input_size
        self.num_classes = cfg.num_classes
        causal = cfg.temporal_attention == "causal"
        self.causal_time = causal
        chans = [cfg.base_channels * m for m in cfg.channel_mult]
        emb = 4 * cfg.base_channels
        self.t_embedder = TimestepEmbedder(emb)
        self.y_embedder = LabelEmbedder(cfg.num_classes, emb, cfg.class_dropout) if cfg.num_classes > 0 else None
        p = cfg.patch_size
        self.conv_in = nn.Conv2d(cfg.in_channels * p * p, chans[0], 3, padding=1)

        rope, window = cfg.temporal_positions == "rope", cfg.temporal_window
        layers = itertools.count()  # each temporal layer's index: its slot in a TemporalKVCache

        def attention(ch: int) -> TemporalAttention:
            return TemporalAttention(ch, cfg.num_heads, causal, rope=rope, window=window, layer=next(layers))

        def temporal(level: int, ch: int) -> nn.Module:
            return attention(ch) if level in cfg.temporal_levels else nn.Identity()

        def spacetime(level: int, ch: int) -> nn.Module:  # a third entry, so the keys of models without it stay
            return SpaceTimeAttention(ch, cfg.num_heads) if level in cfg.spacetime_levels else nn.Identity()

        def block(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, emb, cfg.groups, cfg.temporal_kernel)

        # Encoder: per level num_res_blocks (ResBlock, temporal) pairs, then a strided conv down.
        self.down = nn.ModuleList()
        skips = [chans[0]]
        cur = chans[0]
        for lv, ch in enumerate(chans):
            for _ in range(cfg.num_res_blocks):
                self.down.append(nn.ModuleList([block(cur, ch), temporal(lv, ch), spacetime(lv, ch)]))
                cur = ch
                skips.append(cur)
            if lv < len(chans) - 1:
                self.down.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
                skips.append(cur)
        self.mid1 = block(cur, cur)
        self.mid_spatial = SpatialAttention(cur, cfg.num_heads) if cfg.spatial_attention_mid else nn.Identity()
        self.mid_temporal = attention(cur)
        self.mid_spacetime = spacetime(len(chans) - 1, cur)
        self.mid2 = block(cur, cur)
        # Decoder: per level num_res_blocks + 1 blocks, each eating one skip; nearest upsample + conv up.
        self.up = nn.ModuleList()
        for lv in reversed(range(len(chans))):
            ch = chans[lv]
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(nn.ModuleList([block(cur + skips.pop(), ch), temporal(lv, ch), spacetime(lv, ch)]))
                cur = ch
            if lv > 0:
                self.up.append(nn.Conv2d(cur, cur, 3, padding=1))
        self.norm_out = nn.GroupNorm(cfg.groups, cur)
        self.conv_out = _zero(nn.Conv2d(cur, self.out_channels * p * p, 3, padding=1))  # output exactly 0 at init

    # -- cached causal rollout ------------------------------------------------------------------
    @property
    def max_frames(self) -> int | None:
        """Longest clip a forward takes: any with causal rope attention (offsets only), else num_frames."""
        return None if self.causal_time and self.cfg.temporal_positions == "rope" else self.num_frames

    def new_kv_cache(self) -> TemporalKVCache:
        """An empty key/value cache for a causal rollout (``forward(..., kv_cache=, commit=)``)."""
        self._check_cacheable()
        return TemporalKVCache(self.cfg.temporal_window)

    def _check_cacheable(self) -> None:
        if self.cfg.temporal_kernel > 1:
            raise ValueError(f"a key/value cache needs temporal_kernel: 1 (this model's {self.cfg.temporal_kernel}-frame "
                             "convolutions read frames the cache does not hold); drop --cache")
        if self.max_frames is not None:
            raise ValueError(
                "a key/value cache needs causal temporal attention with relative positions (backbone "
                f"temporal_attention: causal, temporal_positions: rope); this one has {self.cfg.temporal_attention} "
                f"attention with {self.cfg.temporal_positions} positions: train such a model, or drop --cache")

    def growth_modules(self) -> dict[str, list[str]]:
        """Space-time attention modules -> their state-dict keys: weights made without ``spacetime_levels`` load
        into this model with these at their initial values (zero output projection: the base's function)."""
        return {name: [f"{name}.{k}" for k in m.state_dict()] for name, m in self.named_modules()
                if isinstance(m, SpaceTimeAttention)}

    # -- inputs ---------------------------------------------------------------------------------
    def conditioning(self, t_in: torch.Tensor, y: torch.Tensor | None, frames: int,
                     force_drop: torch.Tensor | None = None) -> torch.Tensor:
        """One embedding per frame: (B*F, E)."""
        t_in = t_in if t_in.ndim == 2 else t_in[:, None].expand(-1, frames)  # (B, F)
        c = self.t_embedder(t_in)  # (B, F, E)
        if self.y_embedder is not None:
            c = c + self.y_embedder(y, train=self.training, force_drop=force_drop)[:, None]
        return rearrange(c, "b f e -> (b f) e")

    # -- forward --------------------------------------------------------------------------------
    @staticmethod
    def _level(layer: nn.ModuleList, h: torch.Tensor, emb: torch.Tensor, batch: int,
               kv_cache: TemporalKVCache | None, commit: bool) -> torch.Tensor:
        """One (residual block, temporal attention, space-time attention) step; absent ones are Identity."""
        res, tmp, st = layer
        h = res(h, emb, batch)
        h = tmp(h, batch, kv_cache, commit) if isinstance(tmp, TemporalAttention) else h
        return st(h, batch) if isinstance(st, SpaceTimeAttention) else h

    def forward(self, x: torch.Tensor, t_in: torch.Tensor, y: torch.Tensor | None = None, *,
                force_drop: torch.Tensor | None = None, kv_cache: TemporalKVCache | None = None,
                commit: bool = False) -> torch.Tensor:
        """x (B, F, C, H, W), t_in (B, F) or (B,), y (B,) or None -> (B, F, C_out, H, W).

        With ``kv_cache`` the F frames follow the cache's frames (positions length .. length + F - 1) and
        attend to them; ``commit`` then appends these frames' keys and values (their values are final).
        """
        self._check_inputs(x, t_in, y)
        if commit and kv_cache is None:
            raise ValueError("commit=True needs a kv_cache (model.new_kv_cache()) to append to")
        if kv_cache is not None:
            self._check_cacheable()
        B, F = x.shape[:2]
        emb = self.conditioning(t_in, y, F, force_drop)  # (B*F, E)
        p = self.cfg.patch_size
        h = self.conv_in(rearrange(x, "b f c (h p) (w q) -> (b f) (c p q) h w", p=p, q=p))  # (B*F, C0, H/p, W/p)
        skips = [h]
        for layer in self.down:
            if isinstance(layer, nn.ModuleList):
                h = self._level(layer, h, emb, B, kv_cache, commit)
            else:
                h = layer(h)  # stride-2 conv: (B*F, C, H/2, W/2)
            skips.append(h)
        h = self.mid1(h, emb, B)
        h = self.mid_spatial(h)
        h = self.mid_temporal(h, B, kv_cache, commit)
        h = self.mid_spacetime(h, B) if isinstance(self.mid_spacetime, SpaceTimeAttention) else h
        h = self.mid2(h, emb, B)
        for layer in self.up:
            if isinstance(layer, nn.ModuleList):
                h = self._level(layer, torch.cat([h, skips.pop()], dim=1), emb, B, kv_cache, commit)
            else:
                h = layer(Fn.interpolate(h, scale_factor=2.0, mode="nearest"))  # (B*F, C, 2H, 2W)
        out = self.conv_out(Fn.silu(self.norm_out(h)))  # (B*F, C_out*p*p, H/p, W/p)
        if commit:
            kv_cache.length += F
        return rearrange(out, "(b f) (c p q) h w -> b f c (h p) (w q)", b=B, p=p, q=p)
