"""Offline fixtures for text encoders: a tiny umT5 tokenizer and encoder saved as a diffusers-format Wan directory.

Real umT5-XXL weights are ~11 GB; tests need the same file layout (``tokenizer/``, ``text_encoder/``) and the
same classes, not the size, so this builds a Unigram tokenizer over a few words (every letter is also a token,
so any ASCII prompt tokenizes, long ones past any max_length) and a randomly initialised two-layer
``UMT5EncoderModel``, in well under a second, without the network.
"""

from __future__ import annotations

from pathlib import Path

import torch

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
