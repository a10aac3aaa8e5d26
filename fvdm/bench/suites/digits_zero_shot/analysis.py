"""From per-seed values to the suite's numbers: summaries, paired differences, criteria, baselines.

Pure functions of ``per_seed`` (seed -> arm -> task -> metric -> value) and the config, with the
statistics of ``fvdm.bench.stats``; ``rescore`` re-derives them from a results.json.
"""

from __future__ import annotations

import statistics
from typing import Any

from fvdm.bench.stats import compared, compared_name, mean_ci, paired_ci, verdict
from fvdm.bench.suites.digits_zero_shot.design import COND_TASKS, TRUTH_ROWS, Budget, Config

PerSeed = dict[int, dict[str, Any]]


def values(per_seed: PerSeed, arm: str, task: str, metric: str, target: float | None = None) -> dict[int, float]:
    """seed -> value (or |value - target| for metrics with an ideal value)."""
    return {s: compared(arms[arm][task][metric], target)
            for s, arms in per_seed.items() if arm in arms and task in arms[arm] and metric in arms[arm][task]}


def summary(cfg: Config, per_seed: PerSeed) -> dict[str, Any]:
    """task -> metric -> arm -> {mean, std, n, ci_low, ci_high, values}."""
    out: dict[str, Any] = {}
    for task in cfg.tasks:
        for m in cfg.metrics:
            for arm in cfg.arms:
                v = values(per_seed, arm.name, task, m["name"])
                if v:
                    out.setdefault(task, {}).setdefault(m["name"], {})[arm.name] = mean_ci([v[s] for s in sorted(v)])
    return out


def diff(per_seed: PerSeed, arm: str, other: str, task: str, metric: str,
         target: float | None = None) -> dict[str, Any] | None:
    """The paired difference arm - other over the seeds both have (None when none)."""
    return paired_ci(values(per_seed, arm, task, metric, target), values(per_seed, other, task, metric, target))


def paired(cfg: Config, per_seed: PerSeed, metric_info: dict[str, Any]) -> dict[str, Any]:
    """task -> metric -> arm -> paired difference (arm - baseline) with CI and verdict."""
    base = cfg.baseline
    out: dict[str, Any] = {}
    for task in cfg.tasks:
        for metric, info in metric_info.items():
            for arm in cfg.arms:
                if arm.name == base:
                    continue
                d = diff(per_seed, arm.name, base, task, metric, info.get("target"))
                if d is not None:
                    d["verdict"] = verdict(d["ci_low"], d["ci_high"], info["higher_is_better"])
                    if info.get("target") is not None:
                        d["compared"] = compared_name(metric, info["target"])
                    out.setdefault(task, {}).setdefault(metric, {})[arm.name] = d
    return out


def criteria(cfg: Config, per_seed: PerSeed, metric_info: dict[str, Any]) -> list[dict[str, Any]]:
    """Each pre-registered criterion with its claim, paired difference and verdict."""
    out = []
    for c in cfg.criteria:
        against = c.against or cfg.baseline
        hib = metric_info[c.metric]["higher_is_better"]
        target = metric_info[c.metric].get("target")
        d = diff(per_seed, c.arm, against, c.task, c.metric, target)
        what = compared_name(c.metric, target)
        claim = (f"{c.arm} beats {against} on {c.task} {what} if the 95% CI of the paired "
                 f"difference ({c.arm} - {against}) lies {'above' if hib else 'below'} 0")
        out.append({"claim": claim, "why": c.why, "arm": c.arm, "against": against, "task": c.task,
                    "metric": c.metric, "diff": d,
                    "verdict": "inconclusive" if d is None else verdict(d["ci_low"], d["ci_high"], hib)})
    return out


def costs(per_seed: PerSeed, train_info: dict[str, Any], budget: Budget) -> dict[str, float]:
    """Measured unit costs: seconds per training step and per sampled conditional clip."""
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


def versus_baselines(cfg: Config, per_seed: PerSeed, baselines: dict[str, Any],
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
        for name, vals in rows.items():
            if name in TRUTH_ROWS:
                continue
            for metric, raw in vals.items():
                info = metric_info[metric]
                target, hib = info.get("target"), info["higher_is_better"]
                value = compared(raw, target)
                gt = None if truth.get(metric) is None else compared(truth[metric], target)
                applies = gt is None or (gt > value if hib else gt < value)
                arms = {}
                for arm in cfg.arms:
                    v = values(per_seed, arm.name, task, metric, target)
                    if not v:
                        continue
                    d = mean_ci([v[s] - value for s in sorted(v)])
                    if d["n"] < 2:  # one seed: the sign of the point difference, flagged in the table
                        d["verdict"] = ("tie" if d["mean"] == 0 else "beats" if (d["mean"] > 0) == hib else "loses")
                    else:
                        d["verdict"] = words[verdict(d["ci_low"], d["ci_high"], hib)]
                    arms[arm.name] = d
                out.setdefault(task, {}).setdefault(metric, {})[name] = {
                    "applies": applies, "baseline": value, "ground_truth": gt, "arms": arms,
                    "compared": compared_name(metric, target)}
    return out


def versus_counts(cfg: Config, versus: dict[str, Any]) -> list[str]:
    """One line per arm: how many applicable (task, metric, baseline) cells it beats, ties and loses."""
    counts: dict[str, dict[str, int]] = {a.name: {"beats": 0, "tie": 0, "loses": 0} for a in cfg.arms}
    for metrics in versus.values():
        for per in metrics.values():
            for row in per.values():
                for arm, d in row["arms"].items():
                    if row["applies"]:
                        counts[arm][d["verdict"]] += 1
    return [f"{arm} beats {c['beats']} of {sum(c.values())} applicable baselines (tie {c['tie']}, "
            f"loses {c['loses']})" for arm, c in counts.items() if sum(c.values())]


def analyse(cfg: Config, per_seed: PerSeed, baselines: dict[str, Any], metric_info: dict[str, Any]) -> dict[str, Any]:
    """summary, paired, criteria and versus_baselines of one run's per-seed values."""
    return {"summary": summary(cfg, per_seed), "paired": paired(cfg, per_seed, metric_info),
            "criteria": criteria(cfg, per_seed, metric_info),
            "versus_baselines": versus_baselines(cfg, per_seed, baselines, metric_info)}
