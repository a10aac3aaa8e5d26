"""Zero-shot tasks: given frames are kept exactly (m = 0), long-video windows chain exactly, clear errors."""

from __future__ import annotations

import math

import pytest
import torch

from fvdm.core.plugins import load_plugins
from fvdm.core.tensor import append_dims
from fvdm.tasks.base import num_windows
from fvdm.core.sampling_context import build_context

C, H, W = 1, 4, 4


@pytest.fixture(scope="module")
def P():
    return load_plugins(entry_points=False)


class Toy(torch.nn.Module):
    """Cheap denoiser that mixes frames (so context matters) and depends on t and y."""

    def __init__(self, num_classes: int = 0):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x, t_in, y=None):
        out = 0.5 * x + 0.3 * x.mean(dim=1, keepdim=True) + 1e-4 * append_dims(t_in, x.ndim)
        if y is not None:
            out = out + 0.1 * y.float()[:, None, None, None, None]
        return out


def ctx_for(P, *, sched="ddpm", sampler="ddim", F=8, steps=6, batch=2, num_classes=0, cfg_scale=1.0, seed=0):
    schedule = P["noise_schedules"].build({"name": sched, **({"learn_sigma": False} if sched == "ddpm" else {})})
    return build_context(P, model=Toy(num_classes), schedule=schedule, sampler=sampler, matrix="standard",
                         num_frames=F, shape=(C, H, W), steps=steps, batch_size=batch, cfg_scale=cfg_scale,
                         num_classes=num_classes, seed=seed)


MODES = [{}, {"mode": "vanilla_replacement"}, {"stabilization": 0.1}]


@pytest.mark.parametrize("opts", MODES)
@pytest.mark.parametrize("sched,sampler", [("ddpm", "ddim"), ("ddpm", "ddpm"), ("rectified_flow", "euler")])
def test_given_frames_are_exact(P, opts, sched, sampler):
    s = ctx_for(P, sched=sched, sampler=sampler)
    video = torch.rand(2, 8, C, H, W) * 2 - 1
    # image_to_video
    out = P["tasks"].build({"name": "image_to_video", **opts}).run(s, {"image": video[:, 0]})
    assert out.shape == (2, 8, C, H, W) and torch.equal(out[:, 0], video[:, 0])
    assert torch.isfinite(out).all()
    # interpolation: first+last, then arbitrary keyframes
    out = P["tasks"].build({"name": "interpolation", **opts}).run(s, {"first": video[:, 0], "last": video[:, -1]})
    assert torch.equal(out[:, 0], video[:, 0]) and torch.equal(out[:, -1], video[:, -1])
    out = P["tasks"].build({"name": "interpolation", **opts}).run(s, {"keyframes": video[:, [1, 4, 6]],
                                                                      "positions": [1, 4, 6]})
    assert torch.equal(out[:, [1, 4, 6]], video[:, [1, 4, 6]])
    # infill: any subset
    mask = torch.tensor([False, True, False, False, True, True, False, False])
    out = P["tasks"].build({"name": "infill", **opts}).run(s, {"video": video, "mask": mask})
    assert torch.equal(out[:, mask], video[:, mask])
    assert not torch.equal(out[:, ~mask], video[:, ~mask])
    # extension / prediction: first k given, beyond one window too
    for name in ("extension", "prediction"):
        out = P["tasks"].build({"name": name, **opts}).run(s, {"video": video[:, :3], "num_frames": 14})
        assert out.shape == (2, 14, C, H, W) and torch.equal(out[:, :3], video[:, :3])


def test_soft_multiplier_moves_context_and_zero_freezes(P):
    video = torch.rand(1, 8, C, H, W) * 2 - 1
    task = P["tasks"].build({"name": "image_to_video", "multiplier": 0.2})
    out = task.run(ctx_for(P, sched="rectified_flow", sampler="euler", batch=1), {"image": video[:, 0]})
    assert not torch.equal(out[:, 0], video[:, 0])  # soft: denoised from level 0.2 * sigma
    assert (out[:, 0] - video[:, 0]).abs().max() < 1.0
    per_frame = torch.zeros(8)  # explicit per-frame multipliers override the config: m = 0 is exact
    out = task.run(ctx_for(P, sched="rectified_flow", sampler="euler", batch=1),
                   {"image": video[:, 0], "multipliers": per_frame})
    assert torch.equal(out[:, 0], video[:, 0])


@pytest.mark.parametrize("task_name,opts", [("long_video", {}), ("long_video", {"mode": "vanilla_replacement"}),
                                            ("df_rollout", {"schedule": {"name": "pyramid", "u": 1.0}}),
                                            ("df_rollout", {"stabilization": 0.05})])
def test_long_video_windows_chain_exactly(P, task_name, opts):
    N, F, o = 40, 8, 4
    s = ctx_for(P, F=F, steps=4)
    seen = []
    s.callback = lambda info: seen.append((info["window"], info["num_windows"]))
    task = P["tasks"].build({"name": task_name, "num_frames": N, "overlap": o, **opts})
    video, windows = task.rollout(s, {})
    n_win = 1 + math.ceil((N - F) / (F - o))
    assert video.shape == (2, N, C, H, W)
    assert len(windows) == n_win == num_windows(N, F, o) and {w for w, _ in seen} == set(range(n_win))
    assert all(n == n_win for _, n in seen)
    for c in range(1, n_win):
        assert torch.equal(windows[c][:, :o], windows[c - 1][:, -o:])
    stitched = torch.cat([windows[0]] + [w[:, o:] for w in windows[1:]], dim=1)[:, :N]
    assert torch.equal(video, stitched)
    assert torch.isfinite(video).all()


def test_long_video_128_from_16_frame_model_is_15_windows(P):
    assert num_windows(128, 16, 8) == 15
    s = ctx_for(P, F=16, steps=1, batch=1)
    video = P["tasks"].build({"name": "long_video", "num_frames": 128, "overlap": 8}).run(s, {})
    assert video.shape == (1, 128, C, H, W)


def test_class_conditional_and_guidance(P):
    s = ctx_for(P, num_classes=3, cfg_scale=3.0)
    out = P["tasks"].build("class_conditional").run(s, {"labels": torch.tensor([0, 2])})
    assert out.shape == (2, 8, C, H, W)
    with pytest.raises(ValueError, match="needs input"):
        P["tasks"].build("class_conditional").run(s, {})
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\]"):
        P["tasks"].build("class_conditional").run(s, {"labels": torch.tensor([5])})
    with pytest.raises(ValueError, match="unconditional"):
        P["tasks"].build("class_conditional").run(ctx_for(P), {"labels": torch.tensor([0])})


def test_same_seed_same_video(P):
    a = P["tasks"].build("unconditional").run(ctx_for(P, seed=3), {})
    b = P["tasks"].build("unconditional").run(ctx_for(P, seed=3), {})
    assert torch.equal(a, b)


def test_bad_inputs_have_clear_messages(P):
    s = ctx_for(P)
    with pytest.raises(ValueError, match=r"\(C, H, W\) = \(3, 4, 4\).*resize"):
        P["tasks"].build("image_to_video").run(s, {"image": torch.zeros(3, 4, 4)})
    with pytest.raises(ValueError, match="exceeds the checkpoint's frame count 8"):
        P["tasks"].build({"name": "long_video", "window": 16}).run(s, {})
    with pytest.raises(ValueError, match="at most 7 context frames"):
        P["tasks"].build("extension").run(s, {"video": torch.zeros(8, C, H, W), "num_frames": 20})
    with pytest.raises(ValueError, match="nothing to infill"):
        P["tasks"].build("infill").run(s, {"video": torch.zeros(1, 8, C, H, W), "mask": torch.ones(8, dtype=bool)})
    with pytest.raises(ValueError, match="overlap must be in"):
        P["tasks"].build({"name": "long_video", "overlap": 8, "num_frames": 20}).run(s, {})
    with pytest.raises(KeyError, match="Did you mean 'interpolation'"):
        P["tasks"].build("interpolate")


def test_real_backbone_image_to_video(P):
    """latte_tiny (if built) keeps the given frame exactly through the whole loop."""
    if "latte_tiny" not in P["backbones"]:
        pytest.skip("latte_tiny not registered")
    sched = P["noise_schedules"].build("ddpm")  # learn_sigma: the model outputs 2C channels
    model = P["backbones"].build({"name": "latte_tiny", "in_channels": 1, "input_size": 8, "num_frames": 4,
                                  "learn_sigma": True}).eval()
    s = build_context(P, model=model, schedule=sched, sampler="ddpm", num_frames=4, shape=(1, 8, 8), steps=3)
    img = torch.rand(1, 8, 8) * 2 - 1
    out = P["tasks"].build("image_to_video").run(s, {"image": img})
    assert out.shape == (1, 4, 1, 8, 8) and torch.equal(out[0, 0], img)


@pytest.mark.parametrize("opts,expect", [({}, "zero"), ({"stabilization": 0.1}, "stab"),
                                         ({"mode": "vanilla_replacement"}, "sync"), ({"multiplier": 0.5}, "half")])
def test_level_the_model_sees_for_context(P, opts, expect):
    s = ctx_for(P, steps=4, batch=1)
    seen = []
    inner = s.model
    s.model = lambda x, t_in, y=None: (seen.append(t_in.clone()), inner(x, t_in, y))[1]
    P["tasks"].build({"name": "image_to_video", **opts}).run(s, {"image": torch.zeros(C, H, W)})
    for t_in in seen:
        ctx_level, gen_level = float(t_in[0, 0]), float(t_in[0, 1])
        want = {"zero": 0.0, "stab": round(0.1 * 999), "sync": gen_level, "half": round(gen_level / 999 * 0.5 * 999)}
        assert abs(ctx_level - want[expect]) <= 1.0, (ctx_level, gen_level)


def test_build_context_is_the_hand_built_context(P):
    """The one entry point builds what the fields say: same sampler, matrix and noise as a context built by hand."""
    from fvdm.core.sampling_context import SamplingContext

    schedule = P["noise_schedules"].build({"name": "ddpm", "learn_sigma": False})
    model = Toy()
    by_hand = SamplingContext(model=model, schedule=schedule, sampler=P["samplers"].build("ddim"),
                              matrix=P["sampling_schedules"].build({"name": "pyramid", "u": 0.5}), num_frames=8,
                              shape=(C, H, W), steps=4, batch_size=2, generator=torch.Generator().manual_seed(5),
                              plugins=P)
    built = build_context(P, model=model, schedule=schedule, sampler="ddim", matrix={"name": "pyramid", "u": 0.5},
                          num_frames=8, shape=(C, H, W), steps=4, batch_size=2, seed=5)
    task = P["tasks"].build("unconditional")
    assert torch.equal(task.run(by_hand, {}), task.run(built, {}))
    assert build_context(P, model=model, schedule=schedule, num_frames=8, shape=(C, H, W), seed=None).generator is None
    with pytest.raises(ValueError, match="no plugin manager"):
        build_context(None, model=model, schedule=schedule, num_frames=8, shape=(C, H, W))


@pytest.mark.parametrize("name,inputs,given", [
    ("image_to_video", lambda v: {"image": v[:1, 0]}, [0]),
    ("interpolation", lambda v: {"first": v[:1, 0], "last": v[:1, -1]}, [0, 7]),
    ("infill", lambda v: {"video": v[:1], "mask": torch.arange(8) % 2 == 0}, [0, 2, 4, 6]),
    ("extension", lambda v: {"video": v[:1, :3]}, [0, 1, 2]),
])
def test_batch_size_draws_that_many_samples_of_one_given_context(P, name, inputs, given):
    video = torch.rand(1, 8, C, H, W) * 2 - 1
    out = P["tasks"].build(name).run(ctx_for(P, batch=3), inputs(video))
    assert out.shape == (3, 8, C, H, W)
    assert torch.equal(out[:, given], video[:, given].expand(3, *video[:, given].shape[1:]))  # all keep it
    gen = [f for f in range(8) if f not in given]
    assert not torch.allclose(out[0, gen], out[1, gen]) and not torch.allclose(out[1, gen], out[2, gen])


def test_batch_size_and_several_given_clips_must_agree(P):
    from fvdm.tasks.base import batch_of

    clips = torch.zeros(2, 8, C, H, W)
    assert batch_of({}, ctx_for(P, batch=1), clips) == 2 and batch_of({}, ctx_for(P, batch=2), clips) == 2
    assert batch_of({"labels": torch.tensor([1])}, ctx_for(P, batch=4)) == 4  # one label, four samples
    with pytest.raises(ValueError, match="2 given clips but batch_size 3: give one clip"):
        batch_of({}, ctx_for(P, batch=3), clips)


def test_require_checks_needs_by_default(P):
    from fvdm.tasks.base import Task

    class NeedsMask(Task):
        needs = ("mask", "image")

    with pytest.raises(ValueError, match="needs input\\(s\\) mask; got image"):
        NeedsMask(Task.Config()).require({"image": 1})
    NeedsMask(Task.Config()).require({"image": 1, "mask": 2})  # nothing missing


def test_check_sampling_refuses_settings_before_any_input(P):
    """The task hook the CLI calls before reading files: window too large, no classes, a cache the model lacks."""
    with pytest.raises(ValueError, match="exceeds the checkpoint's frame count 8"):
        P["tasks"].build({"name": "infill", "window": 9}).check_sampling(ctx_for(P))
    with pytest.raises(ValueError, match="needs a class-conditional checkpoint"):
        P["tasks"].build("class_conditional").check_sampling(ctx_for(P))
    with pytest.raises(ValueError, match="--cache needs a backbone with a key/value cache \\(Toy has none\\)"):
        P["tasks"].build("causal_rollout").check_sampling(ctx_for(P))
    P["tasks"].build({"name": "causal_rollout", "cache": False}).check_sampling(ctx_for(P))
