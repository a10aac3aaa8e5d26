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
    FrameModulatedWan, WanFamilyConfig, WanSize, check_size_fields, diffusers_available, make_transformer,
    require_diffusers,
)

_SHARED = dict(text_dim=4096, freq_dim=256, patch=(1, 2, 2), rope_max_seq_len=1024, qk_norm="rms_norm_across_heads",
               cross_attn_norm=True, eps=1e-6)

#: Sizes: the public diffusers-format checkpoints' transformer/config.json (diffusers
#: scripts/convert_wan_to_diffusers.py); flow_shift = the UniPC flow_shift their pipelines ship (3.0 suits
#: Wan2.1 at 480p, diffusers' docs suggest 5.0 at 720p). ``small`` / ``tiny``: random weights, CPU
#: benchmarks / tests, any in_channels.
WAN_SIZES: dict[str, WanSize] = {
    "wan2.1-t2v-1.3b": WanSize("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", heads=12, head_dim=128, layers=30, ffn_dim=8960,
                               channels=16, flow_shift=3.0, use="Wan2.1 text-to-video 1.3B (480p)", **_SHARED),
    "wan2.1-t2v-14b": WanSize("Wan-AI/Wan2.1-T2V-14B-Diffusers", heads=40, head_dim=128, layers=40, ffn_dim=13824,
                              channels=16, flow_shift=3.0, use="Wan2.1 text-to-video 14B (480p/720p)", **_SHARED),
    "wan2.2-ti2v-5b": WanSize("Wan-AI/Wan2.2-TI2V-5B-Diffusers", heads=24, head_dim=128, layers=30, ffn_dim=14336,
                              channels=48, flow_shift=5.0, use="Wan2.2 text/image-to-video 5B, 48-channel VAE (720p)",
                              **_SHARED),
    "small": WanSize(None, heads=2, head_dim=64, layers=2, ffn_dim=256, channels=4, text_dim=64, freq_dim=256,
                     patch=(1, 2, 2), rope_max_seq_len=1024, qk_norm="rms_norm_across_heads", cross_attn_norm=True,
                     eps=1e-6, flow_shift=1.0, use="CPU benchmarks (random weights, any in_channels)"),
    "tiny": WanSize(None, heads=2, head_dim=12, layers=2, ffn_dim=48, channels=4, text_dim=16, freq_dim=32,
                    patch=(1, 2, 2), rope_max_seq_len=32, qk_norm="rms_norm_across_heads", cross_attn_norm=True,
                    eps=1e-6, flow_shift=1.0, use="tests (random weights, any in_channels)"),
}


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

        self._init_common(cfg, WAN_SIZES[cfg.size])
        self.transformer = make_transformer(WanTransformer3DModel, "wan", cfg, self.size)

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
