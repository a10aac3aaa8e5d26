"""wan / skyreels_v2_df: per-frame modulation equals diffusers' own forward (the oracle), shapes, boundary errors.

Oracles, on tiny random configs (seeded, offline), float32 (1e-5) and float64 (1e-10):
  (a) every frame at one level   == diffusers' WanTransformer3DModel with scalar timesteps (B,)
  (b) per-frame levels (B, F)     == diffusers' WanTransformer3DModel with per-token timesteps (B, F*N)
  (c) skyreels_v2_df              == diffusers' SkyReelsV2Transformer3DModel, enable_diffusion_forcing=True
The oracle is the wrapped diffusers module itself, run through its own forward: same weights by construction.
"""

from __future__ import annotations

import pytest
import torch
from einops import rearrange, repeat
from pydantic import ValidationError

pytest.importorskip("diffusers")

from fvdm.core.plugins import load_plugins  # noqa: E402
from fvdm.plugins.backbones.skyreels_v2 import SkyReelsV2DF  # noqa: E402
from fvdm.plugins.backbones.wan import WanBackbone  # noqa: E402

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
DTYPES = [torch.float32, torch.float64]
TEXT_DIM = 16  # the tiny sizes' text_dim


def _wan(dtype=torch.float32, **kw) -> WanBackbone:
    torch.manual_seed(0)
    return WanBackbone(WanBackbone.Config(size="tiny", **kw)).to(dtype).eval()


def _sky(dtype=torch.float32, **kw) -> SkyReelsV2DF:
    torch.manual_seed(0)
    return SkyReelsV2DF(SkyReelsV2DF.Config(size="tiny", **kw)).to(dtype).eval()


def _inputs(B=2, F=3, H=8, W=6, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, F, 4, H, W, generator=g, dtype=dtype)
    t = torch.rand(B, F, generator=g, dtype=dtype) * 1000  # Wan's flow timesteps in [0, 1000]
    ctx = torch.randn(B, 5, TEXT_DIM, generator=g, dtype=dtype)
    return x, t, ctx


def _diffusers(module, x, timestep, ctx, **kw) -> torch.Tensor:
    """diffusers' own forward, in fvdm's layout."""
    out = module(rearrange(x, "b f c h w -> b c f h w"), timestep, ctx, return_dict=False, **kw)[0]
    return rearrange(out, "b c f h w -> b f c h w")


def _close(a, b, dtype):
    torch.testing.assert_close(a, b, rtol=0, atol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@torch.no_grad()
def test_a_one_level_for_all_frames_equals_diffusers_scalar_timesteps(dtype):
    m = _wan(dtype)
    x, _, ctx = _inputs(dtype=dtype)
    level = torch.tensor([137.5, 912.0], dtype=dtype)  # (B,)
    ours = m(x, repeat(level, "b -> b f", f=x.shape[1]), encoder_hidden_states=ctx)
    _close(ours, _diffusers(m.transformer, x, level, ctx), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@torch.no_grad()
def test_b_per_frame_levels_equal_diffusers_per_token_timesteps(dtype):
    m = _wan(dtype)
    x, t, ctx = _inputs(dtype=dtype)
    n = (x.shape[3] // 2) * (x.shape[4] // 2)  # tokens per frame (patch 1x2x2)
    ours = m(x, t, encoder_hidden_states=ctx)
    ref = _diffusers(m.transformer, x, repeat(t, "b f -> b (f n)", n=n), ctx)
    _close(ours, ref, dtype)
    # the oracle sees the per-frame levels: one level for all frames gives another output
    assert (ours - _diffusers(m.transformer, x, t[:, 0], ctx)).abs().max() > 1e-3


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal_block_size", [1, 2])
@torch.no_grad()
def test_c_skyreels_equals_diffusers_diffusion_forcing(dtype, causal_block_size):
    m = _sky(dtype, causal_block_size=causal_block_size, fps=24)
    x, t, ctx = _inputs(F=4, dtype=dtype)
    ours = m(x, t, encoder_hidden_states=ctx)
    # diffusers' DF forward with the fps embedding raises for batch > 1, so the oracle runs clip by clip
    ref = torch.cat([_diffusers(m.transformer, x[i:i + 1], t[i:i + 1], ctx[i:i + 1], enable_diffusion_forcing=True,
                                fps=[1]) for i in range(x.shape[0])])
    _close(ours, ref, dtype)


@torch.no_grad()
def test_c_skyreels_fps_and_causal_blocks_change_the_output():
    x, t, ctx = _inputs(F=4)
    base = _sky(fps=24)(x, t, encoder_hidden_states=ctx)
    assert (base - _sky(fps=16)(x, t, encoder_hidden_states=ctx)).abs().max() > 1e-4
    causal = _sky(causal_block_size=2)
    x2 = x.clone()
    x2[:, 2:] = torch.randn_like(x2[:, 2:])  # change the second block of 2 frames only
    a, b = causal(x, t, encoder_hidden_states=ctx), causal(x2, t, encoder_hidden_states=ctx)
    torch.testing.assert_close(a[:, :2], b[:, :2], rtol=0, atol=1e-6)  # the first block cannot see it
    assert (a[:, 2:] - b[:, 2:]).abs().max() > 1e-3


@torch.no_grad()
def test_output_shape_and_batch_of_one_keeps_per_frame_levels():
    m = _wan()
    x, t, ctx = _inputs(B=1, F=5, H=4, W=10)
    out = m(x, t, encoder_hidden_states=ctx)
    assert out.shape == (1, 5, 4, 4, 10) and m.out_channels == 4
    ref = _diffusers(m.transformer, x, repeat(t, "b f -> b (f n)", n=2 * 5), ctx)
    _close(out, ref, torch.float32)  # B = 1: t (1, F) must not be flattened into one level per clip
    t_one = t.clone()
    t_one[0, 2] = 3.0
    diff = (m(x, t_one, encoder_hidden_states=ctx) - out).abs().amax(dim=(0, 2, 3, 4))  # (F,)
    assert diff[2] > 10 * diff[[0, 1, 3, 4]].max() > 0  # frame 2 changes most; the others via attention


@torch.no_grad()
def test_missing_text_is_one_zero_token_or_an_error():
    m = _wan()
    x, t, _ = _inputs()
    out = m(x, t)
    n = 12  # tokens per frame
    zeros = torch.zeros(2, 7, TEXT_DIM)  # any number of zero tokens attends the same
    torch.testing.assert_close(out, _diffusers(m.transformer, x, repeat(t, "b f -> b (f n)", n=n), zeros),
                               rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="encoder_hidden_states .* is required"):
        _wan(missing_text="error")(x, t)


def test_boundary_errors_are_one_line_and_name_the_fix():
    m = _wan()
    x, t, ctx = _inputs()
    cases = [
        (lambda: m(x, t[:, 0], encoder_hidden_states=ctx), r"t must be per-frame \(B, F\) = \(2, 3\), got \(2,\)"),
        (lambda: m(x, t[:, :2], encoder_hidden_states=ctx), r"got \(2, 2\); one level per clip"),
        (lambda: m(x, t.flatten(), encoder_hidden_states=ctx), r"t must be per-frame"),
        (lambda: m(x[..., :7, :], t, encoder_hidden_states=ctx), r"does not fit patch size \(1, 2, 2\)"),
        (lambda: m(x[:, :, :3], t, encoder_hidden_states=ctx), r"has 3 channels"),
        (lambda: m(x, t, torch.zeros(2, dtype=torch.long), encoder_hidden_states=ctx), r"not class labels y"),
        (lambda: m(x, t, encoder_hidden_states=ctx[..., :8]), r"must be \(B, L, text_dim\)"),
        (lambda: m(x, t.long(), encoder_hidden_states=ctx), r"float model timesteps"),
        (lambda: m(torch.randn(1, 40, 4, 4, 4), torch.rand(1, 40), encoder_hidden_states=ctx[:1]),
         r"exceed rope_max_seq_len=32"),
        (lambda: _sky(causal_block_size=2)(x, t, encoder_hidden_states=ctx), r"not a multiple of causal_block_size"),
    ]
    for call, pattern in cases:
        with pytest.raises((ValueError, TypeError), match=pattern) as info:
            call()
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("kw, pattern", [
    (dict(size="wan2.1-t2v-1.3b", in_channels=4), "takes 16-channel latents"),
    (dict(size="wan2.2-ti2v-5b", in_channels=16), "takes 48-channel latents"),
    (dict(size="tiny", num_classes=10), "num_classes: 0"),
    (dict(size="tiny", learn_sigma=True), "flow velocity"),
    (dict(size="wan2.1-t2v-7b"), "size"),
])
def test_config_refuses_what_cannot_run(kw, pattern):
    with pytest.raises(ValidationError, match=pattern):
        WanBackbone.Config(**kw)


def test_sizes_table_matches_the_public_configs():
    from fvdm.plugins.backbones.skyreels_v2 import SKYREELS_V2_DF_SIZES
    from fvdm.plugins.backbones.wan import WAN_SIZES

    # inner dim, layers, ffn, channels of the diffusers-format checkpoints (convert_wan_to_diffusers.py)
    want = {"wan2.1-t2v-1.3b": (1536, 30, 8960, 16), "wan2.1-t2v-14b": (5120, 40, 13824, 16),
            "wan2.2-ti2v-5b": (3072, 30, 14336, 48)}
    assert {k: (s.dim, s.layers, s.ffn_dim, s.channels) for k, s in WAN_SIZES.items() if s.repo} == want
    assert [(s.dim, s.layers, fps) for s, fps in SKYREELS_V2_DF_SIZES.values()][:3] == [
        (1536, 30, True), (5120, 40, False), (5120, 40, False)]


def test_registered_with_the_latent_extra_and_built_from_a_spec():
    reg = load_plugins(entry_points=False)["backbones"]
    for name in ("wan", "skyreels_v2_df"):
        entry = reg.get(name)
        assert entry.extra == "latent"
    m = reg.build({"name": "wan", "size": "tiny", "in_channels": 3, "input_size": 8, "num_frames": 4})
    assert isinstance(m, WanBackbone) and m.in_channels == m.out_channels == 3
    assert type(m.transformer).__name__ == "WanTransformer3DModel"  # the real diffusers module, wrapped


@torch.no_grad()
def test_diffusers_directory_loads_unchanged(tmp_path):
    """``pretrained: DIR`` through the build reads a diffusers-written sharded directory into the wrapped model."""
    from diffusers import WanTransformer3DModel

    from fvdm.core.build import build_model
    from fvdm.core.plugins import load_plugins
    from fvdm.plugins.backbones.wan_common import diffusers_kwargs
    from fvdm.plugins.backbones.wan import WAN_SIZES

    torch.manual_seed(3)
    ref = WanTransformer3DModel(**diffusers_kwargs(WAN_SIZES["tiny"], 4)).eval()
    ref.save_pretrained(tmp_path / "transformer", max_shard_size="20KB")  # several shards and an index
    spec = {"name": "wan", "size": "tiny", "in_channels": 4, "pretrained": str(tmp_path)}
    m = build_model(load_plugins(), spec, load_pretrained=True).eval()
    assert m.pretrained_info["fingerprint"] and m.pretrained_info["subfolder"] == "transformer"
    x, t, ctx = _inputs()
    level = t[:, :1].expand(-1, 3)
    _close(m(x, level, encoder_hidden_states=ctx), _diffusers(ref, x, level[:, 0], ctx), torch.float32)
    random_init = build_model(load_plugins(), spec, load_pretrained=False)  # a checkpoint's path: DIR not read
    assert not hasattr(random_init, "pretrained_info")
    torch.manual_seed(3)
    one_layer = {**diffusers_kwargs(WAN_SIZES["tiny"], 4), "num_layers": 1}
    WanTransformer3DModel(**one_layer).save_pretrained(tmp_path / "one")
    with pytest.raises(Exception, match=r"num_layers 1 \(want 2\)"):
        build_model(load_plugins(), {**spec, "subfolder": "one"}, load_pretrained=True)
    # a directory of another of fvdm's sizes is named by that size
    with pytest.raises(Exception, match=r"it looks like size 'tiny', not a diffusers WanTransformer3DModel"):
        build_model(load_plugins(), {**spec, "size": "small"}, load_pretrained=True)


def test_gradient_checkpointing_gives_the_same_gradients():
    x, t, ctx = _inputs()
    grads = []
    for ckpt in (False, True):
        m = _wan(gradient_checkpointing=ckpt).train()
        m(x, t, encoder_hidden_states=ctx).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-6)
    assert grads[0].abs().sum() > 0
