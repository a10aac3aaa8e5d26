"""History guidance: the guided prediction in closed form, composition with class guidance, every task with
context (a plugin's too), and the errors (no context, level out of range) before any sampling."""

from __future__ import annotations

import pytest
import torch

from fvdm.core.plugins import load_plugins
from fvdm.core.sampling import alpha_sigma, history_guided, make_model_fn, sample_loop
from tests.task_fixtures import LastFrame, NoiseOnly
from tests.test_tasks import C, H, W, Toy, ctx_for


@pytest.fixture(scope="module")
def P():
    return load_plugins(entry_points=False)


def sched(P):
    return P["noise_schedules"].build({"name": "ddpm", "learn_sigma": False})


def test_guided_prediction_is_u_plus_w_c_minus_u(P):
    s = sched(P)
    B, F = 2, 5
    ctx = torch.tensor([True, False, True, False, False]).expand(B, F)
    ctx_x0 = torch.randn(B, F, C, H, W)
    x, t = torch.randn(B, F, C, H, W), torch.rand(B, F) * 0.5
    t[:, 2] = 0.9  # a context frame already noisier than the level keeps its input
    level, w = 0.6, 2.5
    model = Toy()
    model_fn = make_model_fn(model, s)
    got = history_guided(model_fn, s, ctx, ctx_x0, w, level, torch.Generator().manual_seed(3))(x, t)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    noised = ctx & (t < level)
    t_u = torch.where(noised, torch.full_like(t, level), t)
    a, sg = alpha_sigma(s, t_u, 5)
    x_u = torch.where(noised[..., None, None, None], a * ctx_x0 + sg * z, x)
    c, u = model_fn(x, t), model_fn(x_u, t_u)
    assert torch.allclose(got, u + w * (c - u), atol=1e-6)
    assert not torch.allclose(c, u)  # the toy mixes frames: the context matters
    # scale 1 is the plain model; scale 0 the model without (noised) context
    one = history_guided(model_fn, s, ctx, ctx_x0, 1.0, level, torch.Generator().manual_seed(3))(x, t)
    assert torch.allclose(one, c, atol=1e-6)


def test_composes_with_class_guidance(P):
    """Each branch is class-guided: u_cfg + w (c_cfg - u_cfg), four passes in one batch."""
    s = sched(P)
    B, F = 2, 4
    ctx = torch.tensor([True, False, False, False]).expand(B, F)
    ctx_x0, x, t = torch.randn(B, F, C, H, W), torch.randn(B, F, C, H, W), torch.full((B, F), 0.4)
    y = torch.tensor([1, 2])
    cfg_fn = make_model_fn(Toy(num_classes=3), s, y=y, cfg_scale=3.0)
    got = history_guided(cfg_fn, s, ctx, ctx_x0, 2.0, 1.0, torch.Generator().manual_seed(0))(x, t)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    a, sg = alpha_sigma(s, torch.ones(B, F), 5)
    x_u = torch.where(ctx[..., None, None, None], a * ctx_x0 + sg * z, x)
    t_u = torch.where(ctx, torch.ones_like(t), t)
    c, u = cfg_fn(x, t), cfg_fn(x_u, t_u)
    assert torch.allclose(got, u + 2.0 * (c - u), atol=1e-5)


MODES = [{}, {"mode": "vanilla_replacement"}, {"stabilization": 0.1}, {"multiplier": 0.3}]


@pytest.mark.parametrize("opts", MODES)
@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m", "unipc"])
def test_every_task_with_context_takes_it(P, opts, sampler):
    video = torch.rand(2, 8, C, H, W) * 2 - 1
    base = ctx_for(P, sampler=sampler)
    guided = ctx_for(P, sampler=sampler)
    guided.history_guidance = 3.0
    jobs = [("image_to_video", {"image": video[:, 0]}),
            ("interpolation", {"first": video[:, 0], "last": video[:, -1]}),
            ("infill", {"video": video, "mask": torch.tensor([True, False] * 4)}),
            ("extension", {"video": video[:, :3], "num_frames": 12}),
            ("long_video", {"num_frames": 12}),  # window 0 has no context: guided only from window 1 on
            ("df_rollout", {"num_frames": 12})]
    for name, inputs in jobs:
        task = P["tasks"].build({"name": name, **opts})
        out, ref = task.run(guided, inputs), task.run(base, inputs)
        assert torch.isfinite(out).all()
        assert not torch.allclose(out, ref), name  # the guidance changed the result
        if "multiplier" not in opts and name == "extension":
            assert torch.equal(out[:, :3], video[:, :3])  # hard context stays exact


def test_refused_without_context(P):
    s = sched(P)
    x, S = torch.randn(1, 3, C, H, W), torch.linspace(1, 0, 4)[:, None].expand(-1, 3).contiguous()
    with pytest.raises(ValueError, match="history guidance .* needs context frames"):
        sample_loop(make_model_fn(Toy(), s), x, S, sampler=P["samplers"].build("ddim"), schedule=s,
                    history_guidance=2.0)
    sampling = ctx_for(P)
    sampling.history_guidance = 2.0
    with pytest.raises(ValueError, match="needs context frames and task Unconditional has none"):
        P["tasks"].build("unconditional").run(sampling, {})
    with pytest.raises(ValueError, match=r"history_level must be in \(0, 1\]"):
        history_guided(make_model_fn(Toy(), s), s, torch.ones(1, 3, dtype=torch.bool), x, 2.0, 0.0)


def _plugin():
    from fvdm.core import hookimpl

    class Plugin:
        @staticmethod
        @hookimpl
        def fvdm_register_tasks(registry):
            registry.add("last_frame", LastFrame)
            registry.add("noise_only", NoiseOnly)

    return Plugin


def test_a_plugin_task_with_context_counts_everywhere_the_builtins_do():
    """No list of task names to edit: history guidance is allowed for a plugin's context task, refused for its
    task without one, and every message offering tasks with context offers the plugin's."""
    from fvdm.commands.jobs import check_history_guidance
    from fvdm.tasks.base import context_tasks

    P2 = load_plugins(entry_points=False, extra_plugins=[("third", _plugin())])
    names = context_tasks(P2)
    assert "last_frame" in names and "image_to_video" in names
    assert "noise_only" not in names and "unconditional" not in names and "class_conditional" not in names
    job = {"history_guidance": 2.0}
    check_history_guidance(job, "last_frame", P2["tasks"].build("last_frame"), P2)  # allowed
    with pytest.raises(ValueError, match="task 'noise_only' has none; drop it, or use a task with given frames "
                                         r"\(.*last_frame.*\)"):
        check_history_guidance(job, "noise_only", P2["tasks"].build("noise_only"), P2)
    sampling = ctx_for(P2)
    sampling.history_guidance = 3.0
    img = torch.rand(2, C, H, W) * 2 - 1
    out = P2["tasks"].build("last_frame").run(sampling, {"image": img})  # guided, the frame kept
    assert torch.equal(out[:, -1], img)
    with pytest.raises(ValueError, match="needs context frames and task NoiseOnly has none.*last_frame"):
        P2["tasks"].build("noise_only").run(sampling, {})
