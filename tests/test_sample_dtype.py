"""Half-precision sampling: ``sample.dtype`` / ``fvdm sample --dtype bf16|fp16|fp32``.

Oracle: diffusers' own ``WanTransformer3DModel.from_pretrained(..., torch_dtype=bfloat16)`` on the same tiny
directory and inputs. It keeps ``_keep_in_fp32_modules`` (time embedder, norms, modulation tables) in float32
and the rest in bf16; fvdm must hold the same dtypes key by key and give the same output. The sampler's state,
schedule and noise stay float32 (the model function casts x to the model's dtype and its output back), as
diffusers' pipelines keep latents and scheduler in float32.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from einops import rearrange, repeat

pytest.importorskip("diffusers")

from fvdm.cli import main  # noqa: E402
from fvdm.core.build import build_model  # noqa: E402
from fvdm.core.plugins import load_plugins  # noqa: E402
from fvdm.plugins.backbones.wan_tiny import make_tiny_wan_dir  # noqa: E402

BF16 = torch.bfloat16


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    return make_tiny_wan_dir(tmp_path_factory.mktemp("wan"), channels=4, vae=False, text=False)


def _inputs(B=2, F=3, H=8, W=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, F, 4, H, W, generator=g), torch.rand(B, F, generator=g) * 1000,
            torch.randn(B, 5, 16, generator=g))


def _diffusers(module, x, timestep, ctx):
    out = module(rearrange(x, "b f c h w -> b c f h w"), timestep, ctx, return_dict=False)[0]
    return rearrange(out, "b c f h w -> b f c h w")


@torch.no_grad()
def test_bf16_wan_equals_diffusers_in_bf16(wan_dir):
    from diffusers import WanTransformer3DModel

    spec = {"name": "wan", "size": "tiny", "in_channels": 4, "pretrained": str(wan_dir)}
    ours = build_model(load_plugins(), spec, load_pretrained=True, dtype=BF16).eval()
    theirs = WanTransformer3DModel.from_pretrained(str(wan_dir), subfolder="transformer", torch_dtype=BF16).eval()
    fp32 = WanTransformer3DModel.from_pretrained(str(wan_dir), subfolder="transformer").eval()
    a, b = ours.transformer.state_dict(), theirs.state_dict()
    assert {k: v.dtype for k, v in a.items()} == {k: v.dtype for k, v in b.items()}  # same mixed precision
    assert {v.dtype for v in a.values()} == {BF16, torch.float32}
    assert all(torch.equal(a[k], b[k]) for k in a)
    x, t, ctx = _inputs()
    n = (x.shape[3] // 2) * (x.shape[4] // 2)  # tokens per frame
    for ts, ref_ts in ((t, repeat(t, "b f -> b (f n)", n=n)),  # per-frame levels vs diffusers' per-token path
                       (t[:, :1].expand_as(t), t[:, 0])):  # one level per clip vs diffusers' scalar path
        got = ours(x.to(BF16), ts, encoder_hidden_states=ctx.to(BF16))
        ref = _diffusers(theirs, x.to(BF16), ref_ts, ctx.to(BF16))
        exact = _diffusers(fp32, x, ref_ts, ctx)
        assert got.dtype == ref.dtype == BF16
        # Same modules, same casts, same op order; only the per-frame broadcast replaces diffusers' per-token
        # copy, so both round the same way: a difference is at most a few bf16 ulps (2^-8 relative, here about
        # 0.008 at the outputs' magnitude ~1-2) from kernels reducing in another order. Both are far from
        # float32 by bf16's own error, which bounds how far apart two correct bf16 runs may be.
        diff = (got.float() - ref.float()).abs().max().item()
        bf16_error = (ref.float() - exact).abs().max().item()
        print(f"bf16 fvdm vs diffusers {diff:.3g}, bf16 vs float32 {bf16_error:.3g}, max |out| "
              f"{ref.float().abs().max().item():.3g}")
        assert diff <= 2 ** -8 * ref.float().abs().max().item() * 2, (diff, bf16_error)
        assert diff <= bf16_error and bf16_error > 1e-3


def _config(tmp_path, wan_dir, **sample):
    cfg = {"name": "wan", "run_root": str(tmp_path / "runs"),
           "data": {"name": "shape_only", "num_frames": 3, "channels": 4, "resolution": 8},
           "backbone": {"name": "wan", "size": "tiny", "pretrained": str(wan_dir)},
           "noise_schedule": "rectified_flow", "vtv": "ptss",
           "sample": {"sampler": {"name": "unipc"}, "steps": 3, **sample}}
    path = tmp_path / "wan.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_sample_dtype_bf16_end_to_end_with_float32_sampler_state(wan_dir, tmp_path, capsys):
    from fvdm.core.config import load_config
    from fvdm.core.loaded import load_from_config
    from fvdm.core.sampling_context import make_context

    cfg_path = _config(tmp_path, wan_dir)
    out = tmp_path / "out"
    assert main(["sample", "--config", str(cfg_path), "--task", "unconditional", "--dtype", "bf16", "--formats",
                 "npz", "--no-progress", "--out", str(out)]) == 0
    meta = json.loads((out / "unconditional.json").read_text())
    assert meta["dtype"] == "bf16"
    # the same through the API: weights in bf16 (diffusers' float32 modules aside), sampler state in float32
    plugins = load_plugins()
    loaded = load_from_config(load_config(str(cfg_path), plugins), plugins, dtype="bf16")
    assert loaded.dtype == BF16
    assert {p.dtype for n, p in loaded.model.transformer.named_parameters() if "blocks.0.ffn" in n} == {BF16}
    seen: dict[str, set] = {"model_in": set(), "model_out": set(), "x": set(), "t": set()}

    def hook(module, args, out):  # returns None: the output is left as it is
        seen["model_in"].add(args[0].dtype)
        seen["model_out"].add(out.dtype)

    loaded.model.register_forward_hook(hook)
    ctx = make_context(loaded, plugins, steps=3, seed=0,
                       callback=lambda info: (seen["x"].add(info["x"].dtype), seen["t"].add(info["t"].dtype)))
    assert ctx.model_dtype == BF16
    with torch.no_grad():
        video = plugins["tasks"].build("unconditional").run(ctx, {})
    assert seen == {"model_in": {BF16}, "model_out": {BF16}, "x": {torch.float32}, "t": {torch.float32}}
    assert video.dtype == torch.float32 and torch.isfinite(video).all()
    # fp32 (the default) is the model as before: no cast anywhere
    full = load_from_config(load_config(str(cfg_path), plugins), plugins)
    assert full.dtype == torch.float32 and make_context(full, plugins).model_dtype is None
    assert {p.dtype for p in full.model.parameters()} == {torch.float32}


def test_sample_dtype_from_the_config_and_fp16(wan_dir, tmp_path):
    out = tmp_path / "out"
    assert main(["sample", "--config", str(_config(tmp_path, wan_dir, dtype="fp16")), "--task", "unconditional",
                 "--formats", "npz", "--no-progress", "--out", str(out)]) == 0
    assert json.loads((out / "unconditional.json").read_text())["dtype"] == "fp16"


def test_bad_dtype_is_one_line_naming_the_field_and_the_choices(wan_dir, tmp_path, capsys):
    cfg_path = _config(tmp_path, wan_dir)
    assert main(["sample", "--config", str(cfg_path), "--task", "unconditional", "--dtype", "int8",
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[0]
    assert "sample.dtype (--dtype) 'int8'" in err and "fp32, bf16, fp16" in err
    assert not (tmp_path / "out").exists()
    bad = _config(tmp_path, wan_dir, dtype="int8")
    assert main(["sample", "--config", str(bad), "--task", "unconditional", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "sample.dtype" in err and "'fp32', 'bf16' or 'fp16'" in err


def test_adding_sample_dtype_keeps_existing_config_hashes():
    from fvdm.core.config import canonical_dict, config_hash, parse_config

    base = {"name": "x", "sample": {"steps": 7}}
    plain = parse_config(base)
    assert "dtype" not in canonical_dict(plain)["sample"]  # the canonical dict as it was before the field
    assert config_hash(parse_config({**base, "sample": {"steps": 7, "dtype": "fp32"}})) == config_hash(plain)
    assert config_hash(parse_config({**base, "sample": {"steps": 7, "dtype": "bf16"}})) != config_hash(plain)


def test_a_checkpoint_samples_in_bf16_with_its_weights_cast_once_loaded(wan_dir, tmp_path):
    """``--checkpoint`` with ``--dtype bf16``: the float32 checkpoint is loaded, then cast as diffusers holds it."""
    from fvdm.core.loaded import load_for_sampling

    cfg = yaml.safe_load(_config(tmp_path, wan_dir).read_text())
    cfg["data"] = {"name": "moving_digits", "num_frames": 3, "resolution": 16, "num_clips": 4}
    cfg["backbone"]["in_channels"] = 1
    cfg["train"] = {"steps": 1, "batch_size": 2, "log_every": 1, "ckpt_every": 1, "tensorboard": False}
    one_channel = make_tiny_wan_dir(tmp_path / "wan1", channels=1, vae=False, text=False)
    cfg["backbone"]["pretrained"] = str(one_channel)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert main(["train", str(path), "--run-dir", str(run), "--no-progress"]) == 0
    last = run / "checkpoints" / "last.pt"
    out = tmp_path / "out"
    assert main(["sample", "--checkpoint", str(last), "--task", "unconditional", "--dtype", "bf16", "--formats",
                 "npz", "--no-progress", "--out", str(out)]) == 0
    assert json.loads((out / "unconditional.json").read_text())["dtype"] == "bf16"
    loaded = load_for_sampling(last, load_plugins(), dtype="bf16")
    state = loaded.model.transformer.state_dict()
    assert state["blocks.0.ffn.net.0.proj.weight"].dtype == BF16 and state["scale_shift_table"].dtype == torch.float32
