"""``skyreels_v2_df``: diffusers' ``SkyReelsV2Transformer3DModel`` in diffusion forcing mode, per-frame modulation.

SkyReels-V2's diffusion-forcing (DF) checkpoints are Wan2.1 transformers trained with a level per
latent frame, i.e. FVDM's setting. diffusers' ``enable_diffusion_forcing=True`` path already embeds
the (B, F) timesteps per frame, then repeats the (B, F, 6, D) projection over every token and
transposes it to (B, 6, S, D) (a copy per forward, and a (B, 6, S, D) sum per block); here the
projection stays per frame and each block broadcasts it (``wan_common.frame_modulated_block``).

Also kept from diffusers: the fps embedding of DF-1.3B (``inject_sample_info``), added per clip
(diffusers 0.42.1's own forward raises for batch > 1 there: its (B*F, 6, D) repeat lines up with F,
not with (B, F); at batch 1 both agree, and tests/test_backbone_wan.py checks batch 2 against
per-clip calls), and the block-causal attention of its asynchronous mode (``causal_block_size`` frames per
block; diffusers' ``_set_ar_attention``). Wiring as for ``wan`` (fvdm/plugins/backbones/wan.py):
t in [0, 1000], rectified-flow target, flow shift 8.0 for text-to-video (diffusers' docs), umT5 text.
"""

from __future__ import annotations

from typing import Literal

import torch
from einops import rearrange
from pydantic import Field, model_validator

from fvdm.plugins.backbones.wan_common import (
    FrameModulatedWan, WanFamilyConfig, block_causal_mask, check_size_fields, make_transformer,
    require_diffusers,
)
from fvdm.plugins.backbones.wan_sizes import WanSize

_SHARED = dict(text_dim=4096, freq_dim=256, patch=(1, 2, 2), rope_max_seq_len=1024, qk_norm="rms_norm_across_heads",
               cross_attn_norm=True, eps=1e-6, flow_shift=8.0)

#: Sizes (diffusers scripts/convert_skyreelsv2_to_diffusers.py) -> (row, inject_sample_info). The DF
#: checkpoints are Wan2.1-1.3B / -14B shaped; only DF-1.3B embeds the fps.
SKYREELS_V2_DF_SIZES: dict[str, tuple[WanSize, bool]] = {
    "skyreels-v2-df-1.3b-540p": (WanSize("Skywork/SkyReels-V2-DF-1.3B-540P-Diffusers", heads=12, head_dim=128,
                                         layers=30, ffn_dim=8960, channels=16, use="SkyReels-V2 DF 1.3B, 540p",
                                         **_SHARED), True),
    "skyreels-v2-df-14b-540p": (WanSize("Skywork/SkyReels-V2-DF-14B-540P-Diffusers", heads=40, head_dim=128,
                                        layers=40, ffn_dim=13824, channels=16, use="SkyReels-V2 DF 14B, 540p",
                                        **_SHARED), False),
    "skyreels-v2-df-14b-720p": (WanSize("Skywork/SkyReels-V2-DF-14B-720P-Diffusers", heads=40, head_dim=128,
                                        layers=40, ffn_dim=13824, channels=16, use="SkyReels-V2 DF 14B, 720p",
                                        **_SHARED), False),
    "tiny": (WanSize(None, heads=2, head_dim=12, layers=2, ffn_dim=48, channels=4, text_dim=16, freq_dim=32,
                     patch=(1, 2, 2), rope_max_seq_len=32, qk_norm="rms_norm_across_heads", cross_attn_norm=True,
                     eps=1e-6, flow_shift=1.0, use="tests (random weights, fps embedding as DF-1.3B)"), True),
}


class SkyReelsV2DFConfig(WanFamilyConfig):
    """SkyReels-V2 diffusion-forcing backbone; ``size`` picks one row of ``SKYREELS_V2_DF_SIZES``."""

    size: Literal["skyreels-v2-df-1.3b-540p", "skyreels-v2-df-14b-540p", "skyreels-v2-df-14b-720p", "tiny"] = (
        "skyreels-v2-df-1.3b-540p")
    fps: int = Field(24, ge=1, description="sizes with an fps embedding (DF-1.3B): 16 -> embedding 0, any other -> 1, "
                                           "as SkyReelsV2DiffusionForcingPipeline maps it")
    causal_block_size: int = Field(1, ge=1, description="> 1: block-causal attention over blocks of this many "
                                                        "latent frames (asynchronous mode); clips a multiple of it")

    @model_validator(mode="after")
    def _check(self) -> "SkyReelsV2DFConfig":
        check_size_fields(self, {k: row for k, (row, _) in SKYREELS_V2_DF_SIZES.items()}, "skyreels_v2_df")
        return self


class SkyReelsV2DF(FrameModulatedWan):
    """``model(x (B,F,C,H,W), t (B,F) in [0, 1000], encoder_hidden_states=(B,L,4096)) -> (B,F,C,H,W)`` velocity."""

    Config = SkyReelsV2DFConfig
    name = "skyreels_v2_df"
    diffusers_class = "SkyReelsV2Transformer3DModel"

    def __init__(self, cfg: SkyReelsV2DFConfig):
        super().__init__()
        require_diffusers("skyreels_v2_df")
        from diffusers import SkyReelsV2Transformer3DModel

        size, self.inject_sample_info = SKYREELS_V2_DF_SIZES[cfg.size]
        self._init_common(cfg, size, {k: row for k, (row, _) in SKYREELS_V2_DF_SIZES.items()})
        self.transformer = make_transformer(SkyReelsV2Transformer3DModel, cfg, size,
                                            extra=dict(inject_sample_info=self.inject_sample_info,
                                                       num_frame_per_block=cfg.causal_block_size))

    def check_inputs(self, x, t, y, context):
        super().check_inputs(x, t, y, context)
        if x.shape[1] % self.cfg.causal_block_size:
            raise ValueError(f"skyreels_v2_df: {x.shape[1]} latent frames is not a multiple of causal_block_size="
                             f"{self.cfg.causal_block_size}; trim the clip or change causal_block_size")

    def config_must_match(self):
        """The size's architecture and its fps embedding (num_frame_per_block is a sampling-time choice)."""
        return {**super().config_must_match(), "inject_sample_info": self.inject_sample_info}

    def time_embedding(self, t, context):
        """SkyReels' condition embedder on t (B, F) (per frame, as diffusers' DF path), + the per-clip fps term."""
        m = self.transformer
        temb, proj, context, _ = m.condition_embedder(t, context, None)  # temb (B, F, D), proj (B, F, 6D)
        proj = proj.unflatten(-1, (6, -1))  # (B, F, 6, D)
        if self.inject_sample_info:
            index = t.new_full((t.shape[0],), 0 if self.cfg.fps == 16 else 1, dtype=torch.long)
            fps = m.fps_projection(m.fps_embedding(index)).unflatten(1, (6, -1))  # (B, 6, D)
            proj = proj + rearrange(fps, "b six d -> b 1 six d")
        return temb, proj, context

    def attention_mask(self, frames, grid, device):
        if self.cfg.causal_block_size == 1:
            return None
        return block_causal_mask(frames, grid, self.cfg.causal_block_size, device)
