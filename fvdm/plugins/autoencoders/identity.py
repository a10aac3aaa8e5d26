"""Pixel-space "autoencoder": latents are the frames themselves (downsample 1)."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from fvdm.core.interfaces import PluginConfig
from fvdm.core.tensor import check_video


class IdentityAutoencoder(nn.Module):
    """Latent = pixels: (B, F, C, H, W) -> the same tensor; ``latent_channels`` = data channels."""

    class Config(PluginConfig):
        channels: int | None = Field(None, ge=1, description="data channels; None = whatever the data has")

    downsample = 1
    scaling_factor = 1.0

    def __init__(self, cfg: "IdentityAutoencoder.Config"):
        super().__init__()
        self.cfg = cfg
        self.latent_channels = self.cfg.channels  # None until known; see latent_shape

    def latent_shape(self, channels: int, resolution: int) -> tuple[int, int]:
        """(latent channels, latent size) for data with ``channels`` x ``resolution``^2 frames."""
        return channels, resolution

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_video(x, "x", channels=self.cfg.channels)
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        check_video(z, "z", channels=self.cfg.channels)
        return z
