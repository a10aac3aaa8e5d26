"""diffusers' Wan pipelines as oracles for fvdm's flow-matching text-to-video sampling (float32, 1e-5).

(a) ``WanPipeline`` (every frame at one level) == fvdm's ``standard`` matrix with ``spacing: flow`` and the
    pipeline's ``flow_shift``, the ``unipc`` sampler and ``rectified_flow`` with ``model_timesteps: integer``,
    with and without classifier-free guidance (a negative prompt's embeddings), flow shifts 3 and 5, run as a
    user runs it: the ``unconditional`` task on a ``build_context`` holding ``text`` / ``null_text``.
(b) ``SkyReelsV2DiffusionForcingPipeline`` (a level per frame: ``ar_step``, ``causal_block_size``) == fvdm's
    ``block_pyramid`` matrix with ``u = ar_step``, ``block = causal_block_size`` and the same sampler (through
    ``sample_loop``: the pipeline draws its noise in its own layout), once the pipeline's UniPC is handed a copy
    of each frame's sample (see ``CopyingUniPC``; (c) pins why).

Both sides use one module instance: the pipeline's transformer is the fvdm backbone's ``transformer``. The
scheduler is built from the fields of the ``scheduler/scheduler_config.json`` the public
Wan-AI/Wan2.1-T2V-1.3B-Diffusers repository ships (only ``flow_shift`` varies). The VAE is a tiny random
``AutoencoderKLWan``; the pipelines return latents (``output_type="latent"``), so it is never run, and no text
encoder is needed since both sides are given the same embeddings.
"""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

diffusers = pytest.importorskip("diffusers")

from fvdm.core.plugins import load_plugins  # noqa: E402
from fvdm.core.sampling import check_matrix, make_model_fn, sample_loop  # noqa: E402
from fvdm.plugins.backbones.skyreels_v2 import SkyReelsV2DF  # noqa: E402
from fvdm.plugins.backbones.wan import WanBackbone  # noqa: E402
from fvdm.plugins.noise_schedules.rectified_flow import shift_timesteps  # noqa: E402
from fvdm.core.sampling_context import build_context  # noqa: E402

TOL = 1e-5
B, F, C, H, W = 2, 4, 4, 8, 8  # latents (B, F, C, H, W); the tiny sizes take 4 channels and text_dim 16
TEXT_LEN, TEXT_DIM = 7, 16
#: Wan-AI/Wan2.1-T2V-1.3B-Diffusers, scheduler/scheduler_config.json (every field that is not a default-off switch)
WAN21_SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.0001, beta_end=0.02,
                       prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, solver_order=2,
                       solver_type="bh2", lower_order_final=True, predict_x0=True, final_sigmas_type="zero",
                       timestep_spacing="linspace", steps_offset=0, disable_corrector=[], thresholding=False)


@pytest.fixture(scope="module")
def P():
    return load_plugins(entry_points=False)


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return diffusers.AutoencoderKLWan(base_dim=3, z_dim=C, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                      temperal_downsample=[False, True, True], latents_mean=[0.0] * C,
                                      latents_std=[1.0] * C).eval()


@pytest.fixture(scope="module")
def text():
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, TEXT_LEN, TEXT_DIM, generator=g), torch.randn(B, TEXT_LEN, TEXT_DIM, generator=g)


def scheduler(shift: float, cls: type | None = None):
    return (cls or diffusers.UniPCMultistepScheduler)(**{**WAN21_SCHEDULER, "flow_shift": shift})


def flow_schedule(P):
    return P["noise_schedules"].build({"name": "rectified_flow", "model_timesteps": "integer"})


def noise(batch: int, seed: int = 5) -> torch.Tensor:
    """(batch, C, F, H, W) as the pipelines' prepare_latents draws it from a CPU generator."""
    return torch.randn(batch, C, F, H, W, generator=torch.Generator().manual_seed(seed))


def pipeline_kwargs(text, cfg: float, steps: int) -> dict:
    emb, neg = text
    return dict(prompt=None, prompt_embeds=emb, negative_prompt_embeds=neg if cfg > 1 else None, height=H * 8,
                width=W * 8, num_frames=(F - 1) * 4 + 1, num_inference_steps=steps, guidance_scale=cfg,
                output_type="latent")


def context(P, backbone, matrix: dict, text, cfg: float, steps: int, batch: int, seed: int = 5):
    """fvdm's sampling context for a text-to-video run (noise from a generator seeded with ``seed``)."""
    emb, neg = text
    return build_context(P, model=backbone, schedule=flow_schedule(P), num_frames=F, shape=(C, H, W),
                         sampler="unipc", matrix=matrix, steps=steps, batch_size=batch, cfg_scale=cfg, seed=seed,
                         text=emb, null_text=neg)


@torch.no_grad()
def fvdm_sample(P, backbone, matrix: dict, x: torch.Tensor, text, cfg: float, steps: int) -> torch.Tensor:
    """``sample_loop`` on the context's parts from the start noise x (B, C, F, H, W); returns (B, C, F, H, W)."""
    sampling = context(P, backbone, matrix, text, cfg, steps, x.shape[0])
    S = sampling.matrix(steps, F)  # (rows, F)
    model_fn = make_model_fn(backbone, sampling.schedule, text=sampling.text, null_text=sampling.null_text,
                             cfg_scale=cfg)
    out = sample_loop(model_fn, rearrange(x, "b c f h w -> b f c h w"), S, sampler=sampling.sampler,
                      schedule=sampling.schedule)
    return rearrange(out, "b f c h w -> b c f h w")


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# -- (a) WanPipeline: one level for all frames --------------------------------------------------------------


@pytest.mark.parametrize("shift", [3.0, 5.0])
@pytest.mark.parametrize("steps", [1, 2, 8, 20, 50])
def test_flow_levels_and_model_timesteps_equal_the_schedulers(P, shift, steps):
    """The standard flow matrix's rows are the scheduler's float32 sigmas exactly, and the model is fed its int
    timesteps: int(1000 sigma) (the first sigma is 1 - 1e-6, so the first timestep is 999, not 1000)."""
    sched = scheduler(shift)
    sched.set_timesteps(steps)
    S = P["sampling_schedules"].build({"name": "standard", "spacing": "flow", "shift": shift})(steps, F)
    assert torch.equal(S, sched.sigmas[:, None].expand(-1, F))
    assert torch.equal(flow_schedule(P).timestep_input(S[:-1]), sched.timesteps[:, None].expand(-1, F).float())


@pytest.mark.parametrize("shift,cfg", [(3.0, 1.0), (3.0, 5.0), (5.0, 1.0), (5.0, 5.0)])
def test_wan_pipeline_equals_fvdm_text_to_video(P, vae, text, shift, cfg):
    """fvdm's own path: the ``unconditional`` task on a context holding the prompt embeddings."""
    torch.manual_seed(0)
    backbone = WanBackbone(WanBackbone.Config(size="tiny")).eval()
    pipe = diffusers.WanPipeline(tokenizer=None, text_encoder=None, vae=vae, scheduler=scheduler(shift),
                                 transformer=backbone.transformer)
    pipe.set_progress_bar_config(disable=True)
    steps = 8
    sampling = context(P, backbone, {"name": "standard", "spacing": "flow", "shift": shift}, text, cfg, steps, B)
    with torch.no_grad():
        got = rearrange(P["tasks"].build("unconditional").run(sampling, {}), "b f c h w -> b c f h w")
        x = rearrange(torch.randn(B, F, C, H, W, generator=torch.Generator().manual_seed(5)),
                      "b f c h w -> b c f h w")  # the task's start noise: its generator's first draw
        want = pipe(latents=x, **pipeline_kwargs(text, cfg, steps)).frames
    assert max_diff(got, want) <= TOL
    assert want.abs().max() > 1.0  # a real trajectory, not a vanishing one


def test_shift_keeps_pyramid_columns_monotone_and_context_clean(P):
    """The shift maps every level of the matrix (pyramid, autoregressive alike) through the same increasing map
    with 0 -> 0: columns stay non-increasing, context columns stay 0, frames still start at their own rows."""
    context = torch.tensor([True, False, False, True, False, False])
    specs = ({"name": "pyramid", "u": 1.5}, {"name": "autoregressive"}, {"name": "block_pyramid", "u": 2, "block": 2})
    for spec in specs:
        plain = P["sampling_schedules"].build({**spec, "spacing": "flow"})(6, 6, context=context)
        shifted = P["sampling_schedules"].build({**spec, "spacing": "flow", "shift": 5.0})(6, 6, context=context)
        check_matrix(shifted)  # in [0, 1], every column non-increasing
        assert torch.equal(shifted[:, context], torch.zeros_like(shifted[:, context]))
        assert torch.equal(shifted == 0, plain == 0) and torch.equal(shifted.diff(dim=0) == 0, plain.diff(dim=0) == 0)
        moved = (plain > 0) & (plain < 1)  # the first level is nudged to 1 - 1e-6 after the shift, as diffusers does
        expect = shift_timesteps(plain.double(), 5.0).float()
        torch.testing.assert_close(shifted[moved], expect[moved], rtol=0, atol=1e-6)
        assert bool((shifted[plain > 0] >= plain[plain > 0]).all())  # shift > 1 moves levels towards noise


def test_block_pyramid_shares_a_level_per_block_and_is_pyramid_for_block_1(P):
    build = P["sampling_schedules"].build
    S = build({"name": "block_pyramid", "u": 3, "block": 2, "spacing": "flow", "shift": 8.0})(5, 6)  # (K + 2*3 + 1, 6)
    assert S.shape == (12, 6) and all(torch.equal(S[:, 2 * b], S[:, 2 * b + 1]) for b in range(3))
    assert torch.equal(S[3:, 2], S[:-3, 0]) and torch.equal(S[3:, 4], S[:-3, 2])  # block b starts 3 rows later
    ctx = torch.tensor([True, False, False, False, False])
    assert torch.equal(build({"name": "block_pyramid", "u": 1.5})(4, 5, context=ctx),
                       build({"name": "pyramid", "u": 1.5})(4, 5, context=ctx))


def test_integer_model_timesteps_floor_and_continuous_is_unchanged(P):
    t = torch.tensor([[1 - 1e-6, 0.5, 0.1234, 0.0]])
    assert flow_schedule(P).timestep_input(t).tolist() == [[999.0, 500.0, 123.0, 0.0]]
    assert torch.equal(P["noise_schedules"].build({"name": "rectified_flow"}).timestep_input(t), t * 1000)


# -- (b) SkyReels-V2 diffusion forcing: a level per frame ---------------------------------------------------


class CopyingUniPC(diffusers.UniPCMultistepScheduler):
    """diffusers' UniPC, given a copy of the sample. The DF pipeline steps frame ``idx`` as
    ``latents[:, :, idx] = scheduler.step(..., latents[:, :, idx])``: at a frame's first step (no corrector yet)
    the scheduler keeps that *view* as ``last_sample``, and the in-place write then turns it into the step's
    result, so the corrector of the frame's second step starts from the wrong sample. With the copy each
    frame's scheduler sees what a WanPipeline run on that frame's levels would."""

    def step(self, model_output, timestep, sample, return_dict=True):
        return super().step(model_output, timestep, sample.clone(), return_dict=return_dict)


def skyreels_df(P, vae, text, *, block: int, ar_step: int, cfg: float, shift: float, sched_cls: type | None = None,
                steps: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """(pipeline latents, fvdm latents), both (1, C, F, H, W), from the same seeded noise. Batch 1: diffusers'
    own forward with the fps embedding (DF-1.3B, the tiny size) refuses batch > 1 (see skyreels_v2.py)."""
    text = tuple(e[:1] for e in text)
    torch.manual_seed(0)
    backbone = SkyReelsV2DF(SkyReelsV2DF.Config(size="tiny", causal_block_size=block, fps=24)).eval()
    pipe = diffusers.SkyReelsV2DiffusionForcingPipeline(
        tokenizer=None, text_encoder=None, vae=vae, scheduler=scheduler(shift, sched_cls or CopyingUniPC),
        transformer=backbone.transformer)
    pipe.set_progress_bar_config(disable=True)
    # its prepare_latents ignores `latents=` (returns a tensor where four values are unpacked): seed its draw instead
    with torch.no_grad():
        want = pipe(generator=torch.Generator().manual_seed(5), ar_step=ar_step, causal_block_size=block,
                    base_num_frames=(F - 1) * 4 + 1, fps=24, **pipeline_kwargs(text, cfg, steps)).frames
    matrix = {"name": "block_pyramid", "u": ar_step, "block": block, "spacing": "flow", "shift": shift}
    return want, fvdm_sample(P, backbone, matrix, noise(1), text, cfg, steps)


@pytest.mark.parametrize("block,ar_step,cfg,shift", [(1, 0, 1.0, 8.0), (1, 2, 1.0, 8.0), (1, 1, 5.0, 3.0),
                                                     (2, 3, 5.0, 8.0)])
def test_skyreels_df_pipeline_equals_fvdm_block_pyramid(P, vae, text, block, ar_step, cfg, shift):
    want, got = skyreels_df(P, vae, text, block=block, ar_step=ar_step, cfg=cfg, shift=shift)
    assert max_diff(got, want) <= TOL


def test_skyreels_df_pipeline_as_shipped_differs_only_by_its_aliased_corrector_sample(P, vae, text):
    """(c) Pins the divergence: with the stock scheduler the DF pipeline is off by O(1e-2) even synchronously
    (ar_step 0, where it should equal WanPipeline); if diffusers stops aliasing, this fails: drop CopyingUniPC."""
    want, got = skyreels_df(P, vae, text, block=1, ar_step=0, cfg=1.0, shift=8.0,
                            sched_cls=diffusers.UniPCMultistepScheduler)
    assert max_diff(got, want) > 1e-3
