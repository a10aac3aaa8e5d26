"""Offline builders of tiny random video VAEs written as diffusers directories (no download, a second each)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch


def make_wan_vae_dir(root: Path, *, z_dim: int = 4, seed: int = 0,
                     layout: Literal["wan2.1", "wan2.2"] = "wan2.1") -> Path:
    """A narrow random ``AutoencoderKLWan`` saved as ``root/"vae"/{config.json, diffusion_pytorch_model.safetensors}``.

    ``layout`` picks what distinguishes the public VAEs (wan2.1: plain blocks, 8x spatial; wan2.2:
    residual blocks after a 2x2 patchify, 16x spatial); widths stay small so CPU tests are fast. The
    per-channel ``latents_mean`` / ``latents_std`` are random and far from 0 / 1 so that the
    normalization is exercised. Built under a forked RNG (the caller's stream is untouched); returns root.
    """
    from diffusers import AutoencoderKLWan

    residual = layout == "wan2.2"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        stats = dict(latents_mean=(torch.randn(z_dim) * 0.5).tolist(), latents_std=(0.5 + torch.rand(z_dim)).tolist())
        vae = AutoencoderKLWan(
            base_dim=8, z_dim=z_dim, dim_mult=[1, 2, 4, 4], num_res_blocks=1, attn_scales=[],
            temperal_downsample=[False, True, True], is_residual=residual,
            in_channels=12 if residual else 3, out_channels=12 if residual else 3, patch_size=2 if residual else None,
            scale_factor_spatial=16 if residual else 8, **stats)
    vae.save_pretrained(Path(root) / "vae")
    return Path(root)
