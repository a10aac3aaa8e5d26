"""One model's job: train it (a training spec) and sample every arm that shares it, with paired noise.

Runs in the suite's process (``workers: 1``) or in a spawned worker process (``child_job``, which
loads plugins fresh and ends itself when the suite's process is gone: ``exit_with_parent``).
Clip i's sampling noise comes from a generator seeded by (seed, task, chunk) on the sampling
device, so it is the same in every arm and does not depend on what ran before.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch

from fvdm.bench.suites.digits_zero_shot.baselines import log
from fvdm.bench.suites.digits_zero_shot.design import COND_TASK_TABLE, SAMPLING_MODES, Budget, Config, given, models
from fvdm.bench.suites.digits_zero_shot.scoring import fvd, fvd_metric, score, windows
from fvdm.bench.suites.digits_zero_shot.validation import experiment_dict
from fvdm.core.faults import crash_point


# -- training --------------------------------------------------------------------------
def train_model(cfg: Config, plugins: Any, run_dir: Path, seed: int, key: str, vtv: dict[str, Any], steps: int,
                budget: Budget, train: dict[str, Any] | None = None) -> tuple[Path, dict[str, Any]]:
    """Train one model -> (checkpoint, train info); a run cut off earlier resumes from its last checkpoint
    (bit-identical on CPU), and with ``reuse_checkpoints`` a finished one is taken as it is."""
    from fvdm.core import engine
    from fvdm.core.checkpoint import load_checkpoint
    from fvdm.core.config import ExperimentConfig

    exp = ExperimentConfig.model_validate(experiment_dict(cfg, key, vtv, seed, steps, budget, train))
    ckpt = run_dir / "checkpoints" / "last.pt"
    at = int(load_checkpoint(ckpt)["step"]) if ckpt.is_file() else 0
    if cfg.reuse_checkpoints and at == steps:
        log(f"reusing {ckpt}")
        return ckpt, {"reused": True, "steps": steps}
    log(f"training {key} seed {seed}: {steps} steps" + (f" (resuming at step {at})" if at else ""))
    t0 = time.perf_counter()
    res = engine.train(exp, plugins, run_dir=run_dir, resume=at > 0, overwrite=at == 0, device=cfg.device,
                       progress=False)
    sec = time.perf_counter() - t0
    return Path(res["checkpoint"]), {"final_loss": res["final_loss"], "steps": res["step"], "train_s": sec,
                                     "s_per_step": sec / max(1, res["step"] - at), "num_params": res["num_params"]}


def train_job(cfg: Config, plugins: Any, out: Path, key: str, seed: int, budget: Budget) -> dict[str, Any]:
    """The job ``train/<key>/s<seed>``: train info plus the checkpoint its evaluation reads."""
    model = models(cfg)[key]
    steps = max(1, round(model["steps_multiplier"] * budget.train_steps))
    ckpt, info = train_model(cfg, plugins, out / "runs" / f"{key}_s{seed}", seed, key, model["vtv"], steps, budget,
                             model["train"])
    return {**info, "checkpoint": str(ckpt)}


# -- sampling --------------------------------------------------------------------------
def sampling_context(cfg: Config, plugins: Any, lm: Any, budget: Budget) -> Any:
    """The SamplingContext every task of one model is sampled with (batch size and generator set per chunk)."""
    from fvdm.core.sampling_context import make_context

    # guidance off (cfg_scale 1) whatever the checkpoint's sample section says: the suite's tasks are unlabelled
    return make_context(lm, plugins, sampler=cfg.sampler, schedule="standard", steps=budget.sample_steps,
                        batch_size=cfg.eval_batch, seed=None, cfg_scale=1.0, device=cfg.device,
                        history_guidance=cfg.history_guidance, history_level=cfg.history_level)


def encode(cfg: Config, lm: Any, x: torch.Tensor) -> torch.Tensor:
    x = x.to(cfg.device)
    return lm.autoencoder.encode(x) if lm.latent_channels != lm.channels else x


def batched(cfg: Config, sampling: Any, lm: Any, n: int, seed: int, task: str,
            fn: Callable[[slice], torch.Tensor]) -> torch.Tensor:
    """Call ``fn(slice)`` over ``n`` items in ``eval_batch`` chunks -> pixels (n, F, C, H, W) in [-1, 1].

    Each chunk gets its own generator seeded from (seed, task, chunk) on the sampling device, so
    clip i's noise is the same in every arm and does not depend on which tasks or arms ran before.
    """
    from fvdm.core.rng import stream_seed

    outs = []
    for i in range(0, n, cfg.eval_batch):
        b = min(cfg.eval_batch, n - i)
        sampling.batch_size = b  # tasks without tensor inputs take their batch from here
        sampling.generator = torch.Generator(device=cfg.device).manual_seed(
            stream_seed(seed, f"sample/{task}/{i // cfg.eval_batch}"))
        with torch.inference_mode():
            x = fn(slice(i, i + b))
            if lm.latent_channels != lm.channels:
                x = lm.autoencoder.decode(x)
        outs.append(x.float().clamp(-1, 1).cpu())
    return torch.cat(outs)


def evaluate(cfg: Config, plugins: Any, ckpt: Path, key: str, arm_names: list[str], seed: int, fvd_m: Any,
             real: dict[str, Any], budget: Budget, evaluators: dict[str, Any] | None = None) -> dict[str, Any]:
    """arm -> task -> results for the arms sharing this model (sampled with paired noise)."""
    from fvdm.core.loaded import load_for_sampling

    lm = load_for_sampling(ckpt, plugins, device=cfg.device)
    arms = {a.name: a for a in cfg.arms if a.name in arm_names}
    F, k_ext = cfg.num_frames, cfg.extension_frames
    gt = real["clips"][:budget.num_task]
    sampling = sampling_context(cfg, plugins, lm, budget)
    out: dict[str, Any] = {name: {} for name in arms}
    if "unconditional" in cfg.tasks:  # no context: the sampling mode does not matter, sample once
        t0 = time.perf_counter()
        task = plugins["tasks"].build({"name": "unconditional"})
        plain = dataclasses.replace(sampling, history_guidance=1.0)  # nothing to guide by without context
        fake = batched(cfg, plain, lm, budget.num_uncond, seed, "unconditional",
                       lambda sl: task.run(plain, {"num_frames": F}))
        res = {"fvd": fvd(fvd_m, real["stats"], fake), "n": fake.shape[0],
               "seconds": time.perf_counter() - t0, "shared_by": list(arms)}
        log(f"{key} s{seed} unconditional: fvd={res['fvd']:.4g} ({res['seconds']:.1f} s)")
        for name in arms:
            out[name]["unconditional"] = res
        crash_point(f"eval/{key}/s{seed}/unconditional")  # fault-injection tests: killed mid-evaluation
    for name, arm in arms.items():
        mode, stabilized = SAMPLING_MODES[arm.sampling]
        common = {"mode": mode, "stabilization": arm.stabilization if stabilized else 0.0}
        for task_name in (t for t in cfg.tasks if t != "unconditional"):
            t0 = time.perf_counter()
            if task_name == "long_video":
                task = plugins["tasks"].build({"name": "long_video", **common, "num_frames": cfg.long_frames,
                                               "overlap": cfg.long_overlap})
                fake = batched(cfg, sampling, lm, budget.num_long, seed, task_name, lambda sl: task.run(sampling, {}))
                wins = windows(fake, F)
                res = {"fvd": fvd(fvd_m, real["long_stats"], wins), "n_videos": fake.shape[0],
                       "n_windows": wins.shape[0], "frames": fake.shape[1]}
            else:
                task = plugins["tasks"].build({"name": task_name, **common})
                inputs = COND_TASK_TABLE[task_name].inputs
                fake = batched(cfg, sampling, lm, gt.shape[0], seed, task_name,
                               lambda sl: task.run(sampling, inputs(encode(cfg, lm, gt[sl]), F, k_ext)))
                pos = given(cfg, task_name)
                res = {**score(cfg, plugins, fvd_m, real, task_name, fake, gt, evaluators), "n": fake.shape[0],
                       "context_max_abs_err": float((fake[:, pos] - gt[:, pos]).abs().max())}
            res["seconds"] = time.perf_counter() - t0
            log(f"{name} s{seed} {task_name}: " + ", ".join(
                f"{k}={v:.4g}" for k, v in res.items() if isinstance(v, float)))
            out[name][task_name] = res
    return out


def model_job(cfg: Config, plugins: Any, fvd_m: Any, real: dict[str, Any], key: str, seed: int, budget: Budget,
              out: Path, evaluators: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train one model (a training spec) and evaluate every arm that shares it -> (train info, arm results)."""
    info = train_job(cfg, plugins, out, key, seed, budget)
    ckpt = Path(info.pop("checkpoint"))
    return info, evaluate(cfg, plugins, ckpt, key, models(cfg)[key]["arms"], seed, fvd_m, real, budget, evaluators)


# -- worker processes ------------------------------------------------------------------
def exit_with_parent(parent_pid: int, poll_s: float = 2.0) -> None:
    """Worker initializer: end this process when the suite's process is gone (killed, Ctrl-C'd), instead of
    training on for nobody (a killed run once left two orphans training for minutes)."""
    import threading

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent_pid:  # re-parented: the suite process died
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def child_job(kind: str, cfg: dict[str, Any], real: dict[str, Any] | None, key: str, seed: int,
              budget: dict[str, Any], out: str, threads: int, ckpt: str | None = None) -> tuple[dict[str, Any], float]:
    """Worker process: fresh plugins (built-ins + entry points), then one job, ``train`` or ``eval`` of one
    model -> (its result, its seconds)."""
    from fvdm.core.plugins import load_plugins

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    plugins = load_plugins()
    c, b = Config.model_validate(cfg), Budget.model_validate(budget)
    if kind == "train":
        return train_job(c, plugins, Path(out), key, seed, b), time.perf_counter() - t0
    fvd_m = fvd_metric(c, plugins, plugins["feature_extractors"].build(c.extractor))
    assert real is not None and ckpt is not None
    res = evaluate(c, plugins, Path(ckpt), key, models(c)[key]["arms"], seed, fvd_m, real, b)
    return res, time.perf_counter() - t0
