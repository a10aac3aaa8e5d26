"""Stable Diffusion VAE (diffusers ``AutoencoderKL``) applied frame by frame.

Weights are never downloaded: ``pretrained_path`` must be a local diffusers directory
(``config.json`` + weights), e.g. a downloaded copy of ``stabilityai/sd-vae-ft-ema`` or
``stabilityai/sd-vae-ft-mse`` (what Latte and FVDM use). Latents are scaled by 0.18215.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from einops import rearrange
from pydantic import Field
from torch import nn

from fvdm.core.interfaces import PluginConfig
from fvdm.core.tensor import check_video

HUB_COPIES = "stabilityai/sd-vae-ft-ema or stabilityai/sd-vae-ft-mse"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def diffusers_available(**_ctx) -> tuple[bool, str]:
    try:
        import diffusers  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return False, f"diffusers is not importable ({type(exc).__name__}: {exc})"
    return True, ""


class SDVAE(nn.Module):
    """Frozen SD VAE: encode (B, F, 3, H, W) in [-1, 1] -> (B, F, 4, H/8, W/8) * scaling_factor; decode back."""

    class Config(PluginConfig):
        pretrained_path: str | None = Field(None, description="local diffusers AutoencoderKL directory")
        subfolder: str | None = Field(None, description="e.g. 'vae' inside a full Stable Diffusion pipeline dir")
        scaling_factor: float | None = Field(0.18215, gt=0, description="None = the VAE config's scaling_factor")
        chunk_size: int = Field(16, ge=1, description="frames per encode/decode call (memory bound)")
        sample_posterior: bool = Field(False, description="encode to a posterior sample instead of its mean")
        dtype: Literal["float32", "float16", "bfloat16"] = "float32"

    def __init__(self, cfg: "SDVAE.Config"):
        super().__init__()
        self.cfg = cfg
        from diffusers import AutoencoderKL

        if cfg.pretrained_path is None or not Path(cfg.pretrained_path).expanduser().is_dir():
            where = "no pretrained_path was given" if cfg.pretrained_path is None else (
                f"pretrained_path {cfg.pretrained_path!r} is not a directory"
            )
            raise FileNotFoundError(
                f"sd_vae: {where}. fvdm never downloads weights: download a diffusers AutoencoderKL yourself "
                f"(public copies: {HUB_COPIES} on the Hugging Face hub, e.g. "
                "`huggingface-cli download stabilityai/sd-vae-ft-ema --local-dir vae/sd-vae-ft-ema`) "
                "and set autoencoder.pretrained_path to that directory."
            )
        path = str(Path(cfg.pretrained_path).expanduser())
        kwargs = {"subfolder": cfg.subfolder} if cfg.subfolder else {}
        try:
            vae = AutoencoderKL.from_pretrained(path, local_files_only=True, torch_dtype=_DTYPES[cfg.dtype], **kwargs)
        except (OSError, EnvironmentError) as exc:
            raise FileNotFoundError(
                f"sd_vae: could not load an AutoencoderKL from {path!r}"
                f"{' subfolder ' + repr(cfg.subfolder) if cfg.subfolder else ''} ({exc}). Expected a diffusers "
                f"directory with config.json and weights (a local copy of {HUB_COPIES})."
            ) from exc
        vae.requires_grad_(False).eval()
        self.vae = vae
        self.latent_channels = int(vae.config.latent_channels)
        self.downsample = 2 ** (len(vae.config.block_out_channels) - 1)
        sf = cfg.scaling_factor if cfg.scaling_factor is not None else getattr(vae.config, "scaling_factor", None)
        if sf is None:
            raise ValueError("sd_vae: scaling_factor=None but the VAE config has none; set scaling_factor")
        self.scaling_factor = float(sf)
        self.in_channels = int(vae.config.in_channels)

    def train(self, mode: bool = True) -> "SDVAE":  # frozen: stays in eval mode inside a training model
        super().train(False)
        return self

    def latent_shape(self, channels: int, resolution: int) -> tuple[int, int]:
        if resolution % self.downsample:
            raise ValueError(f"resolution {resolution} is not divisible by the VAE downsample {self.downsample}")
        return self.latent_channels, resolution // self.downsample

    def _chunks(self, flat: torch.Tensor):
        return flat.split(self.cfg.chunk_size, dim=0)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, F, C, H, W) in [-1, 1] -> (B, F, c, H/d, W/d) scaled latents (posterior mean by default)."""
        check_video(x, "x", channels=self.in_channels)
        B = x.shape[0]
        dtype = self.vae.dtype
        outs = []
        for chunk in self._chunks(rearrange(x, "b f c h w -> (b f) c h w")):
            dist = self.vae.encode(chunk.to(dtype)).latent_dist
            z = dist.sample(generator=generator) if self.cfg.sample_posterior else dist.mean
            outs.append(z)
        z = torch.cat(outs).to(x.dtype) * self.scaling_factor
        return rearrange(z, "(b f) c h w -> b f c h w", b=B)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, F, c, h, w) scaled latents -> (B, F, C, h*d, w*d) frames in about [-1, 1]."""
        check_video(z, "z", channels=self.latent_channels)
        B = z.shape[0]
        dtype = self.vae.dtype
        flat = rearrange(z, "b f c h w -> (b f) c h w") / self.scaling_factor
        x = torch.cat([self.vae.decode(chunk.to(dtype)).sample for chunk in self._chunks(flat)])
        return rearrange(x.to(z.dtype), "(b f) c h w -> b f c h w", b=B)
