"""The suite's design: tasks, arms and their presets, budgets, criteria, the Config, plan() and validate().

Everything here is decided before a run starts: what is trained and sampled (``models``), what it
costs (``plan``), and every bad-input check (``validate``), so a mistake is refused in one line
before any training.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, Callable, Literal

import torch
from pydantic import Field, ValidationInfo, field_validator, model_validator

from fvdm.core.interfaces import PluginConfig


def refuse(msg: str) -> Exception:
    """The suite's one-line BenchmarkError (``msg`` squeezed to one line, whatever it holds)."""
    from fvdm.bench.runner import BenchmarkError

    return BenchmarkError("digits_zero_shot: " + " ".join(str(msg).split()))


def needs(what: str, fix: str) -> Exception:
    from fvdm.bench.runner import BenchmarkError

    return BenchmarkError(f"digits_zero_shot needs {what}; {fix}")


# -- tasks -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CondTask:
    """A conditional task: which frames it is given and its inputs, from ground-truth clips.

    ``given(F, k)`` and ``inputs(g, F, k)`` take the clip length ``F`` and ``k`` = the config's
    ``extension_frames``; ``g`` is (N, F, C, H, W) in the model's space. ``windows``: sampled
    windows per clip (what ``plan`` counts).
    """

    given: Callable[[int, int], list[int]]
    inputs: Callable[[torch.Tensor, int, int], dict[str, Any]]
    windows: int = 1


#: every conditional task the suite runs: adding one is one row here (the task plugin of that name
#: must take ``mode`` and ``stabilization`` and these inputs)
COND_TASK_TABLE: dict[str, CondTask] = {
    "image_to_video": CondTask(given=lambda F, k: [0], inputs=lambda g, F, k: {"image": g[:, 0]}),
    "interpolation": CondTask(given=lambda F, k: [0, F - 1],
                              inputs=lambda g, F, k: {"first": g[:, 0], "last": g[:, F - 1]}),
    "extension": CondTask(given=lambda F, k: list(range(k)),
                          inputs=lambda g, F, k: {"video": g[:, :k], "num_frames": F}),
}
COND_TASKS = tuple(COND_TASK_TABLE)
TASKS = ("unconditional", *COND_TASKS, "long_video")
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
#: registered evaluators known to need the generator's ground truth (digit positions) though they do not say so
TRUTH_METRICS = {"trajectory_error"}
#: seconds per unit, one worker thread (unet_video batch 8, bf16), measured on the mostly idle 2-core machine
#: (docs/benchmarks.md has the measurements; re-measure when the backbone changes)
UNIT_COSTS = {"train_step": 0.28, "cond_window_step": 0.024, "uncond_clip_step": 0.024, "setup": 25.0}


# -- arms ----------------------------------------------------------------------------------
class Arm(PluginConfig):
    """One arm: what the model is trained with and how it is sampled."""

    name: str
    vtv: dict[str, Any] = Field(default_factory=lambda: {"name": "synchronized"},
                                description="training VTV strategy spec: any registered vtv_strategies name + params")
    steps_multiplier: float = Field(1.0, gt=0, description="train for round(multiplier x budget.train_steps) steps")
    train: dict[str, Any] = Field(default_factory=dict, description="train settings of this arm's model on top of "
                                                                    "the suite's (e.g. lora, lr)")
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
ARM_PRESETS = {"primary": PRIMARY_ARMS, "all": DEFAULT_ARMS}


# -- criteria ------------------------------------------------------------------------------
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


# -- budgets and the Config -------------------------------------------------------------------
class Budget(PluginConfig):
    """What one run spends; ``standard`` and ``quick`` presets below."""

    seeds: int = Field(5, ge=1)
    train_steps: int = Field(2000, ge=1, description="per model; an arm trains steps_multiplier x this")
    sample_steps: int = Field(8, ge=1, description="DDIM steps per window")
    num_uncond: int = Field(256, ge=2, description="unconditional clips per model for FVD")
    num_task: int = Field(64, ge=2, description="test clips per conditional task (i2v, interpolation, extension)")
    num_long: int = Field(32, ge=1, description="long videos; each gives long_frames / num_frames FVD windows "
                                                "(32 x 8 = 256 clips, as unconditional FVD)")
    num_reference: int = Field(1024, ge=2, description="reference clips behind the FVD statistics (>= 1024)")


class Config(PluginConfig):
    standard: Budget = Budget()
    quick: Budget = Budget(seeds=1, train_steps=400, sample_steps=8, num_uncond=256, num_task=32, num_long=2)
    arm_preset: Literal["primary", "all"] = Field(
        "primary", description="default arms when `arms` is not given: primary = the 2x2 of training "
        "(synchronized / PTSS 0.2) x sampling (native / replacement) + stabilized (2 models per seed); all = "
        "also PTSS 0.1, 0.5, independent and PTSS 0.2 at 1.25x steps (6 models per seed, ~3x the time: a GPU "
        "budget, `--set arm_preset=all`)")
    arms: list[Arm] | None = Field(None, description="explicit arms (overrides arm_preset)")
    extra_arms: list[Arm] = Field(
        default_factory=list, description="arms added to the preset's (or to `arms`); names must be new. After "
        "validation they are part of `arms` and this list is empty")
    baseline: str = Field("vanilla", description="the arm every paired difference is taken against")
    criteria: list[Criterion] | None = Field(
        None, description="explicit criteria; default: the pre-registered ones whose arms are in the run")
    extra_criteria: list[Criterion] = Field(
        default_factory=list, description="criteria added to the default (or to `criteria`); after validation "
        "they are part of `criteria` and this list is empty")
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
    ckpt_every: int = Field(100, ge=1, description="training checkpoint interval: a killed run's model resumes "
                                                   "from its last one (no effect on the numbers)")
    init_from: str | None = Field(None, description="every model fine-tunes from these weights (train.init_from: "
                                                    "a backbone directory or checkpoint) instead of training from "
                                                    "scratch")

    # Checks of one field name that field (a one-line `field: problem` on the command line), so they are
    # field validators reading the fields declared before them, not model validators.
    @field_validator("metrics", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        return [{"name": m} if isinstance(m, str) else m for m in v] if isinstance(v, list) else v

    @field_validator("extra_arms")
    @classmethod
    def _new_names(cls, v: list[Arm], info: ValidationInfo) -> list[Arm]:
        if "arm_preset" not in info.data or "arms" not in info.data:
            return v  # those fields failed: their own errors say why
        given = info.data["arms"]
        base = [a.name for a in given] if given is not None else [a["name"] for a in ARM_PRESETS[
            info.data["arm_preset"]]]
        where = "arms" if given is not None else f"the {info.data['arm_preset']!r} preset"
        dup = [a.name for a in v if a.name in base]
        if dup:
            raise ValueError(f"arm name(s) {dup} already in {where}; give each extra arm a new name "
                             "(or set `arms` to replace the preset)")
        return v

    @field_validator("extension_frames", "long_overlap")
    @classmethod
    def _below_num_frames(cls, v: int, info: ValidationInfo) -> int:
        F = info.data.get("num_frames")
        if F is not None and v >= F:
            raise ValueError(f"{info.field_name}={v} must be < num_frames={F}")
        return v

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if t not in TASKS]
        if bad:
            raise ValueError(f"unknown task(s) {bad}; choose from {list(TASKS)}")
        return v

    @model_validator(mode="after")
    def _resolve(self) -> "Config":
        if self.arms is not None and self.criteria is not None and not self.extra_arms and not self.extra_criteria:
            return self  # resolved already (also every re-run that validate_assignment makes)
        arms = list(self.arms if self.arms is not None else [Arm(**a) for a in ARM_PRESETS[self.arm_preset]])
        arms += self.extra_arms
        criteria = self.criteria
        if criteria is None:
            names = {a.name for a in arms}
            criteria = [Criterion(**c) for c in DEFAULT_CRITERIA
                        if c["arm"] in names and (c["against"] or self.baseline) in names]
        # written past validate_assignment: an assignment would re-enter this validator half-updated
        self.__dict__.update(arms=arms, extra_arms=[], criteria=[*criteria, *self.extra_criteria],
                             extra_criteria=[])
        return self


# -- what a config trains, costs and checks ---------------------------------------------------
def slug(spec: dict[str, Any]) -> str:
    """A run-directory name for a training spec: ptss_p0.2_x1.25."""
    vtv = spec["vtv"]
    parts = [str(vtv.get("name"))] + [f"{k}{v}" for k, v in sorted(vtv.items()) if k != "name"]
    if spec["steps_multiplier"] != 1:
        parts.append(f"x{spec['steps_multiplier']:g}")
    if spec.get("train"):
        import hashlib
        import json

        parts.append("t" + hashlib.sha256(json.dumps(spec["train"], sort_keys=True).encode()).hexdigest()[:6])
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in "_".join(parts))


def spec_str(spec: dict[str, Any]) -> str:
    params = ", ".join(f"{k}={v}" for k, v in sorted(spec.items()) if k != "name")
    return f"{spec.get('name')}({params})" if params else str(spec.get("name"))


def given(cfg: Config, task: str) -> list[int]:
    """Frame positions a conditional task is given."""
    return COND_TASK_TABLE[task].given(cfg.num_frames, cfg.extension_frames)


def models(cfg: Config) -> dict[str, dict[str, Any]]:
    """Trained-model key -> {vtv, steps_multiplier, train, arms}: arms with one training spec share a model."""
    out: dict[str, dict[str, Any]] = {}
    for arm in cfg.arms:
        spec = {"vtv": dict(arm.vtv), "steps_multiplier": arm.steps_multiplier, "train": dict(arm.train)}
        for m in out.values():
            if {k: m[k] for k in spec} == spec:
                m["arms"].append(arm.name)
                break
        else:
            out[slug(spec)] = {**spec, "arms": [arm.name]}
    return out


def plan(cfg: Config, budget: Budget) -> dict[str, Any]:
    """What a budget costs in units: training steps and sampled clip-windows (x sample steps each)."""
    trained, arms = models(cfg), cfg.arms
    steps = sum(round(m["steps_multiplier"] * budget.train_steps) for m in trained.values()) * budget.seeds
    F, o = cfg.num_frames, cfg.long_overlap
    long_windows = 1 + math.ceil(max(0, cfg.long_frames - F) / (F - o))
    per_arm = sum(COND_TASK_TABLE[t].windows * budget.num_task for t in cfg.tasks if t in COND_TASK_TABLE) + (
        long_windows * budget.num_long if "long_video" in cfg.tasks else 0)
    uncond = budget.num_uncond if "unconditional" in cfg.tasks else 0
    windows = (per_arm * len(arms) + uncond * len(trained)) * budget.seeds
    c = UNIT_COSTS
    worker_s = (steps * c["train_step"] + budget.sample_steps * budget.seeds * (
        per_arm * len(arms) * c["cond_window_step"] + uncond * len(trained) * c["uncond_clip_step"]))
    workers = max(1, min(cfg.workers, len(trained) * budget.seeds))
    shared_min = (c["setup"] + worker_s / workers) / 60
    return {"trained_models": len(trained) * budget.seeds, "train_steps": steps, "clip_windows": windows,
            "model_calls": windows * budget.sample_steps, "arms": len(arms), "seeds": budget.seeds,
            "estimate_min_shared_machine": round(shared_min, 1),
            "estimate_min_idle_machine": round(shared_min, 1)}  # costs were measured idle: one estimate


def needs_trajectories(cls: Any, name: str = "") -> bool:
    """Whether an evaluator needs ground-truth trajectories (says so, or requires the parameter)."""
    declared = tuple(getattr(cls, "needs", ()) or ())
    if name in TRUTH_METRICS or getattr(cls, "needs_trajectories", False) or "trajectories" in declared:
        return True
    fn = getattr(cls, "evaluate", None)
    if fn is None:
        return False
    p = inspect.signature(fn).parameters.get("trajectories")
    return p is not None and p.default is inspect.Parameter.empty


def data_spec(cfg: Config, split: str, num_frames: int, num_clips: int, seed: int = 0) -> dict[str, Any]:
    return {**cfg.dataset, "split": split, "num_frames": num_frames, "resolution": cfg.resolution,
            "num_clips": num_clips, "seed": seed}
