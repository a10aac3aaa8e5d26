"""fvdm.core.lora: a LoRA trained in fvdm is the one diffusers loads (the oracle), merging, state, fingerprints, errors.

Oracle (tiny wan, float32, 1e-5): fvdm's model with adapters (rank 4, alpha 8: scale 2, so the alpha must travel)
and "trained" (random nonzero) LoRA weights, every frame at one level, equals a fresh diffusers
WanTransformer3DModel holding the same base weights after diffusers' own LoRA loading read the file
save_diffusers_lora wrote (WanTransformer3DModel.load_lora_adapter, and the WanPipeline loader's class methods),
run through diffusers' own forward with scalar timesteps (B,).
"""

from __future__ import annotations

import json

import pytest
import torch
from einops import rearrange, repeat

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from fvdm.core.lora import (  # noqa: E402
    LORA_FILE, UNET_VIDEO_TARGETS, LoraError, LoraSettings, adapter_state_dict, add_lora, base_fingerprint, has_lora,
    is_lora_key, load_adapter_state, load_diffusers_lora, lora_root, merge_lora, save_diffusers_lora, to_diffusers_lora,
)
from fvdm.core.plugins import load_plugins  # noqa: E402

TOL = 1e-5
WAN = {"name": "wan", "size": "tiny", "in_channels": 4}
UNET = {"name": "unet_video", "in_channels": 1, "input_size": 16, "num_frames": 4, "base_channels": 8,
        "channel_mult": [1, 2], "temporal_levels": [1], "groups": 4, "num_heads": 2}


@pytest.fixture(scope="module")
def plugins():
    return load_plugins()


def build(plugins, spec, seed=0):
    torch.manual_seed(seed)
    return plugins["backbones"].build(dict(spec)).eval()


def trained(model, seed=3):
    """Random nonzero LoRA weights, as after training (lora_B starts at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if is_lora_key(name):
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def inputs(B=2, F=3):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, F, 4, 8, 6, generator=g)
    level = torch.tensor([137.5, 912.0])  # (B,): every frame of a clip at one level
    ctx = torch.randn(B, 5, 16, generator=g)  # tiny text_dim 16
    return x, level, ctx


@torch.no_grad()
def fvdm_out(model, x, level, ctx):
    return model(x, repeat(level, "b -> b f", f=x.shape[1]), encoder_hidden_states=ctx)


@torch.no_grad()
def diffusers_out(transformer, x, level, ctx):
    out = transformer(rearrange(x, "b f c h w -> b c f h w"), level, ctx, return_dict=False)[0]
    return rearrange(out, "b c f h w -> b f c h w")


def base_copy(model):
    """A fresh diffusers WanTransformer3DModel with the base weights of ``model.transformer`` (no adapters)."""
    from diffusers import WanTransformer3DModel

    ref = WanTransformer3DModel.from_config(model.transformer.config).eval()
    state = {k.replace(".base_layer.", "."): v for k, v in model.transformer.state_dict().items() if not is_lora_key(k)}
    ref.load_state_dict(state, strict=True)
    return ref


def diffusers_load_adapter(ref, directory):
    ref.load_lora_adapter(str(directory), prefix="transformer", adapter_name="fvdm", weight_name=LORA_FILE)


def diffusers_pipeline_loader(ref, directory):
    from diffusers import WanPipeline

    state, metadata = WanPipeline.lora_state_dict(str(directory), return_lora_metadata=True)
    WanPipeline.load_lora_into_transformer(state, transformer=ref, adapter_name="fvdm", metadata=metadata)


@pytest.mark.parametrize("loader", [diffusers_load_adapter, diffusers_pipeline_loader])
def test_oracle_diffusers_loads_the_saved_lora_with_the_same_scale_and_output(plugins, tmp_path, loader):
    m = build(plugins, WAN)
    plain = fvdm_out(m, *inputs())
    adapted = add_lora(m, LoraSettings(rank=4, alpha=8))
    assert len(adapted) == 2 * 10 and "blocks.0.attn2.to_out.0" in adapted and "blocks.1.ffn.net.0.proj" in adapted
    torch.testing.assert_close(fvdm_out(m, *inputs()), plain, rtol=0, atol=0)  # B = 0: unchanged until trained
    y1 = fvdm_out(trained(m), *inputs())
    assert (y1 - plain).abs().max() > 1e-2
    file = save_diffusers_lora(m, tmp_path)
    assert file == tmp_path / LORA_FILE
    ref = base_copy(m)
    loader(ref, tmp_path)
    y2 = diffusers_out(ref, *inputs())
    print(f"oracle max |fvdm - diffusers| = {(y1 - y2).abs().max().item():.3g}")
    torch.testing.assert_close(y1, y2, rtol=0, atol=TOL)
    # the alpha travels in the metadata: the same tensors without it load at scale 1, another output
    bare = base_copy(m)
    bare.load_lora_adapter(to_diffusers_lora(m), prefix="transformer", adapter_name="bare")
    assert (diffusers_out(bare, *inputs()) - y1).abs().max() > 1e-3


def test_the_file_is_diffusers_keys_and_metadata(plugins, tmp_path):
    from safetensors import safe_open

    m = build(plugins, WAN)
    assert not has_lora(m)
    add_lora(m, LoraSettings(rank=4, alpha=8, target_modules=["to_q", "ffn.net.2"]))
    trained(m)
    with safe_open(str(save_diffusers_lora(m, tmp_path)), framework="pt") as f:
        keys, meta = set(f.keys()), f.metadata()
    assert keys == {f"transformer.blocks.{i}.{mod}.lora_{ab}.weight" for i in (0, 1)
                    for mod in ("attn1.to_q", "attn2.to_q", "ffn.net.2") for ab in "AB"}
    config = json.loads(meta["lora_adapter_metadata"])
    assert (config["transformer.r"], config["transformer.lora_alpha"]) == (4, 8.0)
    assert LoraSettings.model_validate_json(meta["fvdm_lora_settings"]).target_modules == ["ffn.net.2", "to_q"]
    assert meta["fvdm_base_fingerprint"] == base_fingerprint(m)


def test_merged_equals_unmerged_and_has_the_plain_base_keys(plugins):
    m = build(plugins, WAN)
    base_keys = set(m.state_dict())
    add_lora(m, LoraSettings(rank=4, alpha=8))
    y = fvdm_out(trained(m), *inputs())
    merge_lora(m)
    assert set(m.state_dict()) == base_keys and not has_lora(m)
    torch.testing.assert_close(fvdm_out(m, *inputs()), y, rtol=0, atol=TOL)
    add_lora(m, LoraSettings(rank=2))  # the root is clean again: adapters can be added anew
    assert has_lora(m)


def test_adapter_state_round_trip_and_strictness(plugins):
    settings = LoraSettings(rank=4)
    a = build(plugins, WAN)
    add_lora(a, settings)
    state = {k: v.clone() for k, v in adapter_state_dict(trained(a)).items()}
    assert state and all(is_lora_key(k) for k in state)
    assert "transformer.blocks.0.attn1.to_q.lora_A.default.weight" in state
    b = build(plugins, WAN)  # the same seed: the same base
    add_lora(b, settings)
    load_adapter_state(b, state)
    torch.testing.assert_close(fvdm_out(b, *inputs()), fvdm_out(a, *inputs()), rtol=0, atol=0)
    missing = dict(list(state.items())[1:])
    with pytest.raises(LoraError, match=r"1 missing .*lora_.*0 unexpected"):
        load_adapter_state(b, missing)
    with pytest.raises(LoraError, match="0 missing .*1 unexpected"):
        load_adapter_state(b, state | {"transformer.blocks.9.attn1.to_q.lora_A.default.weight": torch.zeros(4, 32)})
    wrong = {k: (v[:2] if k.endswith("lora_A.default.weight") else v) for k, v in state.items()}
    with pytest.raises(LoraError, match="another rank"):
        load_adapter_state(b, wrong)


def test_base_fingerprint_follows_base_weights_not_lora_weights(plugins):
    m = build(plugins, WAN)
    before = base_fingerprint(m)
    add_lora(m, LoraSettings(rank=4))
    assert base_fingerprint(m) == before  # peft's base_layer renaming does not change it
    trained(m)
    assert base_fingerprint(m) == before
    with torch.no_grad():
        m.transformer.blocks[0].attn1.to_q.base_layer.weight[0, 0] += 1e-3
    assert base_fingerprint(m) != before
    assert base_fingerprint(build(plugins, WAN, seed=1)) != before


def test_a_target_that_matches_no_linear_layer_is_one_line_and_changes_nothing(plugins):
    m = build(plugins, WAN)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(LoraError) as exc:
        add_lora(m, LoraSettings(target_modules=["to_q", "to_qq"]))
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("LoRA target 'to_qq' matches no linear layer of wan; it has: ")
    assert "to_q, to_k, to_v, to_out.0" in msg
    with pytest.raises(LoraError, match="matches WanAttention 'blocks.0.attn1', not a linear layer"):
        add_lora(m, LoraSettings(target_modules=["attn1"]))
    assert not has_lora(m) and all(p.requires_grad for p in m.parameters())
    assert all(torch.equal(v, state[k]) for k, v in m.state_dict().items())
    add_lora(m, LoraSettings())
    with pytest.raises(LoraError, match="already has LoRA layers; merge_lora"):
        add_lora(m, LoraSettings())


def test_load_diffusers_lora_reads_it_back_and_refuses_another_base_or_unfitting_tensors(plugins, tmp_path):
    m = build(plugins, WAN)
    add_lora(m, LoraSettings(rank=4, alpha=8, target_modules=["to_q", "to_v"]))
    y = fvdm_out(trained(m), *inputs())
    save_diffusers_lora(m, tmp_path)
    same = build(plugins, WAN)  # same seed: the same base
    assert load_diffusers_lora(same, tmp_path) == sorted(f"blocks.{i}.attn{j}.to_{c}" for i in (0, 1) for j in (1, 2)
                                                         for c in "qv")
    torch.testing.assert_close(fvdm_out(same, *inputs()), y, rtol=0, atol=0)
    other = build(plugins, WAN, seed=1)
    with pytest.raises(LoraError, match=r"was trained on another base \(fingerprint [0-9a-f]{12}, this model's"):
        load_diffusers_lora(other, tmp_path / LORA_FILE)
    assert not has_lora(other)
    wider = build(plugins, WAN)
    add_lora(wider, LoraSettings(rank=8, target_modules=["to_q", "to_v"]))
    with pytest.raises(LoraError, match="has rank 4, alpha 8.0; the model's LoRA has rank 8"):
        load_diffusers_lora(wider, tmp_path)
    with pytest.raises(LoraError, match="no LoRA file"):
        load_diffusers_lora(same, tmp_path / "absent.safetensors")
    # a diffusers-trained file (no metadata): read as diffusers reads it, alpha = rank
    from safetensors.torch import save_file

    tensors = to_diffusers_lora(m)
    save_file(tensors, str(tmp_path / "plain.safetensors"))
    fresh = build(plugins, WAN)
    load_diffusers_lora(fresh, tmp_path / "plain.safetensors")
    assert fresh.transformer.blocks[0].attn1.to_q.scaling == {"default": 1.0}
    del tensors["transformer.blocks.0.attn1.to_q.lora_B.weight"]
    save_file(tensors, str(tmp_path / "partial.safetensors"), metadata={"fvdm_lora_settings": LoraSettings(
        rank=4, target_modules=["to_q", "to_v"]).model_dump_json()})
    fresh = build(plugins, WAN)
    with pytest.raises(LoraError, match="1 missing .*lora_B"):
        load_diffusers_lora(fresh, tmp_path / "partial.safetensors")
    assert not has_lora(fresh)


def test_unet_video_add_lora_trains_only_the_adapters(plugins):
    m = build(plugins, UNET)
    with torch.no_grad():  # as if pretrained: a fresh unet_video's zero-init residual branches pass no gradient
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    adapted = add_lora(m, LoraSettings(rank=2, target_modules=list(UNET_VIDEO_TARGETS)))
    assert lora_root(m) is m and "down.2.1.attn.qkv" in adapted and "mid1.film" in adapted
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert trainable and all(is_lora_key(n) for n in trainable)
    assert len(trainable) == 2 * len(adapted)
    trained(m).train()
    x = torch.randn(2, 4, 1, 16, 16)
    out = m(x, torch.rand(2, 4) * 999)
    assert out.shape == x.shape
    out.square().mean().backward()
    grads = {n: p.grad for n, p in m.named_parameters() if p.grad is not None}
    assert set(grads) == set(trainable)
    assert all(g.abs().sum() > 0 for g in grads.values())
    with pytest.raises(LoraError, match="diffusers' Wan format; UNetVideo is an fvdm backbone"):
        to_diffusers_lora(m)


def test_settings_validation():
    assert LoraSettings().lora_alpha() == 16.0 and LoraSettings(rank=4, alpha=2).lora_alpha() == 2.0
    for bad in ({"rank": 0}, {"dropout": 1.0}, {"target_modules": []}, {"target_modules": [".to_q"]},
                {"alpha": 0}, {"ranks": 4}):
        with pytest.raises(ValueError):
            LoraSettings(**bad)


def test_oracle_diffusers_converts_the_comfyui_layout_to_the_same_output(plugins, tmp_path):
    """fvdm export --format comfyui writes the original Wan layout (diffusion_model.blocks.N.self_attn.q.lora_down /
    lora_up + alpha); diffusers' own converter for non-diffusers Wan LoRAs (WanPipeline.lora_state_dict) loads it
    into a plain WanTransformer3DModel whose output equals fvdm's LoRA model."""
    from diffusers import WanPipeline
    from safetensors.torch import load_file

    from fvdm.commands.export import export_adapter
    from fvdm.plugins.backbones.pusa_import import COMFYUI_FILE

    m = build(plugins, WAN)
    add_lora(m, LoraSettings(rank=4, alpha=8))
    y1 = fvdm_out(trained(m), *inputs())
    export_adapter(m, tmp_path / "c", spec=WAN, layout="comfyui")
    tensors = load_file(str(tmp_path / "c" / COMFYUI_FILE))
    assert "diffusion_model.blocks.0.self_attn.q.lora_down.weight" in tensors
    assert "diffusion_model.blocks.1.ffn.2.lora_up.weight" in tensors
    assert float(tensors["diffusion_model.blocks.0.cross_attn.o.alpha"]) == 8.0
    assert not any(k.startswith("transformer.") or ".lora_A." in k for k in tensors)
    ref = base_copy(m)
    state = WanPipeline.lora_state_dict(str(tmp_path / "c" / COMFYUI_FILE))
    WanPipeline.load_lora_into_transformer(state, transformer=ref, adapter_name="comfy")
    y2 = diffusers_out(ref, *inputs())
    print(f"oracle max |fvdm - diffusers(comfyui file)| = {(y1 - y2).abs().max().item():.3g}")
    torch.testing.assert_close(y1, y2, rtol=0, atol=1e-5)


def test_backbone_lora_reads_the_comfyui_layout_back(plugins, tmp_path):
    """The original Wan layout fvdm exports (and ComfyUI / musubi-tuner write) merges through backbone.lora with
    its per-module alpha: the model equals the LoRA model it came from."""
    from fvdm.commands.export import export_adapter
    from fvdm.plugins.backbones.pusa_import import COMFYUI_FILE

    from fvdm.core.build import build_model

    build(plugins, WAN).transformer.save_pretrained(tmp_path / "base" / "transformer")
    m = build_model(plugins, {**WAN, "pretrained": str(tmp_path / "base")}, load_pretrained=True).eval()
    add_lora(m, LoraSettings(rank=4, alpha=8))
    y1 = fvdm_out(trained(m), *inputs())
    export_adapter(m, tmp_path / "c", spec=WAN, layout="comfyui")
    merged = build_model(plugins, {**WAN, "pretrained": str(tmp_path / "base"),
                                   "lora": str(tmp_path / "c" / COMFYUI_FILE)}, load_pretrained=True).eval()
    torch.testing.assert_close(fvdm_out(merged, *inputs()), y1, rtol=0, atol=TOL)
    # the export directory itself reads as well as the file in it, as the diffusers layout's directory does
    from_dir = build_model(plugins, {**WAN, "pretrained": str(tmp_path / "base"), "lora": str(tmp_path / "c")},
                           load_pretrained=True).eval()
    torch.testing.assert_close(fvdm_out(from_dir, *inputs()), y1, rtol=0, atol=TOL)
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="holds no LoRA file") as err:
        build_model(plugins, {**WAN, "pretrained": str(tmp_path / "base"), "lora": str(tmp_path / "empty")},
                    load_pretrained=True)
    assert "backbone.lora" in str(err.value) and "pusa" not in str(err.value).lower()


def test_base_fingerprint_after_a_merge_hashes_the_merged_weights(plugins):
    """peft's merge edits weights through ``.data``, which bumps no version counter: the per-process memo must
    not hand back the fingerprint of the weights before the merge."""
    from fvdm.core.lora import hash_tensors, merge_lora

    m = build(plugins, WAN)
    before = base_fingerprint(m)
    add_lora(m, LoraSettings(rank=4))
    trained(m)
    merge_lora(m)
    assert base_fingerprint(m) == hash_tensors(dict(m.state_dict())) != before


def test_backbone_lora_checks_the_base_fingerprint_a_comfyui_export_records(plugins, tmp_path):
    from fvdm.commands.export import export_adapter
    from fvdm.core.build import build_model
    from fvdm.plugins.backbones.pusa_import import COMFYUI_FILE

    build(plugins, WAN).transformer.save_pretrained(tmp_path / "base" / "transformer")
    build(plugins, WAN, seed=1).transformer.save_pretrained(tmp_path / "other" / "transformer")
    m = build_model(plugins, {**WAN, "pretrained": str(tmp_path / "base")}, load_pretrained=True).eval()
    fingerprint = base_fingerprint(m)
    add_lora(m, LoraSettings(rank=4))
    export_adapter(trained(m), tmp_path / "c", spec=WAN, layout="comfyui")
    ok = build_model(plugins, {**WAN, "pretrained": str(tmp_path / "base"), "lora": str(tmp_path / "c")},
                     load_pretrained=True)
    assert ok.pretrained_info["lora"]["base_fingerprint"] == fingerprint  # what adapter_config.json records
    with pytest.raises(Exception, match="trained on another base") as err:
        build_model(plugins, {**WAN, "pretrained": str(tmp_path / "other"), "lora": str(tmp_path / "c" / COMFYUI_FILE)},
                    load_pretrained=True)
    assert "backbone.lora" in str(err.value)
