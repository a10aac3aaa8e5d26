"""unet_video: the per-frame-timestep video U-Net (shapes, init, per-frame conditioning, causality, CFG)."""

from __future__ import annotations

import pytest
import torch

from fvdm.core.plugins import load_plugins
from fvdm.core.sampling import make_model_fn
from fvdm.plugins.backbones.unet import UNetVideo


def _model(**kw) -> UNetVideo:
    torch.manual_seed(0)
    cfg = dict(in_channels=1, input_size=16, num_frames=6, base_channels=16, channel_mult=[1, 2], temporal_levels=[1])
    m = UNetVideo(UNetVideo.Config(**{**cfg, **kw}))
    # Residual branches and the output start at exactly zero; perturb every weight so the tests see real mixing.
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.eval()


def test_registered_and_zero_at_init():
    reg = load_plugins(entry_points=False)["backbones"]
    m = reg.build({"name": "unet_video", "in_channels": 3, "input_size": 32, "num_frames": 8, "learn_sigma": True})
    x = torch.randn(1, 8, 3, 32, 32)
    out = m(x, torch.randint(0, 1000, (1, 8)))
    assert out.shape == (1, 8, 6, 32, 32) and m.out_channels == 6
    assert torch.count_nonzero(out) == 0  # zero-initialised output layer: the model starts predicting 0


def test_each_frame_is_conditioned_on_its_own_timestep():
    m = _model()
    x = torch.randn(2, 6, 1, 16, 16)
    t = torch.full((2, 6), 500.0)
    base = m(x, t)
    t2 = t.clone()
    t2[0, 3] = 10.0
    diff = (m(x, t2) - base).abs().amax(dim=(2, 3, 4))  # (B, F)
    assert diff[1].max() == 0  # the other clip is untouched
    assert diff[0, 3] > 10 * diff[0, [0, 1, 2, 4, 5]].max()  # frame 3 changes most; others only via attention
    # a scalar timestep per clip is the same as that level broadcast to every frame
    torch.testing.assert_close(m(x, torch.full((2,), 500.0)), base, rtol=0, atol=0)


def test_causal_temporal_attention_hides_the_future():
    m = _model(temporal_attention="causal")
    x = torch.randn(1, 6, 1, 16, 16)
    t = torch.randint(0, 1000, (1, 6)).float()
    x2 = x.clone()
    x2[:, 4:] = torch.randn_like(x2[:, 4:])
    a, b = m(x, t), m(x2, t)
    torch.testing.assert_close(a[:, :4], b[:, :4], rtol=0, atol=1e-6)
    assert (a[:, 4:] - b[:, 4:]).abs().max() > 1e-3
    full = _model()
    assert (full(x, t)[:, :4] - full(x2, t)[:, :4]).abs().max() > 1e-4  # full attention does see the future


def test_batch_elements_are_independent_and_b1_shape():
    m = _model()
    x = torch.randn(3, 6, 1, 16, 16)
    t = torch.randint(0, 1000, (3, 6)).float()
    out = m(x, t)
    torch.testing.assert_close(m(x[1:2], t[1:2]), out[1:2], rtol=1e-5, atol=1e-6)


def test_cfg_matches_two_passes():
    """Classifier-free guidance (fvdm.core.sampling.make_model_fn) on the U-Net: one doubled batch = two passes."""
    m = _model(num_classes=4)
    x = torch.randn(2, 6, 1, 16, 16)
    n = torch.randint(0, 1000, (2, 6))
    t = n.float()
    y = torch.tensor([1, 3])
    cond = m(x, t, y)
    uncond = m(x, t, torch.full((2,), 4))
    sched = load_plugins()["noise_schedules"].build({"name": "ddpm", "learn_sigma": False})
    guided = make_model_fn(m, sched, y=y, cfg_scale=3.0)(x, n.float() / 999)  # timestep_input -> n
    torch.testing.assert_close(guided, uncond + 3.0 * (cond - uncond), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bad, match", [
    (dict(input_size=18), "divisible by 4"),
    (dict(temporal_levels=[5]), "out of range"),
    (dict(base_channels=12), "divisible by groups"),
])
def test_config_errors_name_the_fix(bad, match):
    with pytest.raises(ValueError, match=match):
        UNetVideo.Config(**{"base_channels": 16, "channel_mult": [1, 2], "temporal_levels": [1], **bad})


def test_input_errors():
    m = _model()
    with pytest.raises(ValueError, match="num_frames=6"):
        m(torch.randn(1, 7, 1, 16, 16), torch.zeros(1, 7))
    with pytest.raises(ValueError, match="per-frame"):
        m(torch.randn(1, 6, 1, 16, 16), torch.zeros(1, 5))
    with pytest.raises(ValueError, match="unconditional"):
        m(torch.randn(1, 6, 1, 16, 16), torch.zeros(1, 6), torch.tensor([0]))


def test_temporal_kernel_one_frame_wide_is_the_2d_block_and_three_mixes_neighbours():
    """temporal_kernel 3 with only the centre frame of each 3-D kernel is the 2-D model exactly (oracle: the
    2-D U-Net with the same weights); the full kernel reads the neighbouring frames, and only them, per block."""
    flat, deep = _model(), _model(temporal_kernel=3)
    x, t = torch.randn(2, 6, 1, 16, 16), torch.rand(2, 6) * 999
    with torch.no_grad():
        deep_sd = deep.state_dict()
        for name, w in flat.state_dict().items():
            if deep_sd[name].shape == w.shape:
                deep_sd[name].copy_(w)
            else:  # conv1 of a residual block: (O, I, 3, 3) -> (O, I, 3, 3, 3), centre frame only
                deep_sd[name].zero_()[:, :, 1] = w
        deep.load_state_dict(deep_sd)
        torch.testing.assert_close(deep(x, t), flat(x, t), rtol=1e-5, atol=1e-5)
    m = _model(temporal_kernel=3, temporal_levels=[])
    for layer in (m.mid_temporal,):  # no temporal attention at all: frames meet only in the 3-D kernels
        torch.nn.init.zeros_(layer.attn.proj.weight)
        torch.nn.init.zeros_(layer.attn.proj.bias)
    xg = x.clone().requires_grad_(True)
    grad = torch.autograd.grad(m(xg, t)[:, 0].sum(), xg)[0].abs().sum(dim=(0, 2, 3, 4))  # (F,)
    assert (grad[:5] > 0).all()  # 2 levels x (down, mid, up) blocks: frame 0 reaches back to frame 4
    assert sum(p.numel() for p in m.parameters()) > sum(p.numel() for p in _model(temporal_levels=[]).parameters())


def test_temporal_kernel_refusals():
    with pytest.raises(ValueError, match="temporal_kernel=2 must be odd"):
        UNetVideo.Config(temporal_kernel=2)
    with pytest.raises(ValueError, match="sees the next frames"):
        UNetVideo.Config(temporal_kernel=3, temporal_attention="causal")


def test_temporal_kernel_at_its_default_leaves_the_config_hash_as_before_it_existed():
    """Runs made before temporal_kernel existed keep their directory and resume: at 1 it is not in the
    canonical config; at 3 it is (another model)."""
    from fvdm.core.config import canonical_dict, parse_config

    plugins = load_plugins(entry_points=False)
    base = {"name": "x", "data": {"name": "moving_digits", "num_frames": 4, "resolution": 16},
            "backbone": {"name": "unet_video"}}
    plain = canonical_dict(parse_config(base), plugins)
    assert "temporal_kernel" not in plain["backbone"] and "temporal_levels" in plain["backbone"]
    explicit = canonical_dict(parse_config({**base, "backbone": {"name": "unet_video", "temporal_kernel": 1}}), plugins)
    assert explicit == plain
    deep = canonical_dict(parse_config({**base, "backbone": {"name": "unet_video", "temporal_kernel": 3}}), plugins)
    assert deep["backbone"]["temporal_kernel"] == 3


def test_spacetime_attention_is_full_attention_over_every_token_of_the_clip():
    """Oracle: one softmax attention over all F*H*W tokens written out in float64 einsums, with the sin-cos
    (frame, row, column) positions added before the projections and not to the residual stream."""
    from einops import rearrange

    from fvdm.plugins.backbones.unet import SpaceTimeAttention, spacetime_positions

    torch.manual_seed(0)
    B, F, C, H, W, heads = 2, 3, 16, 4, 5, 4
    layer = SpaceTimeAttention(C, heads).double()
    torch.nn.init.normal_(layer.attn.proj.weight, std=0.2)
    x = torch.randn(B * F, C, H, W, dtype=torch.float64)
    tok = rearrange(x, "(b f) c h w -> b (f h w) c", b=B)
    pos = spacetime_positions(F, H, W, C, x.device).double()
    q, k, v = rearrange(layer.attn.qkv(layer.attn.norm(tok + pos)), "b n (three h d) -> three b h n d",
                        three=3, h=heads)
    att = torch.softmax(torch.einsum("bhnd,bhmd->bhnm", q, k) / (C // heads) ** 0.5, dim=-1)
    want = tok + layer.attn.proj(rearrange(torch.einsum("bhnm,bhmd->bhnd", att, v), "b h n d -> b n (h d)"))
    got = rearrange(layer(x, B), "(b f) c h w -> b (f h w) c", b=B)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(pos[0], pos[H * W]) and not torch.allclose(pos[0], pos[1])  # frames and pixels apart


def test_spacetime_attention_moves_content_to_other_pixels_of_other_frames():
    """The one step per-pixel temporal attention cannot take: pixel (0, 0) of frame 0 reads pixel (3, 3) of
    frame 2. Temporal attention meets only the same pixel of other frames; space-time attention meets all."""
    from fvdm.plugins.backbones.unet import SpaceTimeAttention, TemporalAttention

    torch.manual_seed(0)
    B, F, C = 1, 3, 16
    x = torch.randn(B * F, C, 4, 4, requires_grad=True)

    def reach(layer: torch.nn.Module) -> float:
        torch.nn.init.normal_(layer.attn.proj.weight, std=0.2)
        (g,) = torch.autograd.grad(layer(x, B)[0, :, 0, 0].sum(), x)  # frame 0, pixel (0, 0)
        return float(g[2, :, 3, 3].abs().sum())

    assert reach(TemporalAttention(C, 4, causal=False)) == 0.0
    assert reach(SpaceTimeAttention(C, 4)) > 1e-3


def test_spacetime_model_grows_from_weights_without_it_and_starts_as_them(tmp_path):
    """A base saved without spacetime_levels loads into a model with them: the new modules keep their zero output
    projection, so the grown model computes the base's function (to float32 rounding of the other memory layouts),
    and the provenance names what was grown. A folder holding part of such a module is refused."""
    import json

    from safetensors.torch import save_file

    from fvdm.core.build import read_pretrained
    from fvdm.core.pretrained import PretrainedError

    base = _model()
    save_file(base.state_dict(), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"backbone": "unet_video"}))
    torch.manual_seed(1)
    cfg = dict(in_channels=1, input_size=16, num_frames=6, base_channels=16, channel_mult=[1, 2], temporal_levels=[1])
    grown = UNetVideo(UNetVideo.Config(**cfg, spacetime_levels=[1])).eval()
    info = read_pretrained(grown, {"name": "unet_video", "pretrained": str(tmp_path)})
    assert info["grown"] == sorted(grown.growth_modules()) and len(info["grown"]) == 4  # 1 down, mid, 2 up
    x, t = torch.randn(2, 6, 1, 16, 16), torch.rand(2, 6) * 999
    with torch.no_grad():
        torch.testing.assert_close(grown(x, t), base(x, t), rtol=1e-5, atol=1e-5)
    assert "grown" not in read_pretrained(_model(), {"name": "unet_video", "pretrained": str(tmp_path)})
    part = {**base.state_dict(), **{k: v for k, v in grown.state_dict().items() if k.startswith("mid_spacetime.attn.qkv")}}
    save_file(part, str(tmp_path / "model.safetensors"))
    with pytest.raises(PretrainedError, match="missing keys .*mid_spacetime"):
        read_pretrained(UNetVideo(UNetVideo.Config(**cfg, spacetime_levels=[1])), {"name": "unet_video",
                                                                                  "pretrained": str(tmp_path)})


def test_spacetime_levels_refusals_and_hash():
    from fvdm.core.config import canonical_dict, parse_config

    with pytest.raises(ValueError, match=r"spacetime_levels \[3\] out of range"):
        UNetVideo.Config(spacetime_levels=[3])
    with pytest.raises(ValueError, match="causal model must not"):
        UNetVideo.Config(spacetime_levels=[1], temporal_attention="causal")
    plugins = load_plugins(entry_points=False)
    base = {"name": "x", "data": {"name": "moving_digits", "num_frames": 4, "resolution": 16},
            "backbone": {"name": "unet_video"}}
    plain = canonical_dict(parse_config(base), plugins)
    explicit = canonical_dict(parse_config({**base, "backbone": {"name": "unet_video", "spacetime_levels": []}}),
                              plugins)
    assert explicit == plain and "spacetime_levels" not in plain["backbone"]
