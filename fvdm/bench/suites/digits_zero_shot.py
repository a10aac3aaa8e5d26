"""The ``digits_zero_shot`` suite: the FVDM paper's zero-shot claim as a fair, paired experiment.

Design (every part is a config field; the defaults below are the pre-registered design)

- **Arms.** An arm is a name, a training VTV strategy spec (any registered
  ``vtv_strategies`` entry with its params, a third-party plugin's too), a
  training-steps multiplier and a sampling mode:

  ``native``       context frames held at level 0 by the per-frame schedule (FVDM)
  ``replacement``  the vanilla replacement trick: context re-noised to the generated
                   frames' level every step, clean values put back at the end
  ``stabilized``   context shown to the model at a small nonzero level
                   (``stabilization``, Diffusion Forcing), its values kept clean

  Arms with the same training spec (strategy + params + multiplier) share one
  trained model per seed: it is trained once and sampled each way.
- **Defaults.** vanilla = synchronized + replacement (the classic baseline, the row
  every difference is taken against); PTSS p in {0.1, 0.2, 0.5}; independent (p=1);
  PTSS p=0.2 at 1.25x the steps: PTSS synchronizes a clip with probability 1-p = 0.8,
  so 1.25x the steps shows it as many synchronized clips as vanilla sees (0.8 x 1.25
  = 1), which separates "PTSS adds per-frame training" from "PTSS takes synchronized
  training away"; the 2x2 of training (synchronized / PTSS 0.2) x sampling (native /
  replacement), which separates the training effect from the sampling effect; and
  PTSS 0.2 with stabilized sampling.
- **Paired seeds.** Per seed every model sees the same data order and the same
  training noise tensors (the engine's separate t / noise / label generators), and
  every test clip gets the same sampling noise in every arm (one generator per
  (seed, task, batch), on the sampling device).
- **Data.** Conditioning clips (and their ground truth) come from the test split
  with ``conditioning_seed``; the FVD reference statistics from ``num_reference``
  (>= 1024) clips of the same split drawn with ``reference_seed`` (a different seed:
  the same distribution, no clip in common; checked), so no generated clip contains
  a copy of a reference frame.
- **Statistics.** Per seed, per task and metric: the paired difference arm - vanilla;
  mean and 95% confidence interval with the t distribution (``scipy.stats.t``; without
  scipy, a table of two-sided 97.5% t quantiles for df <= 30 and 1.96 beyond).
- **Success criteria** (``criteria``) are fixed in the config before the run and
  printed with a verdict: *supported* when the 95% CI of the paired difference
  excludes 0 in the arm's favour, *contradicted* when it excludes 0 against it,
  *inconclusive* otherwise (and always with fewer than 2 seeds).
- **Trivial baselines** per conditional task (all-black, mean frame of the reference
  set, copy of the nearest given frame, ground truth + N(0, sigma^2) noise, sigma on
  the [-1, 1] scale) and, for unconditional FVD, the real clips with and without noise.
- **Metrics** (``metrics``): ``fvd`` (the ``extractor``; float64 statistics, biased
  covariance) and any registered evaluator by name, called as
  ``evaluate(fake, real, mask=..., [given=, context=, task=, trajectories=, truth=])``
  on [0, 1] clips (an evaluator without ``**kwargs`` gets the keys it names;
  ``truth`` is ``digits_truth(dataset, clips)`` when that module exists); one that
  needs ground-truth trajectories (``needs_trajectories: true`` in its metrics entry
  or as a class attribute, ``"trajectories"`` in ``needs``, a required
  ``trajectories`` parameter, or a name in ``TRUTH_METRICS``) is refused on data
  without ``trajectories()``.

Budgets (``standard`` is the default, ``quick`` with --quick). ``plan()`` counts what a
budget costs (training steps; sampled clip-windows, each ``sample_steps`` model calls)
and estimates the time from ``UNIT_COSTS``, measured in the committed standard run
(unet_video, batch 8, 8x32x32 clips, bf16, 2 workers x 1 thread on the 2-core machine):
0.28 s per training step, 0.024 s per conditional clip-window per DDIM step (metrics
included), about the same per unconditional clip per step, 25 s of setup (reference
statistics, baselines). With the primary arms (5 arms, 2 trained models per seed):

  standard  5 seeds x 2000 steps, 8 DDIM steps, 64 clips per conditional task, 8 long
            videos, 256 unconditional clips: 20,000 training steps -> 64 min measured
            (git 042cc12, benchmarks/results/digits_zero_shot; 1200 steps took 62 min
            before unet_video's attention went through the math kernel)
  quick     1 seed x 400 steps, 8 DDIM steps, 32 clips per task, 2 long videos: ~5 min
            estimated from the same unit costs (230 s measured at git 257c7d6)

``arm_preset: all`` (6 models per seed) multiplies the training part by 3: a GPU budget.
Re-measure when the backbone changes (``results.json`` records ``plan``, ``costs``
(measured s per step and per clip) and the seconds of every training and task).
``--set device=cuda`` runs models, data, and every generator on the GPU, so a lent GPU
can run a larger budget (``--set standard.train_steps=...``).

Bad input (unknown strategy or sampling mode, a budget below a refusal floor, a
metric that needs trajectories on data without them, unknown arms in criteria) is
refused with a one-line ``BenchmarkError`` before any training starts.
"""

from __future__ import annotations

import dataclasses

import inspect
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Literal

import torch
from einops import rearrange, repeat
from pydantic import Field, field_validator, model_validator

from fvdm.core.interfaces import PluginConfig

TASKS = ("unconditional", "image_to_video", "interpolation", "extension", "long_video")
COND_TASKS = ("image_to_video", "interpolation", "extension")
#: sampling mode -> (task mode, shows context at the arm's stabilization level)
SAMPLING_MODES = {"native": ("fvdm", False), "replacement": ("vanilla_replacement", False),
                  "stabilized": ("fvdm", True)}
#: metrics whose direction is known here; any other evaluator says so itself (higher_is_better) or in its entry
DIRECTIONS = {"fvd": False, "psnr": True, "ssim": True, "digit_recognisability": True, "digit_identity": True,
              "trajectory_error": False, "boundary_jump": False}
#: metrics with an ideal value (1.0 = as smooth as real video): differences compare |value - target|, lower better
TARGETS = {"boundary_jump": 1.0}
#: the baseline rows that are the data itself: the ceiling every other baseline is checked against
TRUTH_ROWS = ("ground truth", "real")
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)  # two-sided 95% t quantiles, df = 1..30 (fallback without scipy)
#: seconds per unit, one worker thread (unet_video batch 8, bf16), measured on the mostly idle 2-core machine
UNIT_COSTS = {"train_step": 0.28, "cond_window_step": 0.024, "uncond_clip_step": 0.024, "setup": 25.0}


def _needs(what: str, fix: str) -> Exception:
    from fvdm.bench.runner import BenchmarkError

    return BenchmarkError(f"digits_zero_shot needs {what}; {fix}")


def _refuse(msg: str) -> Exception:
    from fvdm.bench.runner import BenchmarkError

    return BenchmarkError("digits_zero_shot: " + " ".join(str(msg).split()))  # one line, whatever msg holds


def _log(msg: str) -> None:
    print(f"[digits_zero_shot {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def t_quantile(df: int) -> float:
    """Two-sided 95% quantile of Student's t with ``df`` degrees of freedom."""
    try:
        from scipy import stats

        return float(stats.t.ppf(0.975, df))
    except ImportError:  # documented fallback: tabulated for small df, normal beyond
        return _T975[df - 1] if df <= len(_T975) else 1.96


def mean_ci(values: list[float]) -> dict[str, Any]:
    """Mean, sample std and 95% t confidence interval of ``values`` (CI is NaN with fewer than 2)."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return {"mean": mean, "std": float("nan"), "n": n, "ci_low": float("nan"), "ci_high": float("nan"),
                "values": list(values)}
    sd = statistics.stdev(values)
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "std": sd, "n": n, "ci_low": mean - half, "ci_high": mean + half, "values": list(values)}


def verdict(ci_low: float, ci_high: float, higher_is_better: bool) -> str:
    """supported / contradicted / inconclusive for a difference (arm - other) with this CI."""
    if not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return "inconclusive"
    if ci_low > 0 or ci_high < 0:
        favours_arm = (ci_low > 0) == higher_is_better
        return "supported" if favours_arm else "contradicted"
    return "inconclusive"


class Arm(PluginConfig):
    """One arm: what the model is trained with and how it is sampled."""

    name: str
    vtv: dict[str, Any] = Field(default_factory=lambda: {"name": "synchronized"},
                                description="training VTV strategy spec: any registered vtv_strategies name + params")
    steps_multiplier: float = Field(1.0, gt=0, description="train for round(multiplier x budget.train_steps) steps")
    sampling: str = Field("native", description="native | replacement | stabilized (checked before training)")
    stabilization: float = Field(0.05, gt=0, lt=1, description="level at which `stabilized` shows context")


def _arm(name: str, vtv: dict[str, Any], sampling: str = "native", mult: float = 1.0) -> dict[str, Any]:
    return {"name": name, "vtv": vtv, "sampling": sampling, "steps_multiplier": mult}


SYNC, PTSS02 = {"name": "synchronized"}, {"name": "ptss", "p": 0.2}
PRIMARY_ARMS = [  # two trained models per seed: the 2x2 of training x sampling, plus stabilization
    _arm("vanilla", SYNC, "replacement"),  # the baseline; also the 2x2's synchronized x replacement cell
    _arm("vanilla_native", SYNC, "native"),  # 2x2: synchronized x native
    _arm("ptss_0.2", PTSS02, "native"),  # 2x2: PTSS x native (the paper's FVDM)
    _arm("ptss_0.2_replacement", PTSS02, "replacement"),  # 2x2: PTSS x replacement
    _arm("ptss_0.2_stabilized", PTSS02, "stabilized"),
]
DEFAULT_ARMS = [  # arm_preset "all": four more trained models per seed (the p sweep and the step-matched arm)
    *PRIMARY_ARMS,
    _arm("ptss_0.1", {"name": "ptss", "p": 0.1}),
    _arm("ptss_0.5", {"name": "ptss", "p": 0.5}),
    _arm("independent", {"name": "independent"}),  # p = 1
    _arm("ptss_0.2_x1.25", PTSS02, "native", 1.25),  # as many synchronized clips as vanilla
]


class Criterion(PluginConfig):
    """A claim fixed before the run: ``arm`` beats ``against`` on ``metric`` of ``task``."""

    arm: str
    against: str | None = Field(None, description="default: the suite's baseline arm")
    task: str
    metric: str = "fvd"
    why: str = ""


def _crit(arm: str, task: str, metric: str, why: str, against: str | None = None) -> dict[str, Any]:
    return {"arm": arm, "task": task, "metric": metric, "why": why, "against": against}


DEFAULT_CRITERIA = [
    *[_crit("ptss_0.2", t, "fvd", "FVDM (PTSS 0.2, native) beats vanilla (synchronized, replacement): the paper's "
            "zero-shot claim") for t in ("image_to_video", "interpolation", "extension", "long_video")],
    _crit("ptss_0.2", "unconditional", "fvd", "PTSS costs nothing unconditionally: contradicted = it does"),
    _crit("ptss_0.2_replacement", "image_to_video", "fvd", "training effect alone (both sampled by replacement)"),
    _crit("vanilla_native", "image_to_video", "fvd", "sampling effect alone (both trained synchronized)"),
    _crit("ptss_0.2", "image_to_video", "fvd", "training effect under native sampling", against="vanilla_native"),
    _crit("ptss_0.2_x1.25", "image_to_video", "fvd", "PTSS helps even with as many synchronized samples",
          against="ptss_0.2"),
]


class Budget(PluginConfig):
    """What one run spends; ``standard`` and ``quick`` presets below."""

    seeds: int = Field(5, ge=1)
    train_steps: int = Field(2000, ge=1, description="per model; an arm trains steps_multiplier x this")
    sample_steps: int = Field(8, ge=1, description="DDIM steps per window")
    num_uncond: int = Field(256, ge=2, description="unconditional clips per model for FVD")
    num_task: int = Field(64, ge=2, description="test clips per conditional task (i2v, interpolation, extension)")
    num_long: int = Field(8, ge=1, description="long videos")
    num_reference: int = Field(1024, ge=2, description="reference clips behind the FVD statistics (>= 1024)")


class DigitsZeroShotSuite:
    """Arms (any VTV strategy x sampling mode) on moving digits: paired FVD / PSNR / SSIM with 95% CIs."""

    class Config(PluginConfig):
        standard: Budget = Budget()
        quick: Budget = Budget(seeds=1, train_steps=400, sample_steps=8, num_uncond=256, num_task=32, num_long=2)
        arm_preset: Literal["primary", "all"] = Field(
            "primary", description="default arms when `arms` is not given: primary = the 2x2 of training "
            "(synchronized / PTSS 0.2) x sampling (native / replacement) + stabilized (2 models per seed); all = "
            "also PTSS 0.1, 0.5, independent and PTSS 0.2 at 1.25x steps (6 models per seed, ~3x the time: a GPU "
            "budget, `--set arm_preset=all`)")
        arms: list[Arm] | None = Field(None, description="explicit arms (overrides arm_preset)")
        baseline: str = Field("vanilla", description="the arm every paired difference is taken against")
        criteria: list[Criterion] | None = Field(
            None, description="explicit criteria; default: the pre-registered ones whose arms are in the run")
        metrics: list[dict[str, Any]] = Field(
            default_factory=lambda: [{"name": n} for n in ("fvd", "psnr", "ssim", "digit_recognisability",
                                                           "digit_identity", "trajectory_error", "boundary_jump")],
            description="fvd (the extractor) or registered evaluators by name (+ params, higher_is_better)")
        dataset: dict[str, Any] = Field(default_factory=lambda: {"name": "moving_digits"},
                                        description="dataset spec; split/num_frames/resolution/seed are set here")
        conditioning_seed: int = Field(0, ge=0, description="data seed of the test clips the tasks condition on")
        reference_seed: int = Field(1, ge=0, description="data seed of the FVD reference clips (!= conditioning)")
        min_seeds: int = Field(5, ge=1, description="refusal floor for the standard budget's seeds")
        min_reference: int = Field(1024, ge=2, description="refusal floor for budget.num_reference")
        min_fvd_clips: int = Field(256, ge=2, description="refuse an unconditional FVD on fewer clips: 256 = 4x the "
                                   "digits extractor's 64 features; the small-N bias is equal in both arms of a "
                                   "paired difference (512 costs ~10 more minutes in standard)")
        # The recipe of the demo, chosen by the measured sweep (README, benchmarks/digits_recipe.py).
        num_frames: int = Field(8, ge=4)
        resolution: int = Field(32, ge=8)
        train_clips: int = Field(10000, ge=1)
        batch_size: int = Field(8, ge=1)
        lr: float = Field(1e-3, gt=0)
        warmup_steps: int = Field(50, ge=0)
        ema_decay: float = Field(0.995, ge=0, le=1)
        bf16: bool = Field(True, description="bf16 autocast in training (CPU with avx512_bf16, or CUDA)")
        backbone: dict[str, Any] = Field(default_factory=lambda: {"name": "unet_video"})
        noise_schedule: dict[str, Any] = Field(
            default_factory=lambda: {"name": "ddpm", "prediction": "v", "learn_sigma": False})
        sampler: dict[str, Any] = Field(default_factory=lambda: {"name": "ddim", "clip_x0": 1.0},
                                        description="sampler spec (name + params)")
        history_guidance: float = Field(1.0, ge=0, description="history guidance scale on the tasks with context "
                                                               "(1 = off); unconditional is sampled without")
        history_level: float = Field(1.0, gt=0, le=1, description="level the unguided branch shows context at")
        extension_frames: int = Field(4, ge=1, description="given frames for extension")
        long_frames: int = Field(64, ge=17, description="frames per long video")
        long_overlap: int = Field(4, ge=0, description="context frames per window in the long-video rollout")
        noise_sigma: float = Field(0.3, ge=0, description="real + N(0, sigma^2) baseline, [-1, 1] scale")
        eval_batch: int = Field(64, ge=1)
        extractor: dict[str, Any] = Field(default_factory=lambda: {"name": "digits"})
        tasks: list[str] = Field(default_factory=lambda: list(TASKS))
        device: str = Field("cpu", description="cpu or cuda[:i]: models, data, generators all live there")
        workers: int = Field(2, ge=1, description="processes training models side by side (1 = in-process)")
        reuse_checkpoints: bool = Field(False, description="skip training when OUT/runs/<model>_s<seed> is complete")

        @field_validator("metrics", mode="before")
        @classmethod
        def _names(cls, v: Any) -> Any:
            return [{"name": m} if isinstance(m, str) else m for m in v] if isinstance(v, list) else v

        @model_validator(mode="after")
        def _check(self) -> "DigitsZeroShotSuite.Config":
            if self.arms is None:
                self.arms = [Arm(**a) for a in (PRIMARY_ARMS if self.arm_preset == "primary" else DEFAULT_ARMS)]
            if self.criteria is None:
                names = {a.name for a in self.arms}
                self.criteria = [Criterion(**c) for c in DEFAULT_CRITERIA
                                 if c["arm"] in names and (c["against"] or self.baseline) in names]
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
        self._evaluators: dict[str, Any] = {}  # metrics entry -> built evaluator (weights loaded once per process)

    # -- the design, checked before anything runs ------------------------------------------
    def models(self) -> dict[str, dict[str, Any]]:
        """Trained-model key -> {vtv, steps_multiplier, arms}: arms with one training spec share a model."""
        out: dict[str, dict[str, Any]] = {}
        for arm in self.cfg.arms:
            spec = {"vtv": dict(arm.vtv), "steps_multiplier": arm.steps_multiplier}
            for key, m in out.items():
                if {"vtv": m["vtv"], "steps_multiplier": m["steps_multiplier"]} == spec:
                    m["arms"].append(arm.name)
                    break
            else:
                out[_slug(spec)] = {**spec, "arms": [arm.name]}
        return out

    def plan(self, budget: Budget) -> dict[str, Any]:
        """What a budget costs in units: training steps and sampled clip-windows (x sample steps each)."""
        models, arms = self.models(), self.cfg.arms
        steps = sum(round(m["steps_multiplier"] * budget.train_steps) for m in models.values()) * budget.seeds
        F, o = self.cfg.num_frames, self.cfg.long_overlap
        long_windows = 1 + math.ceil(max(0, self.cfg.long_frames - F) / (F - o))
        ext_windows = 1  # extension to num_frames: one window
        per_arm = sum({"image_to_video": 1, "interpolation": 1, "extension": ext_windows}.get(t, 0) * budget.num_task
                      for t in self.cfg.tasks) + (long_windows * budget.num_long if "long_video" in self.cfg.tasks
                                                  else 0)
        uncond = budget.num_uncond if "unconditional" in self.cfg.tasks else 0
        windows = (per_arm * len(arms) + uncond * len(models)) * budget.seeds
        c = UNIT_COSTS
        worker_s = (steps * c["train_step"] + budget.sample_steps * budget.seeds * (
            per_arm * len(arms) * c["cond_window_step"] + uncond * len(models) * c["uncond_clip_step"]))
        workers = max(1, min(self.cfg.workers, len(models) * budget.seeds))
        shared_min = (c["setup"] + worker_s / workers) / 60
        return {"trained_models": len(models) * budget.seeds, "train_steps": steps, "clip_windows": windows,
                "model_calls": windows * budget.sample_steps, "arms": len(arms), "seeds": budget.seeds,
                "estimate_min_shared_machine": round(shared_min, 1),
                "estimate_min_idle_machine": round(shared_min, 1)}  # costs were measured idle: one estimate

    def validate(self, plugins: Any, budget: Budget, quick: bool) -> dict[str, Any]:
        """Every bad-input check, before any training: returns {metric name -> direction, needs_traj}."""
        cfg = self.cfg
        try:
            dev = torch.device(cfg.device)
        except RuntimeError as exc:
            raise _refuse(f"device {cfg.device!r} is not a torch device ({exc}); use cpu or cuda[:i]") from exc
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise _refuse(f"device {cfg.device!r} asked for, but this torch build sees no CUDA device "
                          f"(torch {torch.__version__}); install a CUDA build of torch or use --device cpu")
        names = [a.name for a in cfg.arms]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise _refuse(f"arm name(s) {dup} appear twice; give every arm a unique name")
        if cfg.baseline not in names:
            raise _refuse(f"baseline {cfg.baseline!r} is not an arm ({names}); set baseline to one of them")
        vtv = plugins["vtv_strategies"]
        for arm in cfg.arms:
            if arm.sampling not in SAMPLING_MODES:
                raise _refuse(f"arm {arm.name!r}: unknown sampling mode {arm.sampling!r}; choose one of "
                              f"{', '.join(SAMPLING_MODES)}")
            if "name" not in arm.vtv:
                raise _refuse(f"arm {arm.name!r}: vtv has no 'name'; give a registered strategy, e.g. "
                              "{name: ptss, p: 0.2}")
            if arm.vtv["name"] not in vtv:
                raise _refuse(f"arm {arm.name!r}: {vtv.unknown_message(arm.vtv['name'])} Fix arms[].vtv.name or "
                              "install the plugin that provides it")
            try:
                vtv.validate(arm.vtv)
            except Exception as exc:  # pydantic: several lines -> one
                raise _refuse(f"arm {arm.name!r}: vtv {arm.vtv} is invalid ({_one_line(exc)}); fix its params")
        floors = [(budget.num_reference < cfg.min_reference,
                   f"num_reference={budget.num_reference} is below the floor {cfg.min_reference}: FVD reference "
                   f"statistics need >= {cfg.min_reference} clips; raise num_reference"),
                  ("unconditional" in cfg.tasks and budget.num_uncond < cfg.min_fvd_clips,
                   f"unconditional FVD on {budget.num_uncond} clips is below min_fvd_clips={cfg.min_fvd_clips}: "
                   "small N biases FVD upward; raise num_uncond"),
                  (not quick and budget.seeds < cfg.min_seeds,
                   f"the standard budget has seeds={budget.seeds}, below the floor {cfg.min_seeds}: paired "
                   f"intervals need >= {cfg.min_seeds} seeds; raise standard.seeds (or run --quick to explore)")]
        for below, msg in floors:
            if below:
                raise _refuse(msg)
        if cfg.reference_seed == cfg.conditioning_seed:
            raise _refuse(f"reference_seed = conditioning_seed = {cfg.reference_seed}: the FVD reference would "
                          "contain the conditioning clips; pick a different reference_seed")
        # metrics: known, directed, and with the ground truth they need
        ds = plugins["datasets"].build(self._data_spec("test", self.cfg.num_frames, 2, cfg.conditioning_seed))
        has_traj = callable(getattr(ds, "trajectories", None))
        metrics: dict[str, Any] = {}
        for m in cfg.metrics:
            name = m.get("name")
            if name == "fvd":
                metrics[name] = {"higher_is_better": False, "needs_trajectories": False, "target": None}
                continue
            if name not in plugins["evaluators"]:
                raise _refuse(f"metric {name!r}: {plugins['evaluators'].unknown_message(str(name))} Fix metrics[]")
            cls = plugins["evaluators"].get(name).obj
            hib = m.get("higher_is_better", getattr(cls, "higher_is_better", DIRECTIONS.get(name)))
            if hib is None:
                raise _refuse(f"metric {name!r} does not say which direction is better; add higher_is_better: "
                              "true/false to its metrics entry")
            needs = bool(m.get("needs_trajectories", _needs_trajectories(cls, name)))
            if needs and not has_traj:
                raise _refuse(f"metric {name!r} needs ground-truth trajectories but dataset "
                              f"{cfg.dataset.get('name')!r} has no trajectories(); use moving_digits or drop it "
                              "from metrics")
            target = m.get("target", TARGETS.get(name))
            metrics[name] = {"higher_is_better": bool(hib) if target is None else False, "needs_trajectories": needs,
                             "target": target}
        arms = set(names)
        for c in cfg.criteria:
            against = c.against or cfg.baseline
            for who in (c.arm, against):
                if who not in arms:
                    raise _refuse(f"criterion {c.arm} vs {against} on {c.task}/{c.metric}: {who!r} is not an arm; "
                                  "fix criteria or arms")
            if c.task not in cfg.tasks or c.metric not in metrics:
                raise _refuse(f"criterion {c.arm} on {c.task}/{c.metric}: that task or metric is not run "
                              f"(tasks {cfg.tasks}, metrics {list(metrics)}); fix criteria")
        return metrics

    # -- orchestration ---------------------------------------------------------------------
    def run(self, out_dir: Any, *, plugins: Any, quick: bool = False, seed: int = 0,
            threads: int = 1) -> dict[str, Any]:
        self._check_plugins(plugins)
        budget = self.cfg.quick if quick else self.cfg.standard
        metric_info = self.validate(plugins, budget, quick)
        out = Path(out_dir)
        seeds = [seed + i for i in range(budget.seeds)]
        plan = self.plan(budget)
        _log(f"plan: {plan}")
        try:
            extractor = plugins["feature_extractors"].build(self.cfg.extractor)
        except FileNotFoundError as exc:
            raise _needs(f"the {self.cfg.extractor['name']!r} extractor's weights ({exc})",
                         "ship them (benchmarks/train_digits_extractor.py) or set extractor.weights") from exc
        fvd = self._fvd_metric(plugins, extractor)
        t0 = time.perf_counter()
        real = self._real_sets(plugins, fvd, budget)
        baselines = self._trivial_baselines(plugins, fvd, real, budget, metric_info)
        setup_s = time.perf_counter() - t0
        models = self.models()
        jobs = [(s, key) for s in seeds for key in models]
        per_seed: dict[int, dict[str, Any]] = {s: {} for s in seeds}
        train_info: dict[str, Any] = {}
        workers = min(self.cfg.workers, len(jobs))
        if workers <= 1:
            for s, key in jobs:
                train_info[f"{key}_s{s}"], res = self.model_job(plugins, fvd, real, key, s, budget, out, metric_info)
                per_seed[s].update(res)
        else:
            # one process per model (1 thread each by default): on few cores this beats one process
            # with several threads, whose small matmuls scale poorly. Children load plugins fresh.
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            child_threads = max(1, threads // workers)
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_exit_with_parent,
                                     initargs=(os.getpid(),)) as pool:
                futs = {(s, key): pool.submit(_child_job, self.cfg.model_dump(), real, key, s, budget.model_dump(),
                                              str(out), child_threads, metric_info) for s, key in jobs}
                for (s, key), fut in futs.items():
                    train_info[f"{key}_s{s}"], res = fut.result()
                    per_seed[s].update(res)
        summary = self._summary(per_seed)
        paired = self._paired(per_seed, metric_info)
        criteria = self._criteria(per_seed, metric_info)
        versus = self._versus_baselines(per_seed, baselines, metric_info)
        metrics = {"per_seed": per_seed, "summary": summary, "paired": paired, "criteria": criteria,
                   "baselines": baselines, "versus_baselines": versus, "train": train_info, "plan": plan,
                   "setup_s": setup_s,
                   "models": models, "arms": [a.model_dump() for a in self.cfg.arms], "baseline": self.cfg.baseline,
                   "budget": budget.model_dump(), "threads": threads, "workers": workers,
                   "threads_per_worker": threads if workers <= 1 else max(1, threads // workers),
                   "costs": self._costs(per_seed, train_info, budget),
                   "extractor": {"id": getattr(extractor, "extractor_id", "?"),
                                 "weights_sha256": getattr(extractor, "weights_sha256", "?")}}
        ci = "95% t interval over seeds" if len(seeds) > 1 else "one seed: no interval"
        return {"metrics": metrics, "seeds": seeds,
                "tables": [self._criteria_table(criteria, len(seeds)), self._paired_table(paired, ci),
                           self._arms_table(summary, ci), self._baselines_table(baselines),
                           self._versus_table(versus, ci)],
                "plots": self._plots(paired),
                "notes": [f"{len(seeds)} seed(s) {seeds}; budget {budget.model_dump()}; plan {plan}",
                          "arms: " + "; ".join(f"{a.name} = {_spec_str(a.vtv)}"
                                               f"{f' x{a.steps_multiplier:g} steps' if a.steps_multiplier != 1 else ''}"
                                               f", {a.sampling}" for a in self.cfg.arms),
                          f"paired seeds: same data order, training noise and per-clip sampling noise in every arm; "
                          f"differences are arm - {self.cfg.baseline} per seed, {ci}",
                          "verdict: supported = the 95% CI excludes 0 in the arm's favour, contradicted = against it, "
                          "inconclusive otherwise",
                          "versus baselines: an arm beats (loses to) a trivial baseline when its 95% CI lies on the "
                          "better (worse) side of the baseline's value; a baseline applies to a metric only where the "
                          "ground truth beats it (copying a given frame keeps every digit sharp and identical, so on "
                          "recognisability and identity it outscores real motion and no generator can beat it); "
                          + "; ".join(self._versus_counts(versus)),
                          f"conditioning clips: test split seed {self.cfg.conditioning_seed}; FVD reference: "
                          f"{budget.num_reference} test-split clips of seed {self.cfg.reference_seed} (disjoint)",
                          f"FVD: float64 stats, biased covariance, extractor {metrics['extractor']['id']}",
                          f"{workers} worker process(es) x {metrics['threads_per_worker']} thread(s); "
                          f"costs {metrics['costs']}"]}

    def model_job(self, plugins: Any, fvd: Any, real: dict[str, Any], key: str, seed: int, budget: Budget,
                  out: Path, metric_info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Train one model (a training spec) and evaluate every arm that shares it -> (train info, arm results)."""
        model = self.models()[key]
        steps = max(1, round(model["steps_multiplier"] * budget.train_steps))
        ckpt, info = self._train(plugins, out / "runs" / f"{key}_s{seed}", seed, key, model["vtv"], steps, budget)
        return info, self._evaluate(plugins, ckpt, key, model["arms"], seed, fvd, real, budget, metric_info)

    def _check_plugins(self, plugins: Any) -> None:
        """Every plugin the config names is registered: one error listing them all, before any training."""
        missing = []
        for kind, name in (("datasets", self.cfg.dataset.get("name")), ("samplers", self.cfg.sampler["name"]),
                           ("sampling_schedules", "standard"), ("feature_extractors", self.cfg.extractor["name"]),
                           ("evaluators", "fvd_digits")):
            if name not in plugins[kind]:
                missing.append(f"{kind} {name!r}")
        for task in self.cfg.tasks:
            if task not in plugins["tasks"]:
                missing.append(f"tasks {task!r}")
        if missing:
            raise _needs(", ".join(missing), "install the package that registers them or fix the suite config; "
                         "`fvdm plugins` lists what is registered")

    # -- data ------------------------------------------------------------------------------
    def _data_spec(self, split: str, num_frames: int, num_clips: int, seed: int = 0) -> dict[str, Any]:
        return {**self.cfg.dataset, "split": split, "num_frames": num_frames, "resolution": self.cfg.resolution,
                "num_clips": num_clips, "seed": seed}

    def _clips(self, plugins: Any, spec: dict[str, Any], n: int) -> tuple[torch.Tensor, Any]:
        ds = plugins["datasets"].build(spec)
        return torch.stack([ds[i]["video"] for i in range(min(n, len(ds)))]), ds  # (N, F, C, H, W) in [-1, 1]

    def _fvd_metric(self, plugins: Any, extractor: Any) -> Any:
        """The registered ``fvd_digits`` preset, every given clip used, our extractor instance."""
        entry = plugins["evaluators"].get("fvd_digits")
        cfg = entry.config.model_validate({"extractor": self.cfg.extractor, "num_real": None, "num_fake": None,
                                           "batch_size": self.cfg.eval_batch, "num_frames": self.cfg.num_frames})
        return entry.obj(cfg, extractor=extractor, plugins=plugins)

    def _real_sets(self, plugins: Any, fvd: Any, budget: Budget) -> dict[str, Any]:
        """Conditioning clips + their ground truth (seed c) and the disjoint FVD reference (seed r)."""
        from fvdm.core.media import to_uint8

        F, cseed, rseed = self.cfg.num_frames, self.cfg.conditioning_seed, self.cfg.reference_seed
        n_cond = max(budget.num_task, budget.num_uncond)  # the unconditional real + noise baseline uses these too
        cond, ds = self._clips(plugins, self._data_spec("test", F, n_cond, cseed), n_cond)
        ref, _ = self._clips(plugins, self._data_spec("test", F, budget.num_reference, rseed), budget.num_reference)
        if ref.shape[0] < self.cfg.min_reference:
            raise _refuse(f"the reference split gave {ref.shape[0]} clips, fewer than min_reference="
                          f"{self.cfg.min_reference}; raise the dataset's num_clips")
        shared = {_digest(c) for c in cond} & {_digest(c) for c in ref}
        if shared:  # by construction impossible unless the dataset ignores its seed
            raise _refuse(f"{len(shared)} conditioning clip(s) also appear in the reference set: dataset "
                          f"{self.cfg.dataset.get('name')!r} ignores its seed; use a different split for the reference")
        n_win = self.cfg.long_frames // F
        n_long_ref = math.ceil(budget.num_reference / n_win)
        long_ref, _ = self._clips(plugins, self._data_spec("test", self.cfg.long_frames, n_long_ref, rseed), n_long_ref)
        traj = truth = None
        if callable(getattr(ds, "trajectories", None)):
            traj = [torch.as_tensor(ds.trajectories(i)) for i in range(budget.num_task)]
            try:  # the digit metrics' ground-truth bundle (labels, trajectories, digit size), when available
                from fvdm.plugins.evaluators.digits_truth import digits_truth

                truth = digits_truth(ds, range(budget.num_task))
            except Exception:  # noqa: BLE001 - optional: only the time-aware digit metrics use it
                truth = None
        _log(f"real sets: conditioning {tuple(cond.shape)} (seed {cseed}), reference {tuple(ref.shape)} "
             f"(seed {rseed}), long reference {tuple(long_ref.shape)}")
        return {"clips": cond, "trajectories": traj, "truth": truth,
                "ref_mean_frame": ref.mean(dim=(0, 1)),  # (C, H, W)
                "stats": fvd.real_stats(to_uint8(ref)), "long_stats": fvd.real_stats(to_uint8(self._windows(long_ref)))}

    def _windows(self, videos: torch.Tensor) -> torch.Tensor:
        """Non-overlapping ``num_frames`` windows of long videos -> (N * n_win, F, C, H, W)."""
        F = self.cfg.num_frames
        n_win = videos.shape[1] // F
        return rearrange(videos[:, :n_win * F], "n (w f) c h w2 -> (w n) f c h w2", w=n_win)

    @staticmethod
    def _fvd(metric: Any, real_stats: Any, fake: torch.Tensor) -> float:
        from fvdm.core.media import to_uint8

        return float(metric.evaluate(to_uint8(fake), real_stats)["value"])

    def given(self, task: str) -> list[int]:
        """Frame positions a conditional task is given."""
        F = self.cfg.num_frames
        return {"image_to_video": [0], "interpolation": [0, F - 1],
                "extension": list(range(self.cfg.extension_frames))}[task]

    # -- trivial baselines -----------------------------------------------------------------
    def _trivial_baselines(self, plugins: Any, fvd: Any, real: dict[str, Any], budget: Budget,
                           metric_info: dict[str, Any]) -> dict[str, Any]:
        """task -> baseline -> metric -> value: what no learning at all scores (one value, no seed)."""
        gt = real["clips"][:budget.num_task]  # (N, F, C, H, W)
        g = torch.Generator().manual_seed(12345)
        noisy = lambda x: (x + self.cfg.noise_sigma * torch.randn(x.shape, generator=g)).clamp(-1, 1)  # noqa: E731
        out: dict[str, Any] = {}
        if "unconditional" in self.cfg.tasks:
            uncond = real["clips"][:budget.num_uncond]
            out["unconditional"] = {"real": {"fvd": self._fvd(fvd, real["stats"], uncond)},
                                    f"real + noise {self.cfg.noise_sigma:g}": {
                                        "fvd": self._fvd(fvd, real["stats"], noisy(uncond))}}
        for task in (t for t in COND_TASKS if t in self.cfg.tasks):
            given = self.given(task)
            F = gt.shape[1]
            nearest = [min(given, key=lambda p: (abs(p - j), p)) for j in range(F)]
            fakes = {"ground truth": gt.clone(),  # the ceiling: what a perfect generator scores here
                     "all black": torch.full_like(gt, -1.0),
                     "mean frame": repeat(real["ref_mean_frame"], "c h w -> n f c h w", n=gt.shape[0], f=F).clone(),
                     "copy nearest given frame": gt[:, nearest].clone(),
                     f"real + noise {self.cfg.noise_sigma:g}": noisy(gt)}
            out[task] = {}
            for name, fake in fakes.items():
                fake[:, given] = gt[:, given]  # every baseline keeps the given frames, like the models
                out[task][name] = self._score(plugins, fvd, real, task, fake, gt, metric_info)
        return out

    def _score(self, plugins: Any, fvd: Any, real: dict[str, Any], task: str, fake: torch.Tensor,
               gt: torch.Tensor, metric_info: dict[str, Any]) -> dict[str, float]:
        """Every configured metric of completed clips ``fake`` against ``gt`` (pixels in [-1, 1])."""
        given = self.given(task)
        mask = torch.ones(fake.shape[:2], dtype=torch.bool)
        mask[:, given] = False  # score generated frames only
        f01, g01 = ((fake + 1) / 2).clamp(0, 1), ((gt + 1) / 2).clamp(0, 1)  # as the uint8 FVD path clamps
        res: dict[str, float] = {}
        for m in self.cfg.metrics:
            name = m["name"]
            if name == "fvd":
                res["fvd"] = self._fvd(fvd, real["stats"], fake)
                continue
            key = repr(sorted(m.items()))  # the whole entry: one name may appear with different params
            ev = self._evaluators.get(key)
            if ev is None:
                spec = {k: v for k, v in m.items() if k not in ("higher_is_better", "needs_trajectories")}
                entry = plugins["evaluators"].get(name)
                if (entry.config is not None and "value_range" in entry.config.model_fields
                        and "value_range" not in spec):
                    spec["value_range"] = "0_1"  # we hand evaluators [0, 1] clips; say so to those that ask
                # plugins=: a Fréchet metric (fvd_digits, fid...) builds its feature extractor through it
                ev = self._evaluators[key] = plugins["evaluators"].build(spec, plugins=plugins)
            # what a time-aware metric may need: scored frames, given frames (context), ground truth
            extras = {"mask": mask, "given": given, "context": given, "task": task}
            if real.get("trajectories") is not None:
                extras["trajectories"] = real["trajectories"][:fake.shape[0]]
            if real.get("truth") is not None:
                extras["truth"] = real["truth"]
            params = inspect.signature(ev.evaluate).parameters
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
                extras = {k: v for k, v in extras.items() if k in params}
            res[name] = float(ev.evaluate(f01, g01, **extras)["value"])
        return res

    # -- training --------------------------------------------------------------------------
    def experiment(self, key: str, vtv: dict[str, Any], seed: int, steps: int, budget: Budget) -> Any:
        """The ExperimentConfig of one model: identical across models except for ``vtv`` and ``steps``."""
        from fvdm.core.config import ExperimentConfig

        return ExperimentConfig.model_validate({
            "name": f"digits_{key}_s{seed}", "seed": seed,
            "data": self._data_spec("train", self.cfg.num_frames, self.cfg.train_clips),
            "backbone": self.cfg.backbone, "noise_schedule": self.cfg.noise_schedule, "vtv": vtv,
            "autoencoder": "identity",
            "train": {"steps": steps, "batch_size": self.cfg.batch_size, "lr": self.cfg.lr,
                      "warmup_steps": min(self.cfg.warmup_steps, steps - 1),
                      "ema_decay": self.cfg.ema_decay, "tensorboard": False, "sample_every": 0,
                      "bf16": self.cfg.bf16,
                      "log_every": max(1, steps // 5), "ckpt_every": steps},
            "sample": {"sampler": self.cfg.sampler, "schedule": "standard", "steps": budget.sample_steps},
        })

    def _train(self, plugins: Any, run_dir: Path, seed: int, key: str, vtv: dict[str, Any], steps: int,
               budget: Budget) -> tuple[Path, dict[str, Any]]:
        from fvdm.core import engine
        from fvdm.core.checkpoint import load_checkpoint

        cfg = self.experiment(key, vtv, seed, steps, budget)
        ckpt = run_dir / "checkpoints" / "last.pt"
        if self.cfg.reuse_checkpoints and ckpt.is_file() and int(load_checkpoint(ckpt)["step"]) == steps:
            _log(f"reusing {ckpt}")
            return ckpt, {"reused": True, "steps": steps}
        _log(f"training {key} seed {seed}: {steps} steps")
        t0 = time.perf_counter()
        res = engine.train(cfg, plugins, run_dir=run_dir, overwrite=True, device=self.cfg.device, progress=False)
        sec = time.perf_counter() - t0
        return Path(res["checkpoint"]), {"final_loss": res["final_loss"], "steps": res["step"], "train_s": sec,
                                         "s_per_step": sec / max(1, res["step"]), "num_params": res["num_params"]}

    # -- evaluation ------------------------------------------------------------------------
    def _context(self, plugins: Any, lm: Any, budget: Budget) -> Any:
        from fvdm.tasks.base import SamplingContext

        return SamplingContext(
            model=lm.model, schedule=lm.schedule, sampler=plugins["samplers"].build(self.cfg.sampler),
            matrix=plugins["sampling_schedules"].build("standard"), num_frames=lm.num_frames,
            shape=(lm.latent_channels, lm.latent_resolution, lm.latent_resolution), steps=budget.sample_steps,
            batch_size=self.cfg.eval_batch, generator=None, device=self.cfg.device, plugins=plugins,
            history_guidance=self.cfg.history_guidance, history_level=self.cfg.history_level)

    def _evaluate(self, plugins: Any, ckpt: Path, key: str, arm_names: list[str], seed: int, fvd: Any,
                  real: dict[str, Any], budget: Budget, metric_info: dict[str, Any]) -> dict[str, Any]:
        """arm -> task -> results for the arms sharing this model (sampled with paired noise)."""
        from fvdm.core.checkpoint import load_for_sampling

        lm = load_for_sampling(ckpt, plugins, device=self.cfg.device)
        arms = {a.name: a for a in self.cfg.arms if a.name in arm_names}
        F, k_ext = self.cfg.num_frames, self.cfg.extension_frames
        gt = real["clips"][:budget.num_task]
        sampling = self._context(plugins, lm, budget)
        out: dict[str, Any] = {name: {} for name in arms}
        if "unconditional" in self.cfg.tasks:  # no context: the sampling mode does not matter, sample once
            t0 = time.perf_counter()
            task = plugins["tasks"].build({"name": "unconditional"})
            plain = dataclasses.replace(sampling, history_guidance=1.0)  # nothing to guide by without context
            fake = self._batched(plain, lm, budget.num_uncond, seed, "unconditional",
                                 lambda sl: task.run(plain, {"num_frames": F}))
            res = {"fvd": self._fvd(fvd, real["stats"], fake), "n": fake.shape[0],
                   "seconds": time.perf_counter() - t0, "shared_by": list(arms)}
            _log(f"{key} s{seed} unconditional: fvd={res['fvd']:.4g} ({res['seconds']:.1f} s)")
            for name in arms:
                out[name]["unconditional"] = res
        for name, arm in arms.items():
            mode, stabilized = SAMPLING_MODES[arm.sampling]
            common = {"mode": mode, "stabilization": arm.stabilization if stabilized else 0.0}
            for task_name in (t for t in self.cfg.tasks if t != "unconditional"):
                t0 = time.perf_counter()
                if task_name == "long_video":
                    task = plugins["tasks"].build({"name": "long_video", **common, "num_frames": self.cfg.long_frames,
                                                   "overlap": self.cfg.long_overlap})
                    fake = self._batched(sampling, lm, budget.num_long, seed, task_name,
                                         lambda sl: task.run(sampling, {}))
                    wins = self._windows(fake)
                    res = {"fvd": self._fvd(fvd, real["long_stats"], wins), "n_videos": fake.shape[0],
                           "n_windows": wins.shape[0], "frames": fake.shape[1]}
                else:
                    task = plugins["tasks"].build({"name": task_name, **common})
                    if task_name == "image_to_video":
                        inputs = lambda g: {"image": g[:, 0]}  # noqa: E731
                    elif task_name == "interpolation":
                        inputs = lambda g: {"first": g[:, 0], "last": g[:, -1]}  # noqa: E731
                    else:
                        inputs = lambda g: {"video": g[:, :k_ext], "num_frames": F}  # noqa: E731
                    fake = self._batched(sampling, lm, gt.shape[0], seed, task_name,
                                         lambda sl: task.run(sampling, inputs(self._encode(lm, gt[sl]))))
                    given = self.given(task_name)
                    res = {**self._score(plugins, fvd, real, task_name, fake, gt, metric_info), "n": fake.shape[0],
                           "context_max_abs_err": float((fake[:, given] - gt[:, given]).abs().max())}
                res["seconds"] = time.perf_counter() - t0
                _log(f"{name} s{seed} {task_name}: " + ", ".join(
                    f"{k}={v:.4g}" for k, v in res.items() if isinstance(v, float)))
                out[name][task_name] = res
        return out

    def _encode(self, lm: Any, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.cfg.device)
        return lm.autoencoder.encode(x) if lm.latent_channels != lm.channels else x

    def _batched(self, sampling: Any, lm: Any, n: int, seed: int, task: str, fn: Any) -> torch.Tensor:
        """Call ``fn(slice)`` over ``n`` items in ``eval_batch`` chunks -> pixels (n, F, C, H, W) in [-1, 1].

        Each chunk gets its own generator seeded from (seed, task, chunk) on the sampling device, so
        clip i's noise is the same in every arm and does not depend on which tasks or arms ran before.
        """
        from fvdm.core.rng import stream_seed

        outs = []
        for i in range(0, n, self.cfg.eval_batch):
            b = min(self.cfg.eval_batch, n - i)
            sampling.batch_size = b  # tasks without tensor inputs take their batch from here
            sampling.generator = torch.Generator(device=self.cfg.device).manual_seed(
                stream_seed(seed, f"sample/{task}/{i // self.cfg.eval_batch}"))
            with torch.inference_mode():
                x = fn(slice(i, i + b))
                if lm.latent_channels != lm.channels:
                    x = lm.autoencoder.decode(x)
            outs.append(x.float().clamp(-1, 1).cpu())
        return torch.cat(outs)

    # -- statistics ------------------------------------------------------------------------
    @staticmethod
    def _values(per_seed: dict[int, dict[str, Any]], arm: str, task: str, metric: str,
                target: float | None = None) -> dict[int, float]:
        """seed -> value (or |value - target| for metrics with an ideal value)."""
        return {s: _compared(arms[arm][task][metric], target)
                for s, arms in per_seed.items() if arm in arms and task in arms[arm] and metric in arms[arm][task]}

    def _summary(self, per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
        """task -> metric -> arm -> {mean, std, n, ci_low, ci_high, values}."""
        summary: dict[str, Any] = {}
        for task in self.cfg.tasks:
            for m in self.cfg.metrics:
                for arm in self.cfg.arms:
                    v = self._values(per_seed, arm.name, task, m["name"])
                    if v:
                        summary.setdefault(task, {}).setdefault(m["name"], {})[arm.name] = mean_ci(
                            [v[s] for s in sorted(v)])
        return summary

    def _diff(self, per_seed: dict[int, dict[str, Any]], arm: str, other: str, task: str,
              metric: str, target: float | None = None) -> dict[str, Any] | None:
        a, b = self._values(per_seed, arm, task, metric, target), self._values(per_seed, other, task, metric, target)
        common = sorted(set(a) & set(b))
        if not common:
            return None
        return mean_ci([a[s] - b[s] for s in common])  # paired: the same seed in both arms

    def _paired(self, per_seed: dict[int, dict[str, Any]], metric_info: dict[str, Any]) -> dict[str, Any]:
        """task -> metric -> arm -> paired difference (arm - baseline) with CI and verdict."""
        base = self.cfg.baseline
        out: dict[str, Any] = {}
        for task in self.cfg.tasks:
            for metric, info in metric_info.items():
                for arm in self.cfg.arms:
                    if arm.name == base:
                        continue
                    d = self._diff(per_seed, arm.name, base, task, metric, info.get("target"))
                    if d is not None:
                        d["verdict"] = verdict(d["ci_low"], d["ci_high"], info["higher_is_better"])
                        if info.get("target") is not None:
                            d["compared"] = _compared_name(metric, info["target"])
                        out.setdefault(task, {}).setdefault(metric, {})[arm.name] = d
        return out

    def _criteria(self, per_seed: dict[int, dict[str, Any]], metric_info: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for c in self.cfg.criteria:
            against = c.against or self.cfg.baseline
            hib = metric_info[c.metric]["higher_is_better"]
            target = metric_info[c.metric].get("target")
            d = self._diff(per_seed, c.arm, against, c.task, c.metric, target)
            what = _compared_name(c.metric, target)
            claim = (f"{c.arm} beats {against} on {c.task} {what} if the 95% CI of the paired "
                     f"difference ({c.arm} - {against}) lies {'above' if hib else 'below'} 0")
            out.append({"claim": claim, "why": c.why, "arm": c.arm, "against": against, "task": c.task,
                        "metric": c.metric, "diff": d,
                        "verdict": "inconclusive" if d is None else verdict(d["ci_low"], d["ci_high"], hib)})
        return out

    @staticmethod
    def _costs(per_seed: dict[int, dict[str, Any]], train_info: dict[str, Any], budget: Budget) -> dict[str, float]:
        """Measured unit costs: seconds per training step and per sampled clip-window step."""
        steps = [i["s_per_step"] for i in train_info.values() if "s_per_step" in i]
        clip = []
        for arms in per_seed.values():
            for tasks in arms.values():
                for task, r in tasks.items():
                    n = r.get("n_videos") or r.get("n")
                    if n and task in COND_TASKS:
                        clip.append(r["seconds"] / n)
        return {"s_per_train_step": statistics.fmean(steps) if steps else float("nan"),
                "s_per_conditional_clip": statistics.fmean(clip) if clip else float("nan"),
                "sample_steps": budget.sample_steps}

    def _versus_baselines(self, per_seed: dict[int, dict[str, Any]], baselines: dict[str, Any],
                          metric_info: dict[str, Any]) -> dict[str, Any]:
        """task -> metric -> baseline -> {applies, baseline, ground_truth, arms: arm -> CI of (arm - baseline)}.

        Each arm's per-seed values minus the baseline's one value (a baseline has no seed), with the
        suite's interval and verdict: beats / loses / tie. A baseline *applies* only where the data
        itself (the ``ground truth`` row, ``real`` for unconditional FVD) beats it: a baseline that
        outscores the ground truth marks where the metric rewards a trick, not where a model falls short.
        """
        words = {"supported": "beats", "contradicted": "loses", "inconclusive": "tie"}
        out: dict[str, Any] = {}
        for task, rows in baselines.items():
            truth = next((rows[r] for r in TRUTH_ROWS if r in rows), {})
            for name, values in rows.items():
                if name in TRUTH_ROWS:
                    continue
                for metric, raw in values.items():
                    info = metric_info[metric]
                    target, hib = info.get("target"), info["higher_is_better"]
                    value = _compared(raw, target)
                    gt = None if truth.get(metric) is None else _compared(truth[metric], target)
                    applies = gt is None or (gt > value if hib else gt < value)
                    arms = {}
                    for arm in self.cfg.arms:
                        v = self._values(per_seed, arm.name, task, metric, target)
                        if not v:
                            continue
                        d = mean_ci([v[s] - value for s in sorted(v)])
                        if d["n"] < 2:  # one seed: the sign of the point difference, flagged in the table
                            d["verdict"] = ("tie" if d["mean"] == 0 else
                                            "beats" if (d["mean"] > 0) == hib else "loses")
                        else:
                            d["verdict"] = words[verdict(d["ci_low"], d["ci_high"], hib)]
                        arms[arm.name] = d
                    out.setdefault(task, {}).setdefault(metric, {})[name] = {
                        "applies": applies, "baseline": value, "ground_truth": gt, "arms": arms,
                        "compared": _compared_name(metric, target)}
        return out

    def _versus_counts(self, versus: dict[str, Any]) -> list[str]:
        """One line per arm: how many applicable (task, metric, baseline) cells it beats, ties and loses."""
        counts: dict[str, dict[str, int]] = {a.name: {"beats": 0, "tie": 0, "loses": 0} for a in self.cfg.arms}
        for metrics in versus.values():
            for per in metrics.values():
                for row in per.values():
                    for arm, d in row["arms"].items():
                        if row["applies"]:
                            counts[arm][d["verdict"]] += 1
        return [f"{arm} beats {c['beats']} of {sum(c.values())} applicable baselines (tie {c['tie']}, "
                f"loses {c['loses']})" for arm, c in counts.items() if sum(c.values())]

    # -- reporting -------------------------------------------------------------------------
    def _criteria_table(self, criteria: list[dict[str, Any]], n_seeds: int) -> dict[str, Any]:
        rows = []
        for i, c in enumerate(criteria, 1):
            d = c["diff"]
            rows.append([f"C{i}", c["claim"], _ci(d), c["verdict"], c["why"]])
        return {"title": f"success criteria (fixed in the suite config before the run; {n_seeds} seed(s))",
                "columns": ["id", "criterion", "paired difference [95% CI]", "verdict", "why"], "rows": rows}

    def _paired_table(self, paired: dict[str, Any], ci: str) -> dict[str, Any]:
        rows = []
        for task, metrics in paired.items():
            for metric, arms in metrics.items():
                for arm, d in arms.items():
                    rows.append([task, d.get("compared", metric.upper()), arm, _ci(d), d["verdict"]])
        return {"title": f"paired differences arm - {self.cfg.baseline} ({ci})",
                "columns": ["task", "metric", "arm", "difference [95% CI]", "verdict"], "rows": rows}

    def _arms_table(self, summary: dict[str, Any], ci: str) -> dict[str, Any]:
        arms = [a.name for a in self.cfg.arms]
        rows = []
        for task, metrics in summary.items():
            for metric, per_arm in metrics.items():
                rows.append([task, metric.upper(), *[_ci(per_arm.get(a), signed=False) for a in arms]])
        return {"title": f"every arm (mean [{ci}])", "columns": ["task", "metric", *arms], "rows": rows}

    @staticmethod
    def _baselines_table(baselines: dict[str, Any]) -> dict[str, Any]:
        rows = [[task, name, *[f"{k.upper()} {v:.4g}" for k, v in vals.items()]]
                for task, per in baselines.items() for name, vals in per.items()]
        width = max((len(r) for r in rows), default=3)
        return {"title": "trivial baselines (no learning; generated frames replaced, given frames kept)",
                "columns": ["task", "baseline", *[f"metric {i + 1}" for i in range(width - 2)]],
                "rows": [r + [""] * (width - len(r)) for r in rows]}

    def _versus_table(self, versus: dict[str, Any], ci: str) -> dict[str, Any]:
        arms = [a.name for a in self.cfg.arms]
        one_seed = " (1 seed)" if ci.startswith("one seed") else ""
        rows = []
        for task, metrics in versus.items():
            for per in metrics.values():
                for name, row in per.items():
                    gt = "-" if row["ground_truth"] is None else f"{row['ground_truth']:.4g}"
                    cells = [("n/a" if not row["applies"] else row["arms"][a]["verdict"] + one_seed)
                             if a in row["arms"] else "-" for a in arms]
                    rows.append([task, row["compared"], name, f"{row['baseline']:.4g}", gt, *cells])
        return {"title": f"every arm versus the trivial baselines ({ci}; n/a: the ground truth does not beat "
                         "that baseline, so it is no bar for a generator)",
                "columns": ["task", "metric", "baseline", "baseline value", "ground truth", *arms], "rows": rows}

    def _plots(self, paired: dict[str, Any]) -> list[dict[str, Any]]:
        plots = []
        arms = [a.name for a in self.cfg.arms if a.name != self.cfg.baseline]
        for metric in [m["name"] for m in self.cfg.metrics]:
            tasks = [t for t in paired if metric in paired[t]]
            if not tasks:
                continue

            def half(d: dict[str, Any] | None) -> float:
                return (d["ci_high"] - d["mean"]) if d and math.isfinite(d["ci_high"]) else 0.0
            plots.append({"name": f"digits_paired_{metric}", "kind": "bar", "x": tasks, "hline": 0.0,
                          "title": f"{metric.upper()}: arm - {self.cfg.baseline} (95% CI)",
                          "ylabel": f"paired difference in {metric.upper()}",
                          "series": {a: [paired[t][metric].get(a, {}).get("mean", float("nan")) for t in tasks]
                                     for a in arms},
                          "errors": {a: [half(paired[t][metric].get(a)) for t in tasks] for a in arms}})
        return plots


#: registered evaluators known to need the generator's ground truth (digit positions) though they do not say so
TRUTH_METRICS = {"trajectory_error"}


def _compared(value: float, target: float | None) -> float:
    """What differences and baselines compare: the value, or its distance to the metric's ideal value."""
    return value if target is None else abs(value - target)


def _compared_name(metric: str, target: float | None) -> str:
    return metric.upper() if target is None else f"|{metric.upper()} - {target:g}|"


def _needs_trajectories(cls: Any, name: str = "") -> bool:
    declared = tuple(getattr(cls, "needs", ()) or ())
    if name in TRUTH_METRICS or getattr(cls, "needs_trajectories", False) or "trajectories" in declared:
        return True
    fn = getattr(cls, "evaluate", None)
    if fn is None:
        return False
    p = inspect.signature(fn).parameters.get("trajectories")
    return p is not None and p.default is inspect.Parameter.empty


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


def _spec_str(spec: dict[str, Any]) -> str:
    params = ", ".join(f"{k}={v}" for k, v in sorted(spec.items()) if k != "name")
    return f"{spec.get('name')}({params})" if params else str(spec.get("name"))


def _slug(spec: dict[str, Any]) -> str:
    """A run-directory name for a training spec: ptss_p0.2_x1.25."""
    vtv = spec["vtv"]
    parts = [str(vtv.get("name"))] + [f"{k}{v}" for k, v in sorted(vtv.items()) if k != "name"]
    if spec["steps_multiplier"] != 1:
        parts.append(f"x{spec['steps_multiplier']:g}")
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in "_".join(parts))


def _digest(clip: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha1(clip.contiguous().numpy().tobytes()).hexdigest()


def _ci(d: dict[str, Any] | None, signed: bool = True) -> str:
    """``mean [low, high]`` (a difference: signed) or ``mean (n=1)`` without an interval."""
    if d is None:
        return "-"
    f = "+.4g" if signed else ".4g"
    if d["n"] < 2 or not math.isfinite(d["ci_low"]):
        return f"{d['mean']:{f}} (n={d['n']})"
    return f"{d['mean']:{f}} [{d['ci_low']:.4g}, {d['ci_high']:.4g}]"


def _exit_with_parent(parent_pid: int, poll_s: float = 2.0) -> None:
    """Worker initializer: end this process when the suite's process is gone (killed, Ctrl-C'd), instead of
    training on for nobody (a killed run once left two orphans training for minutes)."""
    import threading

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent_pid:  # re-parented: the suite process died
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _child_job(cfg: dict[str, Any], real: dict[str, Any], key: str, seed: int, budget: dict[str, Any],
               out: str, threads: int, metric_info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Worker process: fresh plugins (built-ins + entry points), one model trained and its arms evaluated."""
    from fvdm.core.plugins import load_plugins

    torch.set_num_threads(threads)
    plugins = load_plugins()
    suite = DigitsZeroShotSuite(DigitsZeroShotSuite.Config.model_validate(cfg))
    fvd = suite._fvd_metric(plugins, plugins["feature_extractors"].build(suite.cfg.extractor))
    return suite.model_job(plugins, fvd, real, key, seed, Budget.model_validate(budget), Path(out), metric_info)


__all__ = ["DigitsZeroShotSuite", "Arm", "Budget", "Criterion", "mean_ci", "verdict", "t_quantile"]
