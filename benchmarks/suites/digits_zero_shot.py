"""The ``digits_zero_shot`` suite: the FVDM paper's zero-shot table at CPU scale.

Per seed, two models are trained with identical budgets, data order and seeds on
``moving_digits`` (train split): a vanilla model (``vtv: synchronized``, one
timestep per clip) and an FVDM model (``vtv: ptss, p=0.2``). Then, against the
held-out test split (real set and ground truth):

- unconditional: FVD of N >= 512 sampled clips vs the test clips
- image_to_video, interpolation, extension: FVD of the completed clips, and PSNR/SSIM
  of the generated frames against the held-out ground truth; FVDM samples natively
  (context frames at level 0), vanilla with the replacement trick
- long_video (64+ frames, sliding windows): FVD over 16-frame windows of the
  generated videos vs the same windows of real 64-frame test clips

FVD uses the registered ``digits`` feature extractor (or ``extractor``); statistics
are float64 with a biased covariance (StyleGAN-V). Numbers are mean and spread
(sample std) over ``seeds`` seeds; ``--quick`` runs one seed with a smaller budget.
Everything is seeded, so re-running with the same seed reproduces the numbers on the
same machine and thread count.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, model_validator

from fvdm.core.interfaces import PluginConfig

TASKS = ("unconditional", "image_to_video", "interpolation", "extension", "long_video")
MODELS = {"vanilla": {"name": "synchronized"}, "fvdm": {"name": "ptss", "p": 0.2}}


def _needs(what: str, fix: str) -> Exception:
    from benchmarks.runner import BenchmarkError

    return BenchmarkError(f"digits_zero_shot needs {what}; {fix}")


def _log(msg: str) -> None:
    print(f"[digits_zero_shot {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Budget(PluginConfig):
    """What one run spends; ``full`` and ``quick`` presets below."""

    seeds: int = Field(3, ge=1)
    train_steps: int = Field(400, ge=1)
    sample_steps: int = Field(10, ge=1, description="DDIM steps per window")
    num_uncond: int = Field(512, ge=2, description="unconditional clips for FVD (the protocol wants >= 512)")
    num_task: int = Field(256, ge=2, description="test clips per conditional task (i2v, interpolation, extension)")
    num_long: int = Field(64, ge=2, description="long videos")


class DigitsZeroShotSuite:
    """FVDM (ptss) vs vanilla (synchronized) on moving digits: FVD, PSNR/SSIM per zero-shot task."""

    class Config(PluginConfig):
        full: Budget = Budget()
        quick: Budget = Budget(seeds=1, train_steps=150, sample_steps=8, num_uncond=512, num_task=128, num_long=32)
        num_frames: int = Field(16, ge=4)
        resolution: int = Field(32, ge=8)
        train_clips: int = Field(10000, ge=1)
        batch_size: int = Field(16, ge=1)
        lr: float = Field(5e-4, gt=0)
        warmup_steps: int = Field(50, ge=0)
        ema_decay: float = Field(0.995, ge=0, le=1)
        backbone: dict[str, Any] = Field(default_factory=lambda: {"name": "latte_tiny", "patch_size": 4})
        noise_schedule: dict[str, Any] = Field(default_factory=lambda: {"name": "ddpm"})
        ptss_p: float = Field(0.2, ge=0, le=1)
        sampler: str = "ddim"
        extension_frames: int = Field(4, ge=1, description="given frames for extension")
        long_frames: int = Field(64, ge=17, description="frames per long video")
        long_overlap: int = Field(8, ge=0, description="context frames per window in the long-video rollout")
        eval_batch: int = Field(64, ge=1)
        extractor: dict[str, Any] = Field(default_factory=lambda: {"name": "digits"})
        tasks: list[str] = Field(default_factory=lambda: list(TASKS))
        device: str = "cpu"
        workers: int = Field(2, ge=1, description="processes running models side by side (1 = in-process)")
        reuse_checkpoints: bool = Field(False, description="skip training when OUT/runs/<model>_s<seed> is complete")
        min_fvd_clips: int = Field(512, ge=2, description="refuse an unconditional FVD on fewer clips")

        @model_validator(mode="after")
        def _check(self) -> "DigitsZeroShotSuite.Config":
            bad = [t for t in self.tasks if t not in TASKS]
            if bad:
                raise ValueError(f"unknown task(s) {bad}; choose from {list(TASKS)}")
            if self.extension_frames >= self.num_frames:
                raise ValueError(f"extension_frames={self.extension_frames} must be < num_frames={self.num_frames}")
            if self.long_overlap >= self.num_frames:
                raise ValueError(f"long_overlap={self.long_overlap} must be < num_frames={self.num_frames}")
            return self

    def __init__(self, cfg: "DigitsZeroShotSuite.Config"):
        self.cfg = cfg

    # -- orchestration ---------------------------------------------------------------------
    def run(self, out_dir: Any, *, quick: bool = False, seed: int = 0, plugins: Any = None,
            threads: int = 1) -> dict[str, Any]:
        if plugins is None:
            from fvdm.core.plugins import load_plugins

            plugins = load_plugins()
        self._check_dependencies(plugins)
        budget = self.cfg.quick if quick else self.cfg.full
        if budget.num_uncond < self.cfg.min_fvd_clips:
            raise ValueError(f"unconditional FVD on {budget.num_uncond} clips is below min_fvd_clips="
                             f"{self.cfg.min_fvd_clips}: small N biases FVD upward; raise num_uncond")
        out = Path(out_dir)
        seeds = [seed + i for i in range(budget.seeds)]
        try:
            extractor = plugins["feature_extractors"].build(self.cfg.extractor)
        except FileNotFoundError as exc:
            raise _needs(f"the {self.cfg.extractor['name']!r} extractor's weights ({exc})",
                         "ship them (benchmarks/train_digits_extractor.py) or set extractor.weights") from exc
        metric = self._fvd_metric(plugins, extractor)
        real = self._real_sets(plugins, metric, budget)
        jobs = [(s, m) for s in seeds for m in MODELS]
        per_seed: dict[int, dict[str, Any]] = {s: {} for s in seeds}
        train_info: dict[str, Any] = {}
        workers = min(self.cfg.workers, len(jobs))
        if workers <= 1:
            for s, m in jobs:
                train_info[f"{m}_s{s}"], per_seed[s][m] = self.model_job(plugins, metric, real, m, s, budget, out)
        else:
            # one process per model (1 thread each by default): on few cores this beats one process
            # with several threads, whose small matmuls scale poorly. Children load plugins fresh.
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            child_threads = max(1, threads // workers)
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
                futs = {(s, m): pool.submit(_child_job, self.cfg.model_dump(), real, m, s, budget.model_dump(),
                                            str(out), child_threads) for s, m in jobs}
                for (s, m), fut in futs.items():
                    train_info[f"{m}_s{s}"], per_seed[s][m] = fut.result()
        metrics = {"per_seed": per_seed, "summary": self._summary(per_seed), "train": train_info,
                   "budget": budget.model_dump(), "threads": threads, "workers": workers,
                   "threads_per_worker": threads if workers <= 1 else max(1, threads // workers),
                   "extractor": {"id": getattr(extractor, "extractor_id", "?"),
                                 "weights_sha256": getattr(extractor, "weights_sha256", "?")}}
        return {"metrics": metrics, "seeds": seeds, "tables": [self._table(metrics["summary"], len(seeds))],
                "plots": self._plots(metrics["summary"]),
                "notes": [f"{len(seeds)} seed(s) {seeds}; budget {budget.model_dump()}",
                          "vanilla = synchronized timesteps + replacement trick for context; "
                          f"fvdm = ptss p={self.cfg.ptss_p}, native per-frame context",
                          f"FVD: float64 stats, biased covariance, extractor {metrics['extractor']['id']}, "
                          "real set = moving_digits test split",
                          f"{workers} worker process(es) x {metrics['threads_per_worker']} thread(s)"]}

    def model_job(self, plugins: Any, metric: Any, real: dict[str, Any], model_name: str, seed: int,
                  budget: Budget, out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        """Train one model and evaluate it on every task -> (train info, task results)."""
        ckpt, info = self._train(plugins, out / "runs" / f"{model_name}_s{seed}", seed, model_name,
                                 MODELS[model_name], budget)
        return info, self._evaluate(plugins, ckpt, model_name, seed, metric, real, budget)

    def _check_dependencies(self, plugins: Any) -> None:
        missing = []
        for mod in ("fvdm.core.engine", "fvdm.core.checkpoint", "fvdm.core.sampling", "fvdm.tasks.base",
                    "fvdm.plugins.evaluators.metric"):
            try:
                __import__(mod)
            except ImportError as exc:
                missing.append(f"{mod} ({exc})")
        for kind, name in (("datasets", "moving_digits"), ("vtv_strategies", "ptss"),
                           ("vtv_strategies", "synchronized"), ("samplers", self.cfg.sampler),
                           ("sampling_schedules", "standard"), ("feature_extractors", self.cfg.extractor["name"]),
                           ("evaluators", "fvd_digits"), ("evaluators", "psnr"), ("evaluators", "ssim")):
            if name not in plugins[kind]:
                missing.append(f"{kind} {name!r}")
        for task in self.cfg.tasks:
            if task not in plugins["tasks"]:
                missing.append(f"tasks {task!r}")
        if missing:
            raise _needs(", ".join(missing), "these land with their issues (engine, tasks, evaluators); "
                         "`fvdm plugins` lists what is registered")

    # -- data ------------------------------------------------------------------------------
    def _data_spec(self, split: str, num_frames: int, num_clips: int, seed: int = 0) -> dict[str, Any]:
        return {"name": "moving_digits", "split": split, "num_frames": num_frames,
                "resolution": self.cfg.resolution, "num_clips": num_clips, "seed": seed}

    def _clips(self, plugins: Any, spec: dict[str, Any], n: int) -> torch.Tensor:
        ds = plugins["datasets"].build(spec)
        return torch.stack([ds[i]["video"] for i in range(min(n, len(ds)))])  # (N, F, C, H, W) in [-1, 1]

    def _fvd_metric(self, plugins: Any, extractor: Any) -> Any:
        """The registered ``fvd_digits`` preset, every given clip used, our extractor instance."""
        entry = plugins["evaluators"].get("fvd_digits")
        cfg = entry.config.model_validate({"extractor": self.cfg.extractor, "num_real": None, "num_fake": None,
                                           "batch_size": self.cfg.eval_batch})
        return entry.obj(cfg, extractor=extractor, plugins=plugins)

    def _real_sets(self, plugins: Any, metric: Any, budget: Budget) -> dict[str, Any]:
        from fvdm.core.media import to_uint8

        F = self.cfg.num_frames
        n_real = max(budget.num_uncond, budget.num_task)
        test = self._clips(plugins, self._data_spec("test", F, n_real), n_real)
        if test.shape[0] < self.cfg.min_fvd_clips:
            raise ValueError(f"the test split gave {test.shape[0]} clips, fewer than min_fvd_clips="
                             f"{self.cfg.min_fvd_clips}")
        n_long = max(budget.num_long, n_real // (self.cfg.long_frames // F))
        long = self._clips(plugins, self._data_spec("test", self.cfg.long_frames, n_long), n_long)
        _log(f"real sets: test clips {tuple(test.shape)}, long test clips {tuple(long.shape)}")
        return {"clips": test, "stats": metric.real_stats(to_uint8(test)),
                "long_stats": metric.real_stats(to_uint8(self._windows(long)))}

    def _windows(self, videos: torch.Tensor) -> torch.Tensor:
        """Non-overlapping ``num_frames`` windows of long videos -> (N * n_win, F, C, H, W)."""
        F = self.cfg.num_frames
        n_win = videos.shape[1] // F
        return torch.cat([videos[:, i * F:(i + 1) * F] for i in range(n_win)])

    @staticmethod
    def _fvd(metric: Any, real_stats: Any, fake: torch.Tensor) -> float:
        from fvdm.core.media import to_uint8

        return float(metric.evaluate(to_uint8(fake), real_stats)["value"])

    # -- training --------------------------------------------------------------------------
    def experiment(self, model_name: str, vtv: dict[str, Any], seed: int, budget: Budget) -> Any:
        """The ExperimentConfig of one model: identical except for ``vtv``."""
        from fvdm.core.config import ExperimentConfig

        if model_name == "fvdm":
            vtv = {**vtv, "p": self.cfg.ptss_p}
        return ExperimentConfig.model_validate({
            "name": f"digits_{model_name}_s{seed}", "seed": seed,
            "data": self._data_spec("train", self.cfg.num_frames, self.cfg.train_clips),
            "backbone": self.cfg.backbone, "noise_schedule": self.cfg.noise_schedule, "vtv": vtv,
            "autoencoder": "identity",
            "train": {"steps": budget.train_steps, "batch_size": self.cfg.batch_size, "lr": self.cfg.lr,
                      "warmup_steps": min(self.cfg.warmup_steps, budget.train_steps - 1),
                      "ema_decay": self.cfg.ema_decay, "tensorboard": False, "sample_every": 0,
                      "log_every": max(1, budget.train_steps // 5), "ckpt_every": budget.train_steps},
            "sample": {"sampler": self.cfg.sampler, "schedule": "standard", "steps": budget.sample_steps},
        })

    def _train(self, plugins: Any, run_dir: Path, seed: int, model_name: str, vtv: dict[str, Any],
               budget: Budget) -> tuple[Path, dict[str, Any]]:
        from fvdm.core import engine
        from fvdm.core.checkpoint import load_checkpoint

        cfg = self.experiment(model_name, vtv, seed, budget)
        ckpt = run_dir / "checkpoints" / "last.pt"
        if self.cfg.reuse_checkpoints and ckpt.is_file() and int(load_checkpoint(ckpt)["step"]) == budget.train_steps:
            _log(f"reusing {ckpt}")
            return ckpt, {"reused": True}
        _log(f"training {model_name} seed {seed}: {budget.train_steps} steps")
        t0 = time.perf_counter()
        res = engine.train(cfg, plugins, run_dir=run_dir, overwrite=True, device=self.cfg.device, progress=False)
        return Path(res["checkpoint"]), {"final_loss": res["final_loss"], "steps": res["step"],
                                         "train_s": time.perf_counter() - t0, "num_params": res["num_params"]}

    # -- evaluation ------------------------------------------------------------------------
    def _context(self, plugins: Any, lm: Any, budget: Budget, seed: int) -> Any:
        from fvdm.tasks.base import SamplingContext

        return SamplingContext(
            model=lm.model, schedule=lm.schedule, sampler=plugins["samplers"].build(self.cfg.sampler),
            matrix=plugins["sampling_schedules"].build("standard"), num_frames=lm.num_frames,
            shape=(lm.latent_channels, lm.latent_resolution, lm.latent_resolution), steps=budget.sample_steps,
            batch_size=self.cfg.eval_batch, generator=torch.Generator().manual_seed(seed),
            device=self.cfg.device, plugins=plugins)

    def _evaluate(self, plugins: Any, ckpt: Path, model_name: str, seed: int, metric: Any,
                  real: dict[str, Any], budget: Budget) -> dict[str, Any]:
        from fvdm.core.checkpoint import load_for_sampling

        lm = load_for_sampling(ckpt, plugins, device=self.cfg.device)
        mode = "fvdm" if model_name == "fvdm" else "vanilla_replacement"
        F, k_ext = self.cfg.num_frames, self.cfg.extension_frames
        gt = real["clips"][:budget.num_task]
        out: dict[str, Any] = {}
        for task_name in self.cfg.tasks:
            t0 = time.perf_counter()
            # one generator per (seed, task): a task's numbers do not depend on which tasks ran before
            sampling = self._context(plugins, lm, budget, seed * 100 + TASKS.index(task_name))
            if task_name == "unconditional":
                task = plugins["tasks"].build({"name": "unconditional"})
                fake = self._batched(sampling, lm, budget.num_uncond, lambda sl: task.run(sampling, {"num_frames": F}))
                res = {"fvd": self._fvd(metric, real["stats"], fake), "n": fake.shape[0]}
            elif task_name == "long_video":
                task = plugins["tasks"].build({"name": "long_video", "mode": mode,
                                               "num_frames": self.cfg.long_frames, "overlap": self.cfg.long_overlap})
                fake = self._batched(sampling, lm, budget.num_long, lambda sl: task.run(sampling, {}))
                wins = self._windows(fake)
                res = {"fvd": self._fvd(metric, real["long_stats"], wins), "n_videos": fake.shape[0],
                       "n_windows": wins.shape[0], "frames": fake.shape[1]}
            else:
                task = plugins["tasks"].build({"name": task_name, "mode": mode})
                if task_name == "image_to_video":
                    given = [0]
                    inputs = lambda g: {"image": g[:, 0]}  # noqa: E731
                elif task_name == "interpolation":
                    given = [0, F - 1]
                    inputs = lambda g: {"first": g[:, 0], "last": g[:, -1]}  # noqa: E731
                else:
                    given = list(range(k_ext))
                    inputs = lambda g: {"video": g[:, :k_ext], "num_frames": F}  # noqa: E731
                fake = self._batched(sampling, lm, gt.shape[0],
                                     lambda sl: task.run(sampling, inputs(self._encode(lm, gt[sl]))))
                mask = torch.ones(fake.shape[:2], dtype=torch.bool)
                mask[:, given] = False  # score generated frames only
                res = {"fvd": self._fvd(metric, real["stats"], fake), "n": fake.shape[0],
                       **self._psnr_ssim(plugins, fake, gt, mask),
                       "context_max_abs_err": float((fake[:, given] - gt[:, given]).abs().max())}
            res["seconds"] = time.perf_counter() - t0
            _log(f"{model_name} s{seed} {task_name}: " + ", ".join(
                f"{k}={v:.4g}" for k, v in res.items() if isinstance(v, float)))
            out[task_name] = res
        return out

    def _encode(self, lm: Any, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.cfg.device)
        return lm.autoencoder.encode(x) if lm.latent_channels != lm.channels else x

    def _batched(self, sampling: Any, lm: Any, n: int, fn: Any) -> torch.Tensor:
        """Call ``fn(slice)`` over ``n`` items in ``eval_batch`` chunks -> pixels (n, F, C, H, W) in [-1, 1]."""
        outs = []
        for i in range(0, n, self.cfg.eval_batch):
            b = min(self.cfg.eval_batch, n - i)
            sampling.batch_size = b  # tasks without tensor inputs take their batch from here
            with torch.inference_mode():
                x = fn(slice(i, i + b))
                if lm.latent_channels != lm.channels:
                    x = lm.autoencoder.decode(x)
            outs.append(x.float().clamp(-1, 1).cpu())
        return torch.cat(outs)

    @staticmethod
    def _psnr_ssim(plugins: Any, fake: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
        """PSNR (dB) / SSIM of the generated frames (``mask``) against ground truth, on [0, 1]."""
        f01, g01 = (fake + 1) / 2, (gt + 1) / 2
        return {m: float(plugins["evaluators"].build(m).evaluate(f01, g01, mask=mask)["value"])
                for m in ("psnr", "ssim")}

    # -- reporting -------------------------------------------------------------------------
    @staticmethod
    def _summary(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
        """task -> metric -> model -> {mean, std, n, values}."""
        summary: dict[str, Any] = {}
        for s, models in per_seed.items():
            for model, tasks in models.items():
                for task, res in tasks.items():
                    for metric in ("fvd", "psnr", "ssim"):
                        if metric in res:
                            summary.setdefault(task, {}).setdefault(metric, {}).setdefault(
                                model, {"values": []})["values"].append(res[metric])
        for task in summary.values():
            for metric in task.values():
                for agg in metric.values():
                    v = agg["values"]
                    agg.update(mean=statistics.fmean(v), std=statistics.stdev(v) if len(v) > 1 else 0.0, n=len(v))
        return summary

    @staticmethod
    def _table(summary: dict[str, Any], n_seeds: int) -> dict[str, Any]:
        def cell(agg: dict[str, Any] | None) -> str:
            if agg is None:
                return "-"
            return f"{agg['mean']:.4g} ± {agg['std']:.2g}" if agg["n"] > 1 else f"{agg['mean']:.4g}"

        rows = []
        for task, metrics in summary.items():
            for metric, models in metrics.items():
                better = "lower" if metric == "fvd" else "higher"
                v, f = models.get("vanilla"), models.get("fvdm")
                delta = f"{f['mean'] - v['mean']:+.4g}" if v and f else "-"
                rows.append([task, f"{metric.upper()} ({better} is better)", cell(v), cell(f), delta])
        spread = f"mean ± sample std over {n_seeds} seeds" if n_seeds > 1 else "one seed"
        return {"title": f"zero-shot tasks on moving digits ({spread})",
                "columns": ["task", "metric", "vanilla (synchronized + replacement)", "FVDM (ptss, native)",
                            "FVDM - vanilla"],
                "rows": rows}

    @staticmethod
    def _plots(summary: dict[str, Any]) -> list[dict[str, Any]]:
        plots = []
        for metric in ("fvd", "psnr", "ssim"):
            tasks = [t for t in summary if metric in summary[t]]
            if not tasks:
                continue
            plots.append({"name": f"digits_{metric}", "kind": "bar", "x": tasks,
                          "title": f"moving digits: {metric.upper()} per task", "ylabel": metric.upper(),
                          "series": {m: [summary[t][metric].get(m, {}).get("mean", float("nan")) for t in tasks]
                                     for m in ("vanilla", "fvdm")},
                          "errors": {m: [summary[t][metric].get(m, {}).get("std", 0.0) for t in tasks]
                                     for m in ("vanilla", "fvdm")}})
        return plots


def _child_job(cfg: dict[str, Any], real: dict[str, Any], model_name: str, seed: int, budget: dict[str, Any],
               out: str, threads: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Worker process: fresh plugins (built-ins + entry points), one model trained and evaluated."""
    from fvdm.core.plugins import load_plugins

    torch.set_num_threads(threads)
    plugins = load_plugins()
    suite = DigitsZeroShotSuite(DigitsZeroShotSuite.Config.model_validate(cfg))
    metric = suite._fvd_metric(plugins, plugins["feature_extractors"].build(suite.cfg.extractor))
    return suite.model_job(plugins, metric, real, model_name, seed, Budget.model_validate(budget), Path(out))
