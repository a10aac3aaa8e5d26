"""Wan video VAE (diffusers ``AutoencoderKLWan``): causal 4x temporal, 8x (Wan2.1) or 16x (Wan2.2) spatial.

Why a separate plugin from ``sd_vae``: the Wan VAE compresses time as well as space, causally.
Pixel frame 0 is encoded alone as latent 0 and each later latent from the next 4 pixel frames, so
1 + 4k pixel frames become 1 + k latents (``temporal_downsample = 4``, ``causal = True``;
``fvdm.core.temporal`` maps frame counts and given frames from these two attributes). That first
latent depending on the first frame only is what makes image-to-video work on its latents.

Latents are the posterior's mode (deterministic, as diffusers' image-to-video pipeline encodes its
condition with ``sample_mode="argmax"``), normalized per channel as ``(mu - latents_mean) / latents_std``
with the statistics of the directory's ``config.json``: the inverse of what ``WanPipeline`` does to
its latents before ``vae.decode``. Variants:

  wan2.1  z_dim 16, 8x spatial, 4x temporal: Wan2.1 T2V/I2V (also Wan2.2 A14B), the ``vae``
          subfolder of Wan-AI/Wan2.1-T2V-1.3B-Diffusers;
  wan2.2  z_dim 48, 16x spatial (2x2 patchify, then 8x), 4x temporal, residual up/down blocks:
          Wan2.2-TI2V-5B's VAE, the ``vae`` subfolder of Wan-AI/Wan2.2-TI2V-5B-Diffusers;
  tiny    Wan2.1's structure (8x, 4x, causal) at width 8 with z_dim 4 and random weights and
          latent statistics, built from ``seed`` without a directory: tests and CPU benchmarks.

Weights are never downloaded (``local_files_only=True``); ``path`` is a local diffusers directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from einops import rearrange
from pydantic import Field, ValidationInfo, field_validator
from torch import nn

from fvdm.core.interfaces import PluginConfig
from fvdm.core.temporal import latent_frame_count
from fvdm.core.tensor import check_video

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_CLASS = "AutoencoderKLWan"
_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json",
            "diffusion_pytorch_model.bin")

#: What tells the variants' latent spaces apart; widths (base_dim, dim_mult) are free so small test copies load.
VARIANTS: dict[str, dict[str, Any]] = {
    "wan2.1": dict(repo="Wan-AI/Wan2.1-T2V-1.3B-Diffusers", z_dim=16, spatial=8, is_residual=False, patch_size=None),
    "wan2.2": dict(repo="Wan-AI/Wan2.2-TI2V-5B-Diffusers", z_dim=48, spatial=16, is_residual=True, patch_size=2),
}

#: The ``tiny`` variant: Wan2.1's layout (3 downsamples, the last two also in time) at width 8, one res block
#: per level, 4 latent channels (its latents_mean / latents_std are drawn with the weights)
TINY_CONFIG: dict[str, Any] = dict(base_dim=8, z_dim=4, dim_mult=[1, 2, 4, 4], num_res_blocks=1, attn_scales=[],
                                   temperal_downsample=[False, True, True])


def _download_hint(variant: str) -> str:
    return (f"`huggingface-cli download {VARIANTS[variant]['repo']} --local-dir DIR` and set autoencoder.path "
            "to DIR (subfolder vae)")


class WanVAE(nn.Module):
    """Frozen Wan VAE: encode (B, 1+4k, 3, H, W) in [-1, 1] -> (B, 1+k, z_dim, H/d, W/d) normalized latents."""

    class Config(PluginConfig):
        # variant comes first: the path check below reads it
        variant: Literal["wan2.1", "wan2.2", "tiny"] = Field(
            "wan2.1", description="wan2.1: 16 ch, 8x; wan2.2 (TI2V-5B): 48 ch, 16x; tiny: random, no path")
        path: str | None = Field(None, validate_default=True,
                                 description="local diffusers directory (e.g. a downloaded "
                                             "Wan-AI/Wan2.1-T2V-1.3B-Diffusers); never downloaded")
        subfolder: str = Field("vae", description="subfolder of path holding config.json and the weights")
        seed: int = Field(0, description="tiny only: seed of its random weights")
        chunk: int = Field(1, ge=1, description="clips per encode/decode call (memory bound)")
        dtype: Literal["float32", "bfloat16"] = "float32"

        @field_validator("path")
        @classmethod
        def _path_fits_variant(cls, path: str | None, info: ValidationInfo) -> str | None:
            variant = info.data.get("variant")
            if variant == "tiny" and path is not None:
                raise ValueError(f"wan_vae variant tiny builds random weights and takes no path (got {path!r}); "
                                 "set variant to wan2.1 or wan2.2 to load that directory")
            if variant in VARIANTS and path is None:
                raise ValueError(f"wan_vae variant {variant} needs path, a local diffusers directory; fvdm never "
                                 f"downloads weights: {_download_hint(variant)}")
            return path

    temporal_downsample = 4
    causal = True

    def __init__(self, cfg: "WanVAE.Config"):
        super().__init__()
        self.cfg = cfg
        from diffusers import AutoencoderKLWan

        if cfg.variant == "tiny":
            with torch.random.fork_rng(devices=[]):  # the caller's RNG stream is left where it was
                torch.manual_seed(cfg.seed)
                z_dim = TINY_CONFIG["z_dim"]
                stats = dict(latents_mean=(torch.randn(z_dim) * 0.5).tolist(),
                             latents_std=(0.5 + torch.rand(z_dim)).tolist())
                vae = AutoencoderKLWan(**TINY_CONFIG, **stats)
            if cfg.dtype != "float32":
                vae = vae.to(_DTYPES[cfg.dtype])
        else:
            vae = self._load(AutoencoderKLWan, cfg)
        vae.requires_grad_(False).eval()
        self.vae = vae
        c = vae.config
        patch = c.patch_size or 1
        self.latent_channels = int(c.z_dim)
        # 2 per downsampling level, times the patchify in front (Wan2.2)
        self.downsample = 2 ** (len(c.dim_mult) - 1) * patch
        temporal = 2 ** sum(bool(d) for d in c.temperal_downsample)
        pixel_channels = c.in_channels // (patch * patch)
        if cfg.variant != "tiny":
            self._check_variant(cfg, temporal, pixel_channels)
        # (1, 1, z, 1, 1): broadcast over (B, f, z, h, w)
        self.register_buffer("latents_mean", torch.tensor(c.latents_mean, dtype=torch.float32).view(1, 1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("latents_std", torch.tensor(c.latents_std, dtype=torch.float32).view(1, 1, -1, 1, 1),
                             persistent=False)

    # -- loading -------------------------------------------------------------------------------------
    @staticmethod
    def _load(cls: type, cfg: "WanVAE.Config") -> nn.Module:
        from fvdm.core.pretrained import check_config, read_config

        root = Path(cfg.path).expanduser()
        folder = root / cfg.subfolder if cfg.subfolder else root
        repo = VARIANTS[cfg.variant]["repo"]
        public = f"{repo}, subfolder {cfg.subfolder}" if cfg.subfolder else repo
        what = f"wan_vae variant {cfg.variant}"
        # missing folder or config.json: PretrainedMissing, a FileNotFoundError naming the download
        config = read_config(root, cfg.subfolder or None, public_copy=public, what=what)
        if not any((folder / name).is_file() for name in _WEIGHTS):
            raise FileNotFoundError(f"wan_vae: no weights ({_WEIGHTS[0]}) in {folder}; fvdm never downloads "
                                    f"weights: {_download_hint(cfg.variant)}")
        # the class name is checked before loading: another VAE's weights fail inside diffusers with a key dump;
        # the variant's sizes are checked after, on the config diffusers completes with its defaults
        check_config(config, {"_class_name": _CLASS}, path=folder, public_copy=public, what=what)
        return cls.from_pretrained(str(root), subfolder=cfg.subfolder or None, local_files_only=True,
                                   torch_dtype=_DTYPES[cfg.dtype])

    def _check_variant(self, cfg: "WanVAE.Config", temporal: int, pixel_channels: int) -> None:
        want = VARIANTS[cfg.variant]
        c = self.vae.config
        got = dict(z_dim=int(c.z_dim), spatial=self.downsample, is_residual=bool(c.is_residual),
                   patch_size=c.patch_size)
        wrong = [f"{k}={got[k]} (want {want[k]})" for k in got if got[k] != want[k]]
        if temporal != self.temporal_downsample:
            wrong.append(f"temporal factor {temporal} (want {self.temporal_downsample})")
        if pixel_channels != 3:
            wrong.append(f"{pixel_channels} pixel channels (want 3)")
        config_file = Path(cfg.path).expanduser() / cfg.subfolder / "config.json"
        if wrong:
            raise ValueError(f"wan_vae: {config_file} is not a {cfg.variant} VAE ({', '.join(wrong)}); set the "
                             f"variant that matches it or use a copy of {want['repo']} (subfolder vae)")
        for key in ("latents_mean", "latents_std"):
            if len(getattr(c, key)) != c.z_dim:
                raise ValueError(f"wan_vae: {key} in {config_file} has {len(getattr(c, key))} values for "
                                 f"z_dim {c.z_dim}; use an unmodified copy of {want['repo']} (subfolder vae)")

    # -- the Autoencoder interface -------------------------------------------------------------------
    def train(self, mode: bool = True) -> "WanVAE":  # frozen: stays in eval mode inside a training model
        super().train(False)
        return self

    def latent_shape(self, channels: int, resolution: int) -> tuple[int, int]:
        if channels != 3:
            raise ValueError(f"wan_vae encodes RGB video (3 channels), got {channels}; convert the data to RGB")
        if resolution % self.downsample:
            raise ValueError(f"wan_vae: resolution {resolution} is not divisible by the VAE's spatial factor "
                             f"{self.downsample}; resize to a multiple of {self.downsample}")
        return self.latent_channels, resolution // self.downsample

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 1+4k, 3, H, W) in [-1, 1] -> z (B, 1+k, z_dim, H/d, W/d), normalized posterior mode."""
        check_video(x, "x", channels=3)
        B, F, _, H, W = x.shape
        try:
            latent_frame_count(self, F)  # 1 + 4k frames
        except ValueError as exc:  # its message names the counts that do encode
            raise ValueError(f"wan_vae: {exc}") from None
        if H % self.downsample or W % self.downsample:
            raise ValueError(f"wan_vae: frames of {H}x{W} are not divisible by the spatial factor {self.downsample}; "
                             f"crop or resize to multiples of {self.downsample}")
        video = rearrange(x, "b f c h w -> b c f h w").to(self.vae.dtype)  # diffusers' layout
        # one encode call per chunk: AutoencoderKLWan.encode resets its per-frame feature cache on entry and
        # exit, so every call (and every clip in it) starts from an empty causal history
        mu = torch.cat([self.vae.encode(part).latent_dist.mode() for part in video.split(self.cfg.chunk)])
        z = rearrange(mu.float(), "b c f h w -> b f c h w")  # (B, 1+k, z_dim, H/d, W/d)
        return ((z - self.latents_mean) / self.latents_std).to(x.dtype)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, f, z_dim, h, w) normalized latents -> x (B, 1+4(f-1), 3, h*d, w*d) in [-1, 1]."""
        check_video(z, "z", channels=self.latent_channels)
        mu = rearrange(z.float() * self.latents_std + self.latents_mean, "b f c h w -> b c f h w")
        # AutoencoderKLWan.decode already clamps to [-1, 1] (what the pipeline's video processor expects);
        # nothing is added here, so fvdm's frames equal the pipeline's before postprocessing
        x = torch.cat([self.vae.decode(part).sample for part in mu.to(self.vae.dtype).split(self.cfg.chunk)])
        return rearrange(x.to(z.dtype), "b c f h w -> b f c h w")  # (B, 1+4(f-1), 3, H, W)
