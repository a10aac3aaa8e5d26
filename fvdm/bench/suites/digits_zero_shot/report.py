"""What a run shows: the Markdown tables, the paired-difference plots and the notes of results.md."""

from __future__ import annotations

import math
from typing import Any

from fvdm.bench.stats import ci_text
from fvdm.bench.suites.digits_zero_shot.analysis import versus_counts
from fvdm.bench.suites.digits_zero_shot.design import Budget, Config, spec_str


def interval_words(n_seeds: int) -> str:
    return "95% t interval over seeds" if n_seeds > 1 else "one seed: no interval"


def criteria_table(criteria: list[dict[str, Any]], n_seeds: int) -> dict[str, Any]:
    rows = [[f"C{i}", c["claim"], ci_text(c["diff"]), c["verdict"], c["why"]] for i, c in enumerate(criteria, 1)]
    return {"title": f"success criteria (fixed in the suite config before the run; {n_seeds} seed(s))",
            "columns": ["id", "criterion", "paired difference [95% CI]", "verdict", "why"], "rows": rows}


def paired_table(cfg: Config, paired: dict[str, Any], ci: str) -> dict[str, Any]:
    rows = []
    for task, metrics in paired.items():
        for metric, arms in metrics.items():
            for arm, d in arms.items():
                rows.append([task, d.get("compared", metric.upper()), arm, ci_text(d), d["verdict"]])
    return {"title": f"paired differences arm - {cfg.baseline} ({ci})",
            "columns": ["task", "metric", "arm", "difference [95% CI]", "verdict"], "rows": rows}


def arms_table(cfg: Config, summary: dict[str, Any], ci: str) -> dict[str, Any]:
    arms = [a.name for a in cfg.arms]
    rows = []
    for task, metrics in summary.items():
        for metric, per_arm in metrics.items():
            rows.append([task, metric.upper(), *[ci_text(per_arm.get(a), signed=False) for a in arms]])
    return {"title": f"every arm (mean [{ci}])", "columns": ["task", "metric", *arms], "rows": rows}


def baselines_table(baselines: dict[str, Any]) -> dict[str, Any]:
    rows = [[task, name, *[f"{k.upper()} {v:.4g}" for k, v in vals.items()]]
            for task, per in baselines.items() for name, vals in per.items()]
    width = max((len(r) for r in rows), default=3)
    return {"title": "trivial baselines (no learning; generated frames replaced, given frames kept)",
            "columns": ["task", "baseline", *[f"metric {i + 1}" for i in range(width - 2)]],
            "rows": [r + [""] * (width - len(r)) for r in rows]}


def versus_table(cfg: Config, versus: dict[str, Any], ci: str) -> dict[str, Any]:
    arms = [a.name for a in cfg.arms]
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


def tables(cfg: Config, analysis: dict[str, Any], baselines: dict[str, Any], n_seeds: int) -> list[dict[str, Any]]:
    """The five tables of results.md, in order: criteria, paired, every arm, baselines, versus baselines."""
    ci = interval_words(n_seeds)
    return [criteria_table(analysis["criteria"], n_seeds), paired_table(cfg, analysis["paired"], ci),
            arms_table(cfg, analysis["summary"], ci), baselines_table(baselines),
            versus_table(cfg, analysis["versus_baselines"], ci)]


def plots(cfg: Config, paired: dict[str, Any]) -> list[dict[str, Any]]:
    """One bar plot per metric: each arm's paired difference to the baseline per task, 95% CI as error bars."""
    out = []
    arms = [a.name for a in cfg.arms if a.name != cfg.baseline]

    def half(d: dict[str, Any] | None) -> float:
        return (d["ci_high"] - d["mean"]) if d and math.isfinite(d["ci_high"]) else 0.0

    for metric in [m["name"] for m in cfg.metrics]:
        tasks = [t for t in paired if metric in paired[t]]
        if not tasks:
            continue
        out.append({"name": f"digits_paired_{metric}", "kind": "bar", "x": tasks, "hline": 0.0,
                    "title": f"{metric.upper()}: arm - {cfg.baseline} (95% CI)",
                    "ylabel": f"paired difference in {metric.upper()}",
                    "series": {a: [paired[t][metric].get(a, {}).get("mean", float("nan")) for t in tasks]
                               for a in arms},
                    "errors": {a: [half(paired[t][metric].get(a)) for t in tasks] for a in arms}})
    return out


def notes(cfg: Config, seeds: list[int], budget: Budget, plan: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    """The notes under the tables: budget, arms, pairing, how to read verdicts, data, workers."""
    ci = interval_words(len(seeds))
    return [f"{len(seeds)} seed(s) {seeds}; budget {budget.model_dump()}; plan {plan}",
            "arms: " + "; ".join(f"{a.name} = {spec_str(a.vtv)}"
                                 f"{f' x{a.steps_multiplier:g} steps' if a.steps_multiplier != 1 else ''}"
                                 f", {a.sampling}" for a in cfg.arms),
            f"paired seeds: same data order, training noise and per-clip sampling noise in every arm; "
            f"differences are arm - {cfg.baseline} per seed, {ci}",
            "verdict: supported = the 95% CI excludes 0 in the arm's favour, contradicted = against it, "
            "inconclusive otherwise",
            "versus baselines: an arm beats (loses to) a trivial baseline when its 95% CI lies on the "
            "better (worse) side of the baseline's value; a baseline applies to a metric only where the "
            "ground truth beats it (copying a given frame keeps every digit sharp and identical, so on "
            "recognisability and identity it outscores real motion and no generator can beat it); "
            + "; ".join(versus_counts(cfg, metrics["versus_baselines"])),
            f"conditioning clips: test split seed {cfg.conditioning_seed}; FVD reference: "
            f"{budget.num_reference} test-split clips of seed {cfg.reference_seed} (disjoint)",
            f"FVD: float64 stats, biased covariance, extractor {metrics['extractor']['id']}",
            f"{metrics['workers']} worker process(es) x {metrics['threads_per_worker']} thread(s); "
            f"costs {metrics['costs']}"]
