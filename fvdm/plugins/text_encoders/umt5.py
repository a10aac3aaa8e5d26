"""Wan's umT5 text encoder: prompts -> (B, max_length, dim) embeddings, exactly as diffusers' WanPipeline makes them.

Wan (2.1/2.2) conditions its cross-attention on the last hidden state of a umT5-XXL encoder. To reuse Wan
weights, fvdm must hand the backbone the very embeddings Wan was trained with, so ``encode`` follows the
pipeline step by step: clean the prompt text (ftfy when installed, HTML entities unescaped twice, runs of
whitespace collapsed), tokenize with padding and truncation to ``max_length`` (an end-of-sequence token is
appended), run the encoder under the attention mask, and zero every row past the prompt's own tokens.

Weights are never downloaded: ``path`` is a local copy of a diffusers-format Wan repository holding
``tokenizer/`` and ``text_encoder/``. ``encoder_id`` identifies the weights cheaply (config bytes, file names
and sizes, a MiB from each end of each file; never the whole multi-GB contents), so packed shards and
provenance can name what made them.
"""

from __future__ import annotations

import hashlib
import html
from pathlib import Path
from typing import Callable, Literal, Sequence

import torch
from pydantic import Field

from fvdm.core.interfaces import PluginConfig
from fvdm.core.pretrained import read_config

PUBLIC_COPY = ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers on the Hugging Face hub (subfolders tokenizer/ and text_encoder/, "
               "umT5-XXL)")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def transformers_available(**_ctx) -> tuple[bool, str]:
    try:
        import transformers  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return False, f"transformers is not importable ({type(exc).__name__}: {exc})"
    return True, ""


#: the fix every missing-file message gives (the two subfolders are fetched with --include, which a repo and one
#: subfolder, ``read_config``'s own form of a public copy, cannot say)
FIX = ("fvdm never downloads weights: download a local copy of umT5-XXL, e.g. `huggingface-cli download "
       "Wan-AI/Wan2.1-T2V-1.3B-Diffusers --include 'tokenizer/*' 'text_encoder/*' --local-dir DIR`, and set the "
       "text encoder's path to DIR")


def _missing(what: str) -> FileNotFoundError:
    """One line in ``read_config``'s form: what is missing, for which public copy, and the fix."""
    return FileNotFoundError(f"umt5: {what} (for {PUBLIC_COPY}); {FIX}")


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"


def prompt_cleaner() -> Callable[[str], str]:
    """The text cleaning WanPipeline applies to each prompt before tokenizing it."""
    # ``regex``, not ``re``: the pipeline collapses whitespace with ``regex``, whose ``\s`` is Unicode White_Space
    # and differs from ``re``'s on a few control characters (U+001C..U+001F); transformers depends on it.
    import regex

    # Like the pipeline, repair mojibake with ftfy only when ftfy is installed; without it the text is kept as is.
    try:
        import ftfy
    except ImportError:
        ftfy = None

    def clean(text: str) -> str:
        if ftfy is not None:
            text = ftfy.fix_text(text)
        text = html.unescape(html.unescape(text)).strip()  # twice: prompts scraped from HTML are often escaped twice
        return regex.sub(r"\s+", " ", text).strip()

    return clean


_SAMPLE = 1 << 20  # bytes read from each end of a file for ``weights_id``


def weights_id(encoder_dir: Path, tokenizer_dir: Path) -> str:
    """sha256 over the encoder's config.json and, for every other file in both folders, its name, size and
    first and last MiB.

    Samples rather than whole contents: hashing umT5-XXL's ~11 GB would cost minutes on every load. Name and
    size catch another architecture; the sampled bytes (safetensors header, first and last tensors) catch a
    fine-tune of the same shapes. The tokenizer files count too: another vocabulary gives other embeddings.
    """
    config = encoder_dir / "config.json"
    h = hashlib.sha256(config.read_bytes())
    for label, folder in (("text_encoder", encoder_dir), ("tokenizer", tokenizer_dir)):
        for f in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p != config):
            size = f.stat().st_size
            h.update(f"\n{label}/{f.name}\0{size}\0".encode())
            with f.open("rb") as fh:
                if size <= 2 * _SAMPLE:
                    h.update(fh.read())
                else:
                    h.update(fh.read(_SAMPLE))
                    fh.seek(size - _SAMPLE)
                    h.update(fh.read(_SAMPLE))
    return h.hexdigest()


class UMT5TextEncoder:
    """Frozen umT5 encoder (Wan's): ``encode(prompts)`` -> (B, max_length, dim), zero rows past each prompt."""

    class Config(PluginConfig):
        path: str = Field(description="local root of a diffusers-format Wan download (holds tokenizer/ and text_encoder/)")
        tokenizer_subfolder: str = "tokenizer"
        encoder_subfolder: str = "text_encoder"
        max_length: int = Field(512, ge=1, description="tokens per prompt (Wan's max_sequence_length)")
        dtype: Literal["float32", "bfloat16"] = "float32"
        device: str = "cpu"

    def __init__(self, cfg: "UMT5TextEncoder.Config"):
        self.cfg = cfg
        try:
            self.device = torch.device(cfg.device)
        except RuntimeError:
            raise ValueError(f"umt5: device {cfg.device!r} is not a torch device; use e.g. 'cpu' or 'cuda:0'") from None
        root = Path(cfg.path).expanduser()
        if not root.is_dir():
            raise _missing(f"path {str(root)!r} is not a directory")
        tok_dir, enc_dir = root / cfg.tokenizer_subfolder, root / cfg.encoder_subfolder
        # both subfolders are checked here, the tokenizer's first (read_config knows one folder only)
        for sub in (tok_dir, enc_dir):
            if not sub.is_dir():
                raise _missing(f"{str(root)!r} has no subfolder {sub.name!r} ({str(sub)!r} is not a directory)")
        # a missing or broken config.json: PretrainedMissing (a FileNotFoundError) or PretrainedError, one line
        read_config(root, cfg.encoder_subfolder, public_copy=PUBLIC_COPY, what="umt5", fix=FIX)
        # Without its vocabulary file, transformers' T5 tokenizer quietly builds one of special tokens only.
        if not any((tok_dir / name).is_file() for name in ("tokenizer.json", "spiece.model")):
            raise _missing(f"{str(tok_dir)!r} holds neither tokenizer.json nor spiece.model")

        from transformers import AutoTokenizer, UMT5EncoderModel

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise _missing(f"could not load a tokenizer from {str(tok_dir)!r} ({_first_line(exc)})") from exc
        from transformers.utils import logging as hf_logging

        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a carriage-return bar per load would fill fvdm's logs
        try:
            encoder = UMT5EncoderModel.from_pretrained(str(enc_dir), local_files_only=True, dtype=_DTYPES[cfg.dtype])
        except (OSError, ValueError) as exc:
            raise _missing(f"could not load a UMT5EncoderModel from {str(enc_dir)!r} ({_first_line(exc)})") from exc
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        # The trim in ``encode`` keeps each sequence's first tokens, which are its own only with right padding
        # (how Wan's umT5 tokenizer pads).
        tokenizer.padding_side = "right"
        self.tokenizer = tokenizer
        self.encoder = encoder.requires_grad_(False).eval().to(self.device)
        self.clean = prompt_cleaner()
        self.dim = int(encoder.config.d_model)
        self.max_length = int(cfg.max_length)
        self.encoder_id = "umt5:" + weights_id(enc_dir, tok_dir)

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """B prompts -> (B, max_length, dim) float32 on ``device``; rows past a prompt's tokens are exactly zero."""
        if isinstance(prompts, str):
            raise TypeError("umt5: encode takes a list of prompts, got one str; pass [prompt]")
        prompts = list(prompts)
        if not prompts:
            raise ValueError("umt5: encode got an empty list of prompts; pass at least one (\"\" for the unconditional)")
        bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
        if bad:
            raise TypeError(f"umt5: prompt {bad[0]} is a {type(prompts[bad[0]]).__name__}, not a str; pass strings only")
        tokens = self.tokenizer(
            [self.clean(p) for p in prompts], padding="max_length", max_length=self.max_length, truncation=True,
            add_special_tokens=True, return_attention_mask=True, return_tensors="pt",
        )
        ids, mask = tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)  # (B, L) each
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state.float()  # (B, L, D)
        lengths = mask.gt(0).sum(dim=1)  # (B,) tokens of each prompt, its end-of-sequence token included
        keep = torch.arange(ids.shape[1], device=self.device)[None, :] < lengths[:, None]  # (B, L)
        return torch.where(keep[..., None], hidden, torch.zeros((), device=self.device))  # (B, L, D)
