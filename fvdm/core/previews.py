"""What a training run shows of itself while it trains: EMA sample GIFs and an evaluation metric.

Both are side shows: they draw from their own seeded generators (the training streams
are untouched, so a run with previews trains bit-identically to one without), and a
failure is warned about once while training continues.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from einops import rearrange

from fvdm.core.build import frame_size, model_frames
from fvdm.core.config import ExperimentConfig
from fvdm.core.errors import warn_once
from fvdm.core.interfaces import Autoencoder, NoiseSchedule
from fvdm.core.media import to_uint8, write_gif
from fvdm.core.sampling_context import build_context

if TYPE_CHECKING:
    from fvdm.core.run_setup import Run


def save_gif(video: torch.Tensor, path: str | Path, fps: int = 8) -> Path:
    """Write a batch (B, F, C, H, W) in [-1, 1] as one GIF, clips side by side (atomically)."""
    return write_gif(video, path, fps=fps, pad=0)


@torch.no_grad()
def sample_videos(ema: torch.nn.Module, schedule: NoiseSchedule, autoencoder: Autoencoder, cfg: ExperimentConfig,
                  plugins: Any, info: dict[str, int], spec: dict[str, Any], device: torch.device, n: int,
                  seed: int) -> torch.Tensor:
    """n unconditional (or class-cycled) EMA samples in pixel space (n, F, C, H, W), from their own RNG, through
    the one sampling entry point (``build_context`` and the registered ``unconditional`` /
    ``class_conditional`` task), as ``fvdm sample`` draws them."""
    nf = model_frames(info)
    g = torch.Generator(device=device).manual_seed(seed)  # own RNG: training streams untouched
    nc = int(spec.get("num_classes", 0) or 0)
    ctx = build_context(plugins, model=ema, schedule=schedule, num_frames=nf,
                        shape=(info["latent_channels"], *frame_size(info, latent=True)),
                        sampler=cfg.sample.sampler.spec(), matrix=cfg.sample.schedule.spec(), steps=cfg.sample.steps,
                        batch_size=n, cfg_scale=cfg.sample.cfg_scale if nc > 0 else 1.0, num_classes=nc, generator=g,
                        device=device)
    if nc > 0:
        x0 = plugins["tasks"].build({"name": "class_conditional"}).run(
            ctx, {"labels": torch.arange(n, device=device) % nc})
    else:
        x0 = plugins["tasks"].build({"name": "unconditional"}).run(ctx, {})
    return autoencoder.decode(x0)


def write_samples(run: Run, step: int) -> None:
    """``samples/step_<step>.gif`` of ``train.sample_batch`` EMA samples, and a frame grid in TensorBoard."""
    cfg, p, logger = run.cfg, run.parts, run.logger
    try:
        video = sample_videos(run.ema, p.schedule, p.autoencoder, cfg, run.plugins, p.info, p.spec, run.dinfo.device,
                              cfg.train.sample_batch, cfg.seed + 12345)
        save_gif(video, logger.run_dir / "samples" / f"step_{step:07d}.gif")
        # rows = samples, columns = frames
        logger.image("samples/frames", rearrange(to_uint8(video.cpu()), "b f c h w -> c (b h) (f w)"), step)
    except Exception as exc:  # sampling is a side show: report and keep training
        warn_once("sample_fail", f"sample GIF at step {step} failed ({type(exc).__name__}: {exc}); training continues")


def evaluate(run: Run, step: int) -> None:
    """``train.eval_metric`` of EMA samples against the data's test split -> metrics.jsonl, TensorBoard, log."""
    cfg, p, logger, plugins, info = run.cfg, run.parts, run.logger, run.plugins, run.parts.info
    tc = cfg.train
    try:
        real_ds = plugins["datasets"].build({**cfg.data.spec(), "split": "test"}, plugins=plugins)
        n = min(tc.eval_samples, len(real_ds))
        real = torch.stack([real_ds[i]["video"] for i in range(n)])  # (N, F, C, H, W) in [-1, 1]
        fake = torch.cat([sample_videos(run.ema, p.schedule, p.autoencoder, cfg, plugins, info, p.spec,
                                        run.dinfo.device, min(64, n - i), cfg.seed + 54321 + i)
                          for i in range(0, n, 64)])
        ev = plugins["evaluators"].build({"name": tc.eval_metric, "num_frames": info["num_frames"]}, plugins=plugins)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small-N notes go into the result, not the training log
            res = ev.evaluate(to_uint8(fake.cpu()), to_uint8(real))
    except Exception as exc:  # evaluation is a side show: report and keep training
        warn_once("eval_fail", f"eval ({tc.eval_metric}) at step {step} failed ({type(exc).__name__}: {exc}); "
                               "training continues")
        return
    logger.evaluation(step, tc.eval_metric, float(res["value"]), n)
