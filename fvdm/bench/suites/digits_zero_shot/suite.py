"""The registered ``digits_zero_shot`` suite: validate, set up the real data, run the model jobs, report."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from fvdm.bench.ledger import Ledger
from fvdm.bench.suites.digits_zero_shot import analysis, report
from fvdm.bench.suites.digits_zero_shot.baselines import log, real_sets, trivial_baselines
from fvdm.bench.suites.digits_zero_shot.design import Budget, Config, given, models, needs, plan
from fvdm.bench.suites.digits_zero_shot.scoring import fvd_metric
from fvdm.bench.suites.digits_zero_shot.validation import check_plugins, plugin_origins, validate
from fvdm.bench.suites.digits_zero_shot.workers import child_job, evaluate, exit_with_parent, model_job, train_job


class DigitsZeroShotSuite:
    """Arms (any VTV strategy x sampling mode) on moving digits: paired FVD / PSNR / SSIM with 95% CIs."""

    Config = Config
    #: Config fields a resumed run may change: they decide how jobs are spread over processes, not their numbers
    resume_ignores = ("workers",)

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self._evaluators: dict[str, Any] = {}  # metrics entry -> built evaluator (weights loaded once per process)
        self._extractor_obj: Any = None

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
    def jobs(self, quick: bool, seed: int) -> list[str]:
        """Every job of a run, in the order they run: the baselines, then per seed and model train, eval."""
        budget = self.cfg.quick if quick else self.cfg.standard
        return ["setup/baselines", *(f"{kind}/{key}/s{s}" for s in range(seed, seed + budget.seeds)
                                     for key in self.models() for kind in ("train", "eval"))]

    def run(self, out_dir: Any, *, plugins: Any, quick: bool = False, seed: int = 0, threads: int = 1,
            ledger: Ledger | None = None) -> dict[str, Any]:
        """Train and evaluate every model at every seed as jobs of ``ledger`` (the runner's records: a killed
        run continues where it was); returns the report of ``report``."""
        cfg = self.cfg
        ledger = ledger or Ledger.in_memory()
        check_plugins(cfg, plugins)
        budget = cfg.quick if quick else cfg.standard
        metric_info = self._metric_info = self.validate(plugins, budget, quick)  # partial reports reuse it
        out = Path(out_dir)
        seeds = [seed + i for i in range(budget.seeds)]
        ledger.expect(self.jobs(quick, seed))
        log(f"plan: {self.plan(budget)}")
        try:
            extractor = plugins["feature_extractors"].build(cfg.extractor)
        except FileNotFoundError as exc:
            raise needs(f"the {cfg.extractor['name']!r} extractor's weights ({exc})",
                        "ship them (benchmarks/train_digits_extractor.py) or set extractor.weights") from exc
        fvd_m = fvd_metric(cfg, plugins, extractor)
        self._extractor_obj = extractor
        cache: dict[str, Any] = {}

        def real() -> dict[str, Any]:  # built once, and only when a job still needs it
            if not cache:
                t0 = time.perf_counter()
                cache.update(real_sets(cfg, plugins, fvd_m, budget))
                cache["setup_s"] = time.perf_counter() - t0
            return cache

        def baselines() -> dict[str, Any]:
            t0 = time.perf_counter()
            out = trivial_baselines(cfg, plugins, fvd_m, real(), budget, self._evaluators)
            return {"baselines": out, "setup_s": real()["setup_s"] + time.perf_counter() - t0}

        todo = [(s, key) for s in seeds for key in self.models()]
        workers = min(cfg.workers, len(todo))
        self._threads = {"threads": threads, "workers": workers,
                         "threads_per_worker": threads if workers <= 1 else max(1, threads // workers)}
        ledger.run("setup/baselines", baselines)
        if workers <= 1:
            for s, key in todo:
                tr = ledger.run(f"train/{key}/s{s}", lambda: train_job(cfg, plugins, out, key, s, budget), seed=s,
                                valid=_checkpoint_exists)
                ledger.run(f"eval/{key}/s{s}", lambda: evaluate(cfg, plugins, Path(tr["checkpoint"]), key,
                                                                self.models()[key]["arms"], s, fvd_m, real(),
                                                                budget, self._evaluators), seed=s)
        else:
            self._run_pool(ledger, todo, workers, max(1, threads // workers), out, budget, real)
        return {**self.report(ledger, quick=quick, seed=seed, plugins=plugins, metric_info=metric_info),
                "plugins": self.plugin_origins(plugins)}

    def _run_pool(self, ledger: Ledger, todo: list[tuple[int, str]], workers: int, child_threads: int, out: Path,
                  budget: Budget, real: Any) -> None:
        """One process per job (1 thread each by default): on few cores this beats one process with several
        threads, whose small matmuls scale poorly. A model's evaluation is queued once its training is
        recorded; once ``--max-minutes`` has passed no new job starts (after the first ``workers``) and the running
        ones finish."""
        import multiprocessing as mp
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        cfg = self.cfg
        queue = [(s, key) for s, key in todo if ledger.result(f"eval/{key}/s{s}") is None]
        running: dict[Any, tuple[str, int]] = {}
        started = 0
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=exit_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            while queue or running:
                # past --max-minutes no new job starts, but every call fills the pool once: a slice always
                # makes progress
                while queue and len(running) < workers and (not ledger.stop_due or started < workers):
                    started += 1
                    s, key = queue.pop(0)
                    tr = ledger.result(f"train/{key}/s{s}")
                    if tr is not None and _checkpoint_exists(tr):
                        fut = pool.submit(child_job, "eval", cfg.model_dump(), real(), key, s, budget.model_dump(),
                                          str(out), child_threads, tr["checkpoint"])
                        running[fut] = (f"eval/{key}/s{s}", s)
                    else:
                        fut = pool.submit(child_job, "train", cfg.model_dump(), None, key, s, budget.model_dump(),
                                          str(out), child_threads)
                        running[fut] = (f"train/{key}/s{s}", s)
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    job, s = running.pop(fut)
                    res, sec = fut.result()
                    ledger.put(job, res, seed=s, seconds=sec)
                    if job.startswith("train/"):  # its evaluation next, ahead of other models' training
                        queue.insert(0, (s, job.split("/")[1]))
        ledger.stop_if_due()

    def report(self, ledger: Ledger, *, quick: bool, seed: int, plugins: Any,
               metric_info: dict[str, Any] | None = None) -> dict[str, Any]:
        """The run's numbers from its finished jobs alone: intervals over the seeds whose every model is
        evaluated (a partial run reports those and says which are missing)."""
        cfg = self.cfg
        budget = cfg.quick if quick else cfg.standard
        metric_info = metric_info or getattr(self, "_metric_info", None) or self.validate(plugins, budget, quick)
        seeds = [seed + i for i in range(budget.seeds)]
        keys = list(self.models())
        setup = ledger.result("setup/baselines")
        train_info = {f"{k}_s{s}": {n: v for n, v in r.items() if n != "checkpoint"}
                      for s in seeds for k in keys if (r := ledger.result(f"train/{k}/s{s}")) is not None}
        per_seed: dict[int, dict[str, Any]] = {}
        for s in seeds:
            evals = [ledger.result(f"eval/{k}/s{s}") for k in keys]
            if all(e is not None for e in evals):
                per_seed[s] = {arm: res for e in evals for arm, res in e.items()}
        missing = [s for s in seeds if s not in per_seed]
        if setup is None or not per_seed:
            return {"metrics": {"train": train_info, "budget": budget.model_dump()}, "seeds": [],
                    "notes": [f"no seed is complete yet ({len(missing)} pending): nothing to compare"]}
        baselines, the_plan = setup["baselines"], self.plan(budget)
        found = analysis.analyse(cfg, per_seed, baselines, metric_info)
        threads = getattr(self, "_threads", {"threads": None, "workers": None, "threads_per_worker": None})
        metrics = {"per_seed": per_seed, "summary": found["summary"], "paired": found["paired"],
                   "criteria": found["criteria"], "baselines": baselines,
                   "versus_baselines": found["versus_baselines"], "train": train_info, "plan": the_plan,
                   "setup_s": setup["setup_s"], "models": self.models(), "arms": [a.model_dump() for a in cfg.arms],
                   "baseline": cfg.baseline, "budget": budget.model_dump(), **threads,
                   "costs": analysis.costs(per_seed, train_info, budget),
                   "extractor": {"id": getattr(self._extractor(plugins), "extractor_id", "?"),
                                 "weights_sha256": getattr(self._extractor(plugins), "weights_sha256", "?")}}
        done = sorted(per_seed)
        notes = report.notes(cfg, done, budget, the_plan, metrics)
        if missing:
            notes.insert(0, f"partial: seeds {done} complete, {missing} not yet; intervals are over the complete "
                            "seeds only")
        return {"metrics": metrics, "seeds": done, "tables": report.tables(cfg, found, baselines, len(done)),
                "plots": report.plots(cfg, found["paired"]), "notes": notes}

    def _extractor(self, plugins: Any) -> Any:
        if self._extractor_obj is None:
            self._extractor_obj = plugins["feature_extractors"].build(self.cfg.extractor)
        return self._extractor_obj

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


def _checkpoint_exists(train_result: dict[str, Any]) -> bool:
    """A recorded training is usable while its checkpoint is still there (else it trains again)."""
    return Path(train_result["checkpoint"]).is_file()
