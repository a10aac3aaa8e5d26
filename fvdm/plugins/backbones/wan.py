"""``wan``: diffusers' ``WanTransformer3DModel`` (Wan2.1 T2V, Wan2.2 TI2V) with per-frame timesteps.

The backbone holds a real ``WanTransformer3DModel`` as ``self.transformer`` (diffusers-format state
dicts and LoRA load into it unchanged) and runs ``FrameModulatedWan.forward``
(``wan_common.py``): the timestep embedding and its six-way projection are computed once per
(clip, frame) and broadcast over the frame's tokens, where diffusers' per-token path (Wan2.2 TI2V's
``expand_timesteps``) computes them for every token. Same numbers as diffusers' forward
(tests/test_backbone_wan.py: scalar and per-token timesteps, 1e-5 float32, 1e-10 float64).

What the build must wire (see docs/backbone.md, "Wan-family backbones"):
  * t: the schedule's ``timestep_input`` must give Wan's [0, 1000] flow timesteps: rectified_flow
    (x_t = (1 - t) x0 + t eps, velocity eps - x0, ``timestep_input = 1000 t``) is Wan's training
    target; sampling as WanPipeline does = the flow-UniPC sampler on levels shifted by ``flow_shift``
    (``WAN_SIZES[size].flow_shift``), i.e. sigma' = s sigma / (1 + (s - 1) sigma);
  * text: ``forward(x, t, encoder_hidden_states=(B, L, 4096))``, umT5-XXL embeddings zero-padded to
    L = 512 as WanPipeline does; CFG = a second call with the negative prompt's embeddings. Without
    it, ``missing_text: zeros`` uses one zero token (a model trained that way is text-free);
  * latents: the Wan VAE (16 channels, 4x8x8 for Wan2.1; 48 channels, 4x16x16 for Wan2.2 TI2V-5B).
"""

from __future__ import annotations

from typing import Literal

from einops import rearrange
from pydantic import model_validator

from fvdm.core.hookspecs import hookimpl
from fvdm.plugins.backbones.wan_common import (
    FrameModulatedWan, WanFamilyConfig, check_size_fields, diffusers_available, make_transformer, require_diffusers,
)
from fvdm.plugins.backbones.wan_sizes import WAN_SIZES



class WanConfig(WanFamilyConfig):
    """Wan backbone; ``size`` picks one row of ``WAN_SIZES`` (its architecture is not overridable)."""

    size: Literal["wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.2-ti2v-5b", "small", "tiny"] = (
        "wan2.1-t2v-1.3b")

    @model_validator(mode="after")
    def _check(self) -> "WanConfig":
        check_size_fields(self, WAN_SIZES, "wan")
        return self


class WanBackbone(FrameModulatedWan):
    """``model(x (B,F,C,H,W), t (B,F) in [0, 1000], encoder_hidden_states=(B,L,4096)) -> (B,F,C,H,W)`` velocity."""

    Config = WanConfig
    name = "wan"

    def __init__(self, cfg: WanConfig):
        super().__init__()
        require_diffusers("wan")
        from diffusers import WanTransformer3DModel

        self._init_common(cfg, WAN_SIZES[cfg.size], WAN_SIZES)
        self.transformer = make_transformer(WanTransformer3DModel, cfg, self.size)

    def time_embedding(self, t, context):
        """Wan's condition embedder on the B*F frame levels (its per-token path, with F rows per clip, not F*N)."""
        frames = t.shape[1]
        temb, proj, context, _ = self.transformer.condition_embedder(
            rearrange(t, "b f -> (b f)"), context, None, timestep_seq_len=frames)  # temb (B, F, D), proj (B, F, 6D)
        return temb, proj.unflatten(2, (6, -1)), context


@hookimpl
def fvdm_register_backbones(registry):
    registry.add("wan", WanBackbone, config=WanConfig, extra="latent", available=diffusers_available,
                 description="diffusers WanTransformer3DModel (Wan2.1 T2V 1.3B/14B, Wan2.2 TI2V-5B; size: ...), "
                             "per-frame timestep modulation")

    from fvdm.plugins.backbones.skyreels_v2 import SkyReelsV2DF, SkyReelsV2DFConfig

    registry.add("skyreels_v2_df", SkyReelsV2DF, config=SkyReelsV2DFConfig, extra="latent",
                 available=diffusers_available,
                 description="diffusers SkyReelsV2Transformer3DModel, diffusion forcing (DF 1.3B/14B), "
                             "per-frame timestep modulation")
