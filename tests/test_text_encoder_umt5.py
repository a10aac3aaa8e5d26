"""The ``umt5`` text encoder: its embeddings equal diffusers' WanPipeline's, padded with exact zeros, named
by a stable ``encoder_id``, with one-line errors naming the fix; built from a tiny offline umT5."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from fvdm.core.interfaces import TextEncoder
from fvdm.plugins.text_encoders.umt5 import UMT5TextEncoder, prompt_cleaner, transformers_available
from tests.text_fixtures import make_text_encoder_dir

L = 32
PROMPTS = [
    "a cat",
    "",
    "  the big   red dog\n\trunning over the &amp;amp; green grass  ",
    " ".join(["a small blue bird flying slowly over the river"] * 8),  # longer than L tokens: truncated
    "zebra quokka",  # out of the word list: spelled letter by letter
]


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory) -> Path:
    return make_text_encoder_dir(tmp_path_factory.mktemp("wan"))


@pytest.fixture(scope="module")
def encoder(wan_dir) -> UMT5TextEncoder:
    return UMT5TextEncoder(UMT5TextEncoder.Config(path=str(wan_dir), max_length=L))


def wan_pipeline(wan_dir: Path, dtype: torch.dtype):
    """A WanPipeline holding only the tiny tokenizer and text encoder (the VAE and transformer are optional)."""
    from diffusers import UniPCMultistepScheduler, WanPipeline
    from transformers import AutoTokenizer, UMT5EncoderModel

    tokenizer = AutoTokenizer.from_pretrained(str(wan_dir / "tokenizer"), local_files_only=True)
    text_encoder = UMT5EncoderModel.from_pretrained(str(wan_dir / "text_encoder"), local_files_only=True, dtype=dtype)
    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=None, scheduler=UniPCMultistepScheduler())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_encode_equals_wan_pipeline_prompt_embeddings(wan_dir, dtype):
    ours = UMT5TextEncoder(UMT5TextEncoder.Config(path=str(wan_dir), max_length=L, dtype=dtype)).encode(PROMPTS)
    pipe = wan_pipeline(wan_dir, getattr(torch, dtype))
    # Under no_grad, as WanPipeline.__call__ runs it: with autograd on, torch picks another SDPA kernel
    # (bf16 differs by ~3e-2, float32 by ~1e-6), so that would not be the pipeline's own output.
    with torch.no_grad():
        theirs, _ = pipe.encode_prompt(PROMPTS, do_classifier_free_guidance=False, max_sequence_length=L,
                                       device=torch.device("cpu"))
    assert ours.dtype == torch.float32 and ours.shape == theirs.shape == (len(PROMPTS), L, 16)
    diff = (ours - theirs.float()).abs().max().item()
    print(f"max abs difference vs WanPipeline.encode_prompt ({dtype}): {diff:.3g}")
    assert diff <= 1e-6


def test_prompt_cleaning_equals_the_pipeline_on_escapes_and_unicode_whitespace():
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    clean = prompt_cleaner()
    texts = ["  a\t\tcat \n", "&amp;lt;b&amp;gt; dog", "x\u00a0y\u3000z\u2028w", "a\x1cb\x1fc", "\u200b", "caf\u00e9 ok"]
    assert [clean(t) for t in texts] == [prompt_clean(t) for t in texts]


def test_rows_past_each_prompt_are_exact_zeros(encoder):
    out = encoder.encode(PROMPTS)
    assert out.shape == (len(PROMPTS), L, encoder.dim) and out.device.type == "cpu"
    assert encoder.dim == 16 and encoder.max_length == L
    lengths = encoder.tokenizer([prompt_cleaner()(p) for p in PROMPTS], padding="max_length", max_length=L,
                                truncation=True, return_tensors="pt").attention_mask.sum(1).tolist()
    assert lengths[1] == 1 and lengths[3] == L  # "" is its </s> alone; the long prompt fills every row
    for row, n in zip(out, lengths):
        assert (row[:n].abs().sum(-1) > 0).all()
        assert torch.equal(row[n:], torch.zeros_like(row[n:]))


def test_a_prompt_embeds_the_same_alone_or_in_a_batch(encoder):
    batch = encoder.encode(PROMPTS)
    alone = torch.cat([encoder.encode([p]) for p in PROMPTS])
    assert torch.allclose(batch, alone, atol=1e-6)


def test_it_satisfies_the_text_encoder_protocol(encoder):
    assert isinstance(encoder, TextEncoder)


def test_encoder_id_is_stable_and_follows_the_weights(wan_dir, encoder, tmp_path):
    again = UMT5TextEncoder(UMT5TextEncoder.Config(path=str(wan_dir), max_length=L))
    assert encoder.encoder_id == again.encoder_id and encoder.encoder_id.startswith("umt5:")
    assert len(encoder.encoder_id) == len("umt5:") + 64

    copy = tmp_path / "copy"
    shutil.copytree(wan_dir, copy)
    assert UMT5TextEncoder(UMT5TextEncoder.Config(path=str(copy))).encoder_id == encoder.encoder_id  # content, not path

    # Same shapes, other values (a fine-tune): the weights file keeps its size but its bytes change.
    reseeded = make_text_encoder_dir(tmp_path / "reseeded", seed=1)
    assert (reseeded / "text_encoder/model.safetensors").stat().st_size == (
        wan_dir / "text_encoder/model.safetensors").stat().st_size
    shutil.copy(reseeded / "text_encoder/model.safetensors", copy / "text_encoder/model.safetensors")
    assert UMT5TextEncoder(UMT5TextEncoder.Config(path=str(copy))).encoder_id != encoder.encoder_id


def assert_one_line_with_fix(exc: pytest.ExceptionInfo, *needles: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for needle in ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "tokenizer/", "text_encoder/", "umT5-XXL",
                   "never downloads", *needles):
        assert needle in msg, (needle, msg)


def test_a_missing_directory_names_the_path_and_the_public_copy(tmp_path):
    with pytest.raises(FileNotFoundError) as exc:
        UMT5TextEncoder(UMT5TextEncoder.Config(path=str(tmp_path / "nowhere")))
    assert_one_line_with_fix(exc, str(tmp_path / "nowhere"))


@pytest.mark.parametrize(("remove", "named"), [
    ("tokenizer", "tokenizer"),
    ("text_encoder", "text_encoder"),
    ("text_encoder/config.json", "text_encoder/config.json"),
    ("text_encoder/model.safetensors", "text_encoder"),  # the folder whose weights are missing
    ("tokenizer/tokenizer.json", "tokenizer"),  # the folder whose vocabulary is missing
])
def test_a_missing_part_names_it_and_the_public_copy(wan_dir, tmp_path, remove, named):
    broken = tmp_path / "wan"
    shutil.copytree(wan_dir, broken)
    gone = broken / remove
    shutil.rmtree(gone) if gone.is_dir() else gone.unlink()
    with pytest.raises(FileNotFoundError) as exc:
        UMT5TextEncoder(UMT5TextEncoder.Config(path=str(broken)))
    assert_one_line_with_fix(exc, str(broken / named))


@pytest.mark.parametrize(("prompts", "error", "fix"), [
    ([], ValueError, "pass at least one"),
    (["a cat", 3], TypeError, "pass strings only"),
    ("a cat", TypeError, "pass [prompt]"),
])
def test_bad_prompts_raise_one_line_errors(encoder, prompts, error, fix):
    with pytest.raises(error) as exc:
        encoder.encode(prompts)
    assert fix in str(exc.value) and "\n" not in str(exc.value)


def test_the_plugin_registers_and_builds_by_name(wan_dir, monkeypatch):
    from fvdm.core.plugins import load_plugins

    plugins = load_plugins()
    entry = plugins["text_encoders"].get("umt5")
    assert entry.origin == "builtin" and entry.extra == "text" and entry.availability().ok
    built = plugins["text_encoders"].build({"name": "umt5", "path": str(wan_dir), "max_length": L})
    assert isinstance(built, UMT5TextEncoder) and built.encode(["a cat"]).shape == (1, L, 16)

    monkeypatch.setitem(__import__("sys").modules, "transformers", None)  # None in sys.modules: import fails
    ok, reason = transformers_available()
    assert not ok and "transformers is not importable" in reason


def test_a_broken_encoder_config_is_a_one_line_error_with_the_fix(wan_dir, tmp_path):
    from fvdm.core.pretrained import PretrainedError

    broken = tmp_path / "wan"
    shutil.copytree(wan_dir, broken)
    (broken / "text_encoder" / "config.json").write_text("[]")
    with pytest.raises(PretrainedError) as exc:
        UMT5TextEncoder(UMT5TextEncoder.Config(path=str(broken)))
    assert_one_line_with_fix(exc, str(broken / "text_encoder" / "config.json"), "not an object")
