"""The registered ``digits_zero_shot`` suite: validate, set up the real data, run the model jobs, report."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from fvdm.bench.suites.digits_zero_shot import analysis, report
from fvdm.bench.suites.digits_zero_shot.baselines import log, real_sets, trivial_baselines
from fvdm.bench.suites.digits_zero_shot.design import Budget, Config, given, models, needs, plan
from fvdm.bench.suites.digits_zero_shot.scoring import fvd_metric
from fvdm.bench.suites.digits_zero_shot.validation import check_plugins, plugin_origins, validate
from fvdm.bench.suites.digits_zero_shot.workers import child_job, evaluate, exit_with_parent, model_job


class DigitsZeroShotSuite:
    """Arms (any VTV strategy x sampling mode) on moving digits: paired FVD / PSNR / SSIM with 95% CIs."""

    Config = Config

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self._evaluators: dict[str, Any] = {}  # metrics entry -> built evaluator (weights loaded once per process)

    # -- the design, checked before anything runs ------------------------------------------
    def models(self) -> dict[str, dict[str, Any]]:
        """Trained-model key -> {vtv, steps_multiplier, arms}: arms with one training spec share a model."""
        return models(self.cfg)

    def plan(self, budget: Budget) -> dict[str, Any]:
        """What a budget costs in units (training steps, sampled clip-windows) and minutes."""
        return plan(self.cfg, budget)

    def validate(self, plugins: Any, budget: Budget, quick: bool) -> dict[str, Any]:
        """Every bad-input check, before any training: returns {metric name -> direction, needs_traj, target}."""
        return validate(self.cfg, plugins, budget, quick)

    def given(self, task: str) -> list[int]:
        """Frame positions a conditional task is given."""
        return given(self.cfg, task)

    def plugin_origins(self, plugins: Any) -> dict[str, dict[str, str]]:
        """kind -> name -> origin (builtin or distribution + version) of every plugin this config uses."""
        return plugin_origins(self.cfg, plugins)

    # -- orchestration ---------------------------------------------------------------------
    def run(self, out_dir: Any, *, plugins: Any, quick: bool = False, seed: int = 0,
            threads: int = 1) -> dict[str, Any]:
        cfg = self.cfg
        check_plugins(cfg, plugins)
        budget = cfg.quick if quick else cfg.standard
        metric_info = self.validate(plugins, budget, quick)
        out = Path(out_dir)
        seeds = [seed + i for i in range(budget.seeds)]
        the_plan = self.plan(budget)
        log(f"plan: {the_plan}")
        try:
            extractor = plugins["feature_extractors"].build(cfg.extractor)
        except FileNotFoundError as exc:
            raise needs(f"the {cfg.extractor['name']!r} extractor's weights ({exc})",
                        "ship them (benchmarks/train_digits_extractor.py) or set extractor.weights") from exc
        fvd_m = fvd_metric(cfg, plugins, extractor)
        t0 = time.perf_counter()
        real = real_sets(cfg, plugins, fvd_m, budget)
        baselines = trivial_baselines(cfg, plugins, fvd_m, real, budget, self._evaluators)
        setup_s = time.perf_counter() - t0
        jobs = [(s, key) for s in seeds for key in self.models()]
        per_seed: dict[int, dict[str, Any]] = {s: {} for s in seeds}
        train_info: dict[str, Any] = {}
        workers = min(cfg.workers, len(jobs))
        if workers <= 1:
            for s, key in jobs:
                train_info[f"{key}_s{s}"], res = model_job(cfg, plugins, fvd_m, real, key, s, budget, out,
                                                           self._evaluators)
                per_seed[s].update(res)
        else:
            # one process per model (1 thread each by default): on few cores this beats one process
            # with several threads, whose small matmuls scale poorly. Children load plugins fresh.
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            child_threads = max(1, threads // workers)
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=exit_with_parent,
                                     initargs=(os.getpid(),)) as pool:
                futs = {(s, key): pool.submit(child_job, cfg.model_dump(), real, key, s, budget.model_dump(),
                                              str(out), child_threads, metric_info) for s, key in jobs}
                for (s, key), fut in futs.items():
                    train_info[f"{key}_s{s}"], res = fut.result()
                    per_seed[s].update(res)
        found = analysis.analyse(cfg, per_seed, baselines, metric_info)
        metrics = {"per_seed": per_seed, "summary": found["summary"], "paired": found["paired"],
                   "criteria": found["criteria"], "baselines": baselines,
                   "versus_baselines": found["versus_baselines"], "train": train_info, "plan": the_plan,
                   "setup_s": setup_s,
                   "models": self.models(), "arms": [a.model_dump() for a in cfg.arms], "baseline": cfg.baseline,
                   "budget": budget.model_dump(), "threads": threads, "workers": workers,
                   "threads_per_worker": threads if workers <= 1 else max(1, threads // workers),
                   "costs": analysis.costs(per_seed, train_info, budget),
                   "extractor": {"id": getattr(extractor, "extractor_id", "?"),
                                 "weights_sha256": getattr(extractor, "weights_sha256", "?")}}
        return {"metrics": metrics, "seeds": seeds,
                "tables": report.tables(cfg, found, baselines, len(seeds)),
                "plots": report.plots(cfg, found["paired"]),
                "notes": report.notes(cfg, seeds, budget, the_plan, metrics),
                "plugins": self.plugin_origins(plugins)}

    def rescore(self, results: dict[str, Any], plugins: Any) -> dict[str, Any]:
        """Re-derive a run's numbers and tables from its results.json (``results``) with this code.

        Takes the per-seed values, trivial baselines and timings as recorded; returns ``summary``,
        ``paired``, ``criteria``, ``versus_baselines``, ``tables`` and ``notes`` as a fresh run would have
        written them (``self`` must be built from the results' ``config``).
        """
        m = results["metrics"]
        budget = self.cfg.quick if results["quick"] else self.cfg.standard
        metric_info = self.validate(plugins, budget, results["quick"])
        per_seed = {int(s): arms for s, arms in m["per_seed"].items()}
        found = analysis.analyse(self.cfg, per_seed, m["baselines"], metric_info)
        return {**found, "tables": report.tables(self.cfg, found, m["baselines"], len(results["seeds"])),
                "notes": report.notes(self.cfg, results["seeds"], budget, m["plan"],
                                      {**m, **found, "costs": analysis.costs(per_seed, m["train"], budget)})}

    # -- the steps, for scripts that run parts of the suite (benchmarks/digits_samplers.py) --
    def model_job(self, plugins: Any, fvd: Any, real: dict[str, Any], key: str, seed: int, budget: Budget,
                  out: Path, metric_info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Train one model (a training spec) and evaluate every arm that shares it -> (train info, arm results)."""
        return model_job(self.cfg, plugins, fvd, real, key, seed, budget, out, self._evaluators)

    def _fvd_metric(self, plugins: Any, extractor: Any) -> Any:
        return fvd_metric(self.cfg, plugins, extractor)

    def _real_sets(self, plugins: Any, fvd: Any, budget: Budget) -> dict[str, Any]:
        return real_sets(self.cfg, plugins, fvd, budget)

    def _evaluate(self, plugins: Any, ckpt: Path, key: str, arm_names: list[str], seed: int, fvd: Any,
                  real: dict[str, Any], budget: Budget, metric_info: dict[str, Any]) -> dict[str, Any]:
        return evaluate(self.cfg, plugins, ckpt, key, arm_names, seed, fvd, real, budget, self._evaluators)
