"""The Wan size table: one row per public diffusers-format checkpoint, plus random-init rows for tests.

Kept apart from the backbone (``wan.py``) and the modulation (``wan_common.py``) so that what only needs
the numbers (the Pusa LoRA importer naming which base a file fits) imports no model code.
"""

from __future__ import annotations

from typing import NamedTuple


class WanSize(NamedTuple):
    """One row of a size table: the hyperparameters of a public diffusers-format ``transformer/config.json``."""

    repo: str | None  # Hugging Face repo of the diffusers-format checkpoint (subfolder "transformer")
    heads: int  # num_attention_heads
    head_dim: int  # attention_head_dim (inner dim D = heads * head_dim)
    layers: int  # num_layers
    ffn_dim: int
    channels: int  # in_channels = out_channels (the VAE's latent channels)
    text_dim: int  # umT5-XXL embedding width
    freq_dim: int  # sinusoidal timestep features
    patch: tuple[int, int, int]  # (t, h, w)
    rope_max_seq_len: int  # rotary table length: bounds latent frames and H/2, W/2
    qk_norm: str
    cross_attn_norm: bool
    eps: float
    flow_shift: float  # shift of the flow-matching UniPC scheduler the public pipeline ships / recommends
    use: str

    @property
    def dim(self) -> int:
        return self.heads * self.head_dim


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
