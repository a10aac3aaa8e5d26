"""Cached causal rollout: equal to the same rollout recomputing the past (1e-5), the cache bounded by the
window, the past actually read, and one-line errors for backbones that cannot cache."""

from __future__ import annotations

import pytest
import torch

from fvdm.core.plugins import load_plugins
from fvdm.core.sampling_context import build_context

C, S = 1, 16


@pytest.fixture(scope="module")
def P():
    return load_plugins(entry_points=False)


def unet(P, *, num_classes=0, **kw):
    cfg = {"name": "unet_video", "in_channels": C, "input_size": S, "num_frames": 4, "base_channels": 16,
           "channel_mult": [1, 2], "temporal_levels": [0, 1], "temporal_attention": "causal",
           "temporal_positions": "rope", "temporal_window": 3, "num_classes": num_classes, **kw}
    m = P["backbones"].build(cfg)
    g = torch.Generator().manual_seed(0)
    for p in m.parameters():  # random weights everywhere (the zero-initialised output would hide everything)
        p.data = torch.randn(p.shape, generator=g) * 0.05
    return m.eval()


def ctx(P, model, sampler="ddim", cfg_scale=1.0, num_classes=0):
    return build_context(P, model=model, schedule=P["noise_schedules"].build({"name": "ddpm", "learn_sigma": False}),
                         sampler={"name": sampler, "clip_x0": 1.0}, matrix="standard", num_frames=4,
                         shape=(C, S, S), steps=3, batch_size=2, cfg_scale=cfg_scale, num_classes=num_classes,
                         seed=1)


def rollout(P, model, cache, inputs, **kw):
    chunk = kw.pop("chunk", 1)
    task = P["tasks"].build({"name": "causal_rollout", "cache": cache, "chunk": chunk})
    return task.run(ctx(P, model, **kw), inputs)


@pytest.mark.parametrize("chunk", [1, 2])
@pytest.mark.parametrize("sampler", ["ddim", "unipc"])
def test_cached_equals_recomputed(P, chunk, sampler):
    model = unet(P)
    start = torch.rand(2, 2, C, S, S) * 2 - 1
    for inputs in ({"num_frames": 9}, {"num_frames": 9, "video": start}):
        a = rollout(P, model, True, inputs, chunk=chunk, sampler=sampler)
        b = rollout(P, model, False, inputs, chunk=chunk, sampler=sampler)
        assert a.shape == (2, 9, C, S, S)
        assert (a - b).abs().max().item() < 1e-5
        assert a.abs().max().item() > 0.1  # not a trivially zero output
        if "video" in inputs:
            assert torch.equal(a[:, :2], start)


def test_cached_equals_recomputed_with_class_guidance(P):
    model = unet(P, num_classes=3)
    inputs = {"num_frames": 6, "labels": torch.tensor([0, 2])}
    a = rollout(P, model, True, inputs, cfg_scale=2.0, num_classes=3)
    b = rollout(P, model, False, inputs, cfg_scale=2.0, num_classes=3)
    assert (a - b).abs().max().item() < 1e-5


def test_the_past_is_read_and_the_cache_is_bounded(P):
    model = unet(P)
    start = torch.rand(2, 1, C, S, S) * 2 - 1
    a = rollout(P, model, True, {"num_frames": 4, "video": start})
    b = rollout(P, model, True, {"num_frames": 4, "video": -start})
    assert not torch.allclose(a[:, 1], b[:, 1])  # frame 1 depends on the given frame 0
    cache = model.new_kv_cache()
    x, t = torch.randn(1, 1, C, S, S), torch.zeros(1, 1)
    for _ in range(5):
        model(x, t, kv_cache=cache, commit=True)
    assert cache.length == 5
    assert {k.shape[1] for k, _ in cache.kv.values()} == {2}  # window 3: the last 2 frames are all a frame sees


def test_backbones_that_cannot_cache_fail_in_one_line(P):
    full = unet(P, temporal_attention="full", temporal_window=None)
    with pytest.raises(ValueError, match="needs causal temporal attention with relative positions.*drop --cache"):
        rollout(P, full, True, {"num_frames": 3})
    absolute = unet(P, temporal_positions="absolute")
    with pytest.raises(ValueError, match="temporal_positions: rope"):
        absolute.new_kv_cache()
    latte = P["backbones"].build({"name": "latte_tiny", "in_channels": C, "input_size": S, "num_frames": 4})
    with pytest.raises(ValueError, match="LatteModel has none|has none"):
        rollout(P, latte, True, {"num_frames": 3})
    with pytest.raises(ValueError, match="temporal_window needs temporal_attention: causal"):
        unet(P, temporal_attention="full")
    sampling = ctx(P, unet(P))
    sampling.history_guidance, sampling.history_level = 2.0, 0.5
    with pytest.raises(ValueError, match="drops the past \\(history level 1\\)"):
        P["tasks"].build("causal_rollout").run(sampling, {"num_frames": 3})


def test_history_guidance_drops_the_past_with_and_without_cache(P):
    model = unet(P)
    start = torch.rand(2, 1, C, S, S) * 2 - 1
    out = {}
    for cache in (True, False):
        for w in (1.0, 3.0):
            sampling = ctx(P, model)
            sampling.history_guidance = w
            task = P["tasks"].build({"name": "causal_rollout", "cache": cache})
            out[cache, w] = task.run(sampling, {"num_frames": 5, "video": start})
    assert (out[True, 3.0] - out[False, 3.0]).abs().max().item() < 1e-5
    assert not torch.allclose(out[True, 3.0], out[True, 1.0])  # the guidance changed the frames after the first
    assert torch.equal(out[True, 3.0][:, 0], start[:, 0])
