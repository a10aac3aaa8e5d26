"""`fvdm export`: merged weights that fvdm and diffusers read back exactly, LoRA adapters, atomic one-line refusals."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from einops import rearrange, repeat

pytest.importorskip("safetensors")
from safetensors.torch import load_file  # noqa: E402

from fvdm.cli import main  # noqa: E402
from fvdm.commands.export import export_adapter, export_merged  # noqa: E402
from fvdm.core.build import build_model  # noqa: E402
from fvdm.core.checkpoint import load_checkpoint  # noqa: E402
from fvdm.core.plugins import load_plugins  # noqa: E402

UNET = {"name": "unet_video", "base_channels": 8, "channel_mult": [1, 2], "temporal_levels": [1], "groups": 4,
        "num_heads": 2}
WAN = {"name": "wan", "size": "tiny", "in_channels": 4}


@pytest.fixture(scope="module")
def plugins():
    return load_plugins()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("unet")
    cfg = root / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "tiny", "run_root": str(root / "runs"),
        "data": {"name": "moving_digits", "num_frames": 4, "resolution": 16, "num_clips": 8},
        "backbone": UNET,
        "train": {"steps": 2, "batch_size": 2, "log_every": 1, "ckpt_every": 2, "tensorboard": False},
        "sample": {"steps": 2},
    }))
    assert main(["train", str(cfg), "--run-dir", str(root / "run"), "--no-progress"]) == 0
    return root / "run" / "checkpoints" / "last.pt"


def export(ckpt, out, *args):
    return main(["export", str(ckpt), "--out", str(out), *args])


def read_back(plugins, spec, directory):
    model = build_model(plugins, {**spec, "pretrained": str(directory)}, load_pretrained=True)
    return model.state_dict()


def same(a, b):
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_merged_unet_video_reads_back_as_exactly_the_ema_weights(plugins, ckpt, tmp_path, capsys):
    assert export(ckpt, tmp_path / "ema") == 0
    assert "fvdm export: merged unet_video weights (ema, step 2) ->" in capsys.readouterr().out
    c = load_checkpoint(ckpt)
    spec = dict(c["model_info"])
    same(read_back(plugins, spec, tmp_path / "ema"), c["ema"])
    config = json.loads((tmp_path / "ema" / "config.json").read_text())
    assert config["backbone"] == "unet_video" and config["source"]["weights"] == "ema"
    assert config["source"]["checkpoint"] == str(ckpt.resolve()) and len(config["source"]["sha256"]) == 64
    # the recorded spec alone reads the directory back
    same(build_model(plugins, config["spec"], load_pretrained=True).state_dict(), c["ema"])
    assert sorted(p.name for p in (tmp_path / "ema").iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["ema"]  # no temporary directory left
    assert export(ckpt, tmp_path / "raw", "--merged", "--no-ema") == 0
    same(read_back(plugins, spec, tmp_path / "raw"), c["model"])


def test_refusals_are_one_line_and_leave_the_directory_alone(ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert export(ckpt, out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "exists and is not empty; choose another directory or pass --overwrite" in err[0]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert export(ckpt, tmp_path / "empty", "--adapter") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "'unet_video' has no LoRA layers: --adapter exports a LoRA fine-tune" in err[0]
    assert not (tmp_path / "empty").exists()
    assert export(ckpt, out, "--overwrite") == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(SystemExit):
        main(["export", str(ckpt), "--out", str(out), "--merged", "--adapter"])


def test_unet_video_adapter_export_round_trips(plugins, ckpt, tmp_path):
    from fvdm.core.lora import (
        UNET_VIDEO_TARGETS, LoraSettings, adapter_state_dict, add_lora, base_fingerprint, load_adapter_state,
    )

    spec = dict(load_checkpoint(ckpt)["model_info"])
    settings = LoraSettings(rank=2, target_modules=list(UNET_VIDEO_TARGETS))
    torch.manual_seed(0)
    model = build_model(plugins, spec)
    add_lora(model, settings)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.normal_()
    export_adapter(model, tmp_path / "a", spec=spec)
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert config["lora"] == settings.model_dump(mode="json") | {"alpha": 2.0, "target_modules": sorted(
        UNET_VIDEO_TARGETS)} and config["base_fingerprint"] == base_fingerprint(model)
    from fvdm.commands.jobs import base_record

    assert base_record(model)["base_fingerprint"] == config["base_fingerprint"]  # one fingerprint for one base
    torch.manual_seed(0)
    fresh = build_model(plugins, spec)
    add_lora(fresh, settings)
    load_adapter_state(fresh, load_file(str(tmp_path / "a" / "adapter.safetensors")))
    same(adapter_state_dict(fresh), adapter_state_dict(model))
    # merged: the adapter folded into the base, plain unet_video keys, the same function
    x, t = torch.randn(1, 4, 1, 16, 16), torch.rand(1, 4) * 999
    with torch.no_grad():
        y = model.eval()(x, t)
    export_merged(model, tmp_path / "m", spec=spec)
    merged = build_model(plugins, {**spec, "pretrained": str(tmp_path / "m")}, load_pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(x, t), y, rtol=0, atol=1e-5)


@torch.no_grad()
def test_wan_merged_export_is_a_diffusers_directory_fvdm_and_diffusers_read(plugins, tmp_path):
    pytest.importorskip("diffusers")
    from diffusers import WanTransformer3DModel

    from fvdm.core.lora import LoraSettings, add_lora, load_diffusers_lora

    torch.manual_seed(0)
    model = build_model(plugins, WAN).eval()
    add_lora(model, LoraSettings(rank=4, alpha=8))
    for name, p in model.named_parameters():
        if ".lora_B." in name:
            p.normal_(std=0.2)
    g = torch.Generator().manual_seed(1)
    x, ctx = torch.randn(2, 3, 4, 8, 6, generator=g), torch.randn(2, 5, 16, generator=g)
    level = torch.tensor([137.5, 912.0])
    y = model(x, repeat(level, "b -> b f", f=3), encoder_hidden_states=ctx)
    export_adapter(model, tmp_path / "adapter", spec=WAN)
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["weights"] == \
        "pytorch_lora_weights.safetensors"
    torch.manual_seed(0)
    base = build_model(plugins, WAN).eval()
    load_diffusers_lora(base, tmp_path / "adapter")
    torch.testing.assert_close(base(x, repeat(level, "b -> b f", f=3), encoder_hidden_states=ctx), y, rtol=0, atol=0)

    out = export_merged(model, tmp_path / "merged", spec=WAN)  # folds the adapter in first
    assert sorted(p.name for p in out.iterdir()) == ["fvdm_export.json", "transformer"]
    ours = build_model(plugins, {**WAN, "pretrained": str(out)}, load_pretrained=True)
    same(ours.state_dict(), model.state_dict())
    assert json.loads((out / "fvdm_export.json").read_text())["spec"] == {**WAN, "pretrained": str(out)}
    theirs = WanTransformer3DModel.from_pretrained(str(out), subfolder="transformer").eval()
    ref = theirs(rearrange(x, "b f c h w -> b c f h w"), level, ctx, return_dict=False)[0]
    torch.testing.assert_close(rearrange(ref, "b c f h w -> b f c h w"), y, rtol=0, atol=1e-5)


@torch.no_grad()
def test_backbone_lora_applies_the_adapter_fvdm_exported_and_checks_its_base(plugins, tmp_path):
    """backbone.lora reads fvdm's own diffusers-format adapter (as well as DiffSynth/Pusa files): merged into the
    pretrained weights, the model equals the LoRA model it was exported from; another base is refused naming
    the field."""
    pytest.importorskip("diffusers")
    from fvdm.core.lora import LoraError, LoraSettings, add_lora

    torch.manual_seed(0)
    base = build_model(plugins, WAN).eval()
    base.transformer.save_pretrained(tmp_path / "base" / "transformer")
    model = build_model(plugins, {**WAN, "pretrained": str(tmp_path / "base")}, load_pretrained=True).eval()
    add_lora(model, LoraSettings(rank=4, alpha=8))
    for name, p in model.named_parameters():
        if ".lora_B." in name:
            p.normal_(std=0.2)
    export_adapter(model, tmp_path / "adapter", spec=WAN)
    g = torch.Generator().manual_seed(1)
    x, ctx = torch.randn(2, 3, 4, 8, 6, generator=g), torch.randn(2, 5, 16, generator=g)
    t = repeat(torch.tensor([137.5, 912.0]), "b -> b f", f=3)
    want = model(x, t, encoder_hidden_states=ctx)
    for lora in (tmp_path / "adapter", tmp_path / "adapter" / "pytorch_lora_weights.safetensors"):
        spec = {**WAN, "pretrained": str(tmp_path / "base"), "lora": str(lora)}
        merged = build_model(plugins, spec, load_pretrained=True).eval()
        assert merged.pretrained_info["lora"]["format"] == "diffusers"
        assert all(".lora_" not in k for k in merged.state_dict())  # folded in: the plain base keys
        torch.testing.assert_close(merged(x, t, encoder_hidden_states=ctx), want, rtol=0, atol=1e-5)
    torch.manual_seed(5)
    build_model(plugins, WAN).transformer.save_pretrained(tmp_path / "other" / "transformer")
    with pytest.raises(Exception, match=r"backbone.lora.*trained on another base") as err:
        build_model(plugins, {**WAN, "pretrained": str(tmp_path / "other"), "lora": str(tmp_path / "adapter")},
                    load_pretrained=True)
    assert str(err.value).startswith("backbone.lora ")  # the field at fault is named first, not the base's


def test_comfyui_format_is_refused_for_a_merged_export_in_one_line(ckpt, tmp_path, capsys):
    assert export(ckpt, tmp_path / "x", "--merged", "--format", "comfyui") == 2
    assert "--format comfyui is a LoRA layout: use it with --adapter" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
