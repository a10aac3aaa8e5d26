"""Every bad-input check of a run, before any training, and the training config each model gets.

``validate`` refuses with one line (``BenchmarkError``): an unknown device, arm, strategy, sampling
mode or metric, a budget below a floor, a metric needing ground truth the data lacks, criteria
naming arms or tasks not in the run, and every error ``fvdm train`` would give for a model's
training config (its arm's VTV params, the backbone, schedule, sampler), in train's words.
"""

from __future__ import annotations

from typing import Any

import torch

from fvdm.bench.suites.digits_zero_shot.design import (DIRECTIONS, SAMPLING_MODES, TARGETS, Budget, Config,
                                                       data_spec, models, needs_trajectories, refuse)


def experiment_dict(cfg: Config, key: str, vtv: dict[str, Any], seed: int, steps: int,
                    budget: Budget, train: dict[str, Any] | None = None) -> dict[str, Any]:
    """The experiment config of one model: identical across models except for ``vtv``, ``steps`` and the
    arm's ``train`` overrides."""
    return {
        "name": f"digits_{key}_s{seed}", "seed": seed,
        "data": data_spec(cfg, "train", cfg.num_frames, cfg.train_clips),
        "backbone": cfg.backbone, "noise_schedule": cfg.noise_schedule, "vtv": vtv,
        "autoencoder": "identity",
        "train": {"steps": steps, "batch_size": cfg.batch_size, "lr": cfg.lr,
                  "warmup_steps": min(cfg.warmup_steps, steps - 1),
                  "ema_decay": cfg.ema_decay, "tensorboard": False, "sample_every": 0,
                  "bf16": cfg.bf16,
                  "log_every": max(1, steps // 5), "ckpt_every": min(cfg.ckpt_every, steps),
                  **({"init_from": cfg.init_from} if cfg.init_from else {}), **(train or {})},
        "sample": {"sampler": cfg.sampler, "schedule": "standard", "steps": budget.sample_steps},
    }


def _check_training_configs(cfg: Config, plugins: Any, budget: Budget) -> None:
    """Each model's experiment config through train's own two passes; its errors, one line."""
    from fvdm.core.config import parse_config, resolve_config
    from fvdm.core.errors import ConfigError

    for key, m in models(cfg).items():
        steps = max(1, round(m["steps_multiplier"] * budget.train_steps))
        try:
            resolve_config(parse_config(experiment_dict(cfg, key, m["vtv"], 0, steps, budget, m["train"])), plugins)
        except ConfigError as exc:
            arm_errs = [f"{p}: {msg}" for p, msg in exc.errors if p.split(".")[0] == "vtv"]
            if arm_errs:
                raise refuse(f"arm {m['arms'][0]!r}: vtv {m['vtv']} is invalid ({'; '.join(arm_errs)}); "
                             "fix its params") from None
            raise refuse(f"the training config is invalid ({'; '.join(f'{p}: {msg}' for p, msg in exc.errors)}); "
                         "fix the suite's backbone / noise_schedule / sampler / dataset fields") from None


def validate(cfg: Config, plugins: Any, budget: Budget, quick: bool) -> dict[str, Any]:
    """Every bad-input check, before any training: returns {metric name -> direction, needs_traj, target}."""
    try:
        dev = torch.device(cfg.device)
    except RuntimeError as exc:
        raise refuse(f"device {cfg.device!r} is not a torch device ({exc}); use cpu or cuda[:i]") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise refuse(f"device {cfg.device!r} asked for, but this torch build sees no CUDA device "
                     f"(torch {torch.__version__}); install a CUDA build of torch or use --device cpu")
    names = [a.name for a in cfg.arms]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise refuse(f"arm name(s) {dup} appear twice; give every arm a unique name")
    if cfg.baseline not in names:
        raise refuse(f"baseline {cfg.baseline!r} is not an arm ({names}); set baseline to one of them")
    vtv = plugins["vtv_strategies"]
    for arm in cfg.arms:
        if arm.sampling not in SAMPLING_MODES:
            raise refuse(f"arm {arm.name!r}: unknown sampling mode {arm.sampling!r}; choose one of "
                         f"{', '.join(SAMPLING_MODES)}")
        if "name" not in arm.vtv:
            raise refuse(f"arm {arm.name!r}: vtv has no 'name'; give a registered strategy, e.g. "
                         "{name: ptss, p: 0.2}")
        if arm.vtv["name"] not in vtv:
            raise refuse(f"arm {arm.name!r}: {vtv.unknown_message(arm.vtv['name'])} Fix arms[].vtv.name or "
                         "install the plugin that provides it")
    _check_training_configs(cfg, plugins, budget)
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
            raise refuse(msg)
    if cfg.reference_seed == cfg.conditioning_seed:
        raise refuse(f"reference_seed = conditioning_seed = {cfg.reference_seed}: the FVD reference would "
                     "contain the conditioning clips; pick a different reference_seed")
    # metrics: known, directed, and with the ground truth they need
    ds = plugins["datasets"].build(data_spec(cfg, "test", cfg.num_frames, 2, cfg.conditioning_seed))
    has_traj = callable(getattr(ds, "trajectories", None))
    metrics: dict[str, Any] = {}
    for m in cfg.metrics:
        name = m.get("name")
        if name == "fvd":
            metrics[name] = {"higher_is_better": False, "needs_trajectories": False, "target": None}
            continue
        if name not in plugins["evaluators"]:
            raise refuse(f"metric {name!r}: {plugins['evaluators'].unknown_message(str(name))} Fix metrics[]")
        cls = plugins["evaluators"].get(name).obj
        hib = m.get("higher_is_better", getattr(cls, "higher_is_better", DIRECTIONS.get(name)))
        if hib is None:
            raise refuse(f"metric {name!r} does not say which direction is better; add higher_is_better: "
                         "true/false to its metrics entry")
        needs = bool(m.get("needs_trajectories", needs_trajectories(cls, name)))
        if needs and not has_traj:
            raise refuse(f"metric {name!r} needs ground-truth trajectories but dataset "
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
                raise refuse(f"criterion {c.arm} vs {against} on {c.task}/{c.metric}: {who!r} is not an arm; "
                             "fix criteria or arms")
        if c.task not in cfg.tasks or c.metric not in metrics:
            raise refuse(f"criterion {c.arm} on {c.task}/{c.metric}: that task or metric is not run "
                         f"(tasks {cfg.tasks}, metrics {list(metrics)}); fix criteria")
    return metrics


def check_plugins(cfg: Config, plugins: Any) -> None:
    """Every plugin the config names is registered: one error listing them all, before any training."""
    from fvdm.bench.suites.digits_zero_shot.design import needs

    missing = []
    for kind, name in (("datasets", cfg.dataset.get("name")), ("samplers", cfg.sampler["name"]),
                       ("sampling_schedules", "standard"), ("feature_extractors", cfg.extractor["name"]),
                       ("evaluators", "fvd_digits")):
        if name not in plugins[kind]:
            missing.append(f"{kind} {name!r}")
    for task in cfg.tasks:
        if task not in plugins["tasks"]:
            missing.append(f"tasks {task!r}")
    if missing:
        raise needs(", ".join(missing), "install the package that registers them or fix the suite config; "
                    "`fvdm plugins` lists what is registered")


def plugin_origins(cfg: Config, plugins: Any) -> dict[str, dict[str, str]]:
    """kind -> name -> origin ("builtin" or "<distribution> <version>") of every plugin a run uses."""
    used: dict[str, set[str]] = {
        "benchmarks": {"digits_zero_shot"},
        "vtv_strategies": {str(a.vtv.get("name")) for a in cfg.arms},
        "backbones": {cfg.backbone["name"]}, "noise_schedules": {cfg.noise_schedule["name"]},
        "autoencoders": {"identity"}, "datasets": {cfg.dataset["name"]}, "samplers": {cfg.sampler["name"]},
        "sampling_schedules": {"standard"}, "feature_extractors": {cfg.extractor["name"]},
        "evaluators": {"fvd_digits", *(m["name"] for m in cfg.metrics if m["name"] != "fvd")},
        "tasks": set(cfg.tasks),
    }
    return {kind: {n: plugins[kind].get(n).origin for n in sorted(names) if n in plugins[kind]}
            for kind, names in used.items()}
