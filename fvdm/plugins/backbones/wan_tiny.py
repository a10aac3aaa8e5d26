"""A tiny random Wan model directory, built offline: the whole pretrained path without a download.

``fvdm data make-tiny-wan DIR`` writes the layout a diffusers-format Wan download has, with random weights
small enough for a CPU and seconds to build:

    DIR/transformer/   config.json + sharded safetensors (+ index): WanTransformer3DModel, fvdm size ``tiny``
    DIR/vae/           config.json + weights: a narrow AutoencoderKLWan (z_dim = the transformer's channels)
    DIR/text_encoder/  a two-layer UMT5EncoderModel (d_model = the tiny size's text_dim, 16)
    DIR/tokenizer/     a T5 Unigram tokenizer over a few words (every letter is a token: any ASCII prompt works)

so ``backbone: {name: wan, size: tiny, pretrained: DIR}``, ``autoencoder: {name: wan_vae, path: DIR}`` and
``text_encoder: {name: umt5, path: DIR}`` train, sample and export exactly as with a real download. The
tests build their directories with the same functions. Needs the ``latent`` and ``text`` extras (diffusers,
transformers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch


def make_tiny_wan_dir(root: str | Path, *, channels: int = 4, layers: int = 2, seed: int = 0,
                      vae: bool = True, text: bool = True) -> Path:
    """``root/transformer`` (tiny, sharded), and ``root/vae`` and ``root/text_encoder`` + ``root/tokenizer``."""
    from diffusers import WanTransformer3DModel

    from fvdm.plugins.backbones.wan_common import diffusers_kwargs
    from fvdm.plugins.backbones.wan_sizes import WAN_SIZES

    root = Path(root)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WanTransformer3DModel(**{**diffusers_kwargs(WAN_SIZES["tiny"], channels), "num_layers": layers})
    model.save_pretrained(root / "transformer", max_shard_size="20KB")  # several shards and an index, as real ones
    if vae:
        make_wan_vae_dir(root, z_dim=channels, seed=seed)
    if text:
        make_text_encoder_dir(root, dim=WAN_SIZES["tiny"].text_dim, seed=seed)
    return root


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


WORDS = ("a the cat dog bird red blue green big small is on in over under and with of running jumping flying "
         "sky grass river video slowly fast").split()


def make_text_encoder_dir(root: Path, *, dim: int = 16, seed: int = 0) -> Path:
    """Write ``root/tokenizer`` (T5-style Unigram: <pad>=0, </s>=1, <unk>=2, </s> appended) and ``root/text_encoder``
    (a random ``UMT5EncoderModel`` with d_model=dim, seeded by ``seed``, safetensors); returns ``root``."""
    from transformers import T5Tokenizer, UMT5Config, UMT5EncoderModel

    # Unigram scores: whole words beat spelling them out letter by letter; "▁" marks a word start (Metaspace).
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(f"▁{w}", -3.0 - i / 100) for i, w in enumerate(WORDS)]
    vocab += [(c, -10.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    T5Tokenizer(vocab=vocab, extra_ids=0).save_pretrained(root / "tokenizer")

    config = UMT5Config(vocab_size=len(vocab), d_model=dim, d_kv=8, d_ff=32, num_layers=2, num_heads=2,
                        relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0)
    with torch.random.fork_rng(devices=[]):  # seeded weights without disturbing the caller's random stream
        torch.manual_seed(seed)
        model = UMT5EncoderModel(config)
    model.save_pretrained(root / "text_encoder", safe_serialization=True)
    return root
