"""Sampling on the digits suite's trained models: quality vs steps per solver, and history guidance.

Two parts, both on models the ``digits_zero_shot`` suite trained (``OUT/runs/<model>_s<seed>``):

``steps``   unconditional FVD of the FVDM model (PTSS 0.2) for each sampler and step count, paired:
            clip i starts from the same noise in every cell (the suite's per-chunk streams), so
            differences between cells of one seed are the solvers', not the noise's.
``history`` reads two suite results (history guidance off and on, same seeds and models) and gives
            the per-seed paired difference (on - off) of every arm, task and metric with its 95% t CI.

    python benchmarks/digits_samplers.py steps --runs bench_out/hg_off --out benchmarks/results/digits_samplers
    python benchmarks/digits_samplers.py history --off bench_out/hg_off/results.json \\
        --on bench_out/hg_on/results.json --out benchmarks/results/digits_samplers

Threads: one per worker process (``--workers``, default 2 on the 2-core machine); recorded in the JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

SAMPLERS = ("ddim", "dpmpp_2m", "unipc")
STEPS = (5, 10, 20, 50)
MODEL = "ptss_p0.2"  # the suite's key for the FVDM model (arm ptss_0.2)
ARM = {"name": "ptss_0.2", "vtv": {"name": "ptss", "p": 0.2}, "sampling": "native"}

_W: dict[str, Any] = {}  # per worker process: plugins, suite, real sets, FVD metric


def _suite_params(seeds: int, clips: int) -> dict[str, Any]:
    return {"arms": [ARM], "baseline": ARM["name"], "tasks": ["unconditional"], "reuse_checkpoints": True,
            "min_seeds": 1, "criteria": [], "min_fvd_clips": min(256, clips),
            "standard": {"seeds": seeds, "num_uncond": clips}}


def _init(seeds: int, clips: int) -> None:
    import torch

    torch.set_num_threads(1)
    from fvdm.bench.runner import build_suite
    from fvdm.core.plugins import load_plugins

    plugins = load_plugins()
    suite = build_suite(plugins, "digits_zero_shot", _suite_params(seeds, clips))
    budget = suite.cfg.standard
    metric_info = suite.validate(plugins, budget, False)
    fvd = suite._fvd_metric(plugins, plugins["feature_extractors"].build(suite.cfg.extractor))
    _W.update(plugins=plugins, suite=suite, budget=budget, metric_info=metric_info, fvd=fvd,
              real=suite._real_sets(plugins, fvd, budget))


def _job(runs: str, seed: int, sampler: str, steps: list[int]) -> list[dict[str, Any]]:
    """FVD of one seed's FVDM model with one sampler at each step count."""
    suite, budget = _W["suite"], _W["budget"]
    ckpt = Path(runs) / "runs" / f"{MODEL}_s{seed}" / "checkpoints" / "last.pt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt} missing: run the digits_zero_shot suite with --out {runs} first")
    out = []
    for k in steps:
        suite.cfg.sampler = {"name": sampler, "clip_x0": 1.0}  # every solver with the suite's x0 clipping
        b = budget.model_copy(update={"sample_steps": k})
        t0 = time.perf_counter()
        res = suite._evaluate(_W["plugins"], ckpt, MODEL, [ARM["name"]], seed, _W["fvd"], _W["real"], b,
                              _W["metric_info"])
        out.append({"seed": seed, "sampler": sampler, "steps": k, "fvd": res[ARM["name"]]["unconditional"]["fvd"],
                    "seconds": time.perf_counter() - t0})
        print(f"[digits_samplers] seed {seed} {sampler} {k} steps: FVD {out[-1]['fvd']:.1f} "
              f"({out[-1]['seconds']:.0f} s)", flush=True)
    return out


def _ci(values: list[float]) -> dict[str, Any]:
    from fvdm.bench.stats import mean_ci

    return mean_ci(values)


def _fmt(c: dict[str, Any]) -> str:
    if c["n"] < 2:
        return f"{c['mean']:.4g}"
    return f"{c['mean']:.4g} [{c['ci_low']:.4g}, {c['ci_high']:.4g}]"


def _provenance(args: argparse.Namespace, workers: int) -> dict[str, Any]:
    import platform
    import subprocess

    import torch

    rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True).stdout.strip())
    return {"git": rev, "dirty": dirty, "torch": torch.__version__, "python": platform.python_version(),
            "nproc": os.cpu_count(), "workers": workers, "threads_per_worker": 1, "argv": vars(args),
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def run_steps(args: argparse.Namespace) -> dict[str, Any]:
    seeds = list(range(args.seeds))
    done = [r for f in (args.rows_from or []) for r in json.loads(Path(f).read_text())["rows"]]
    have = {(r["seed"], r["sampler"]) for r in done}
    if args.only_seed is not None:
        seeds = [args.only_seed]
    jobs = [(args.runs, s, name, list(args.steps)) for s in seeds for name in args.samplers if (s, name) not in have]
    t0 = time.perf_counter()
    rows = list(done)
    if jobs:
        with mp.get_context("spawn").Pool(args.workers, initializer=_init, initargs=(args.seeds, args.clips)) as pool:
            rows += [r for part in pool.starmap(_job, jobs) for r in part]
    seeds = sorted({r["seed"] for r in rows})
    cells: dict[str, Any] = {}
    for name in args.samplers:
        for k in args.steps:
            vals = {r["seed"]: r["fvd"] for r in rows if r["sampler"] == name and r["steps"] == k}
            ddim = {r["seed"]: r["fvd"] for r in rows if r["sampler"] == "ddim" and r["steps"] == k}
            cell = {"fvd": _ci([vals[s] for s in seeds])}
            if name != "ddim" and ddim:
                from fvdm.bench.stats import verdict

                d = _ci([vals[s] - ddim[s] for s in seeds])
                cell["minus_ddim"] = {**d, "verdict": verdict(d["ci_low"], d["ci_high"], higher_is_better=False)}
            cells[f"{name}/{k}"] = cell
    lines = ["| sampler | " + " | ".join(f"{k} steps" for k in args.steps) + " |",
             "|---|" + "---|" * len(args.steps)]
    for name in args.samplers:
        lines.append(f"| {name} | " + " | ".join(_fmt(cells[f'{name}/{k}']['fvd']) for k in args.steps) + " |")
    lines += ["", "Paired difference to DDIM at the same steps (FVD, lower is better; 95% t CI over seeds):", "",
              "| sampler | " + " | ".join(f"{k} steps" for k in args.steps) + " |",
              "|---|" + "---|" * len(args.steps)]
    for name in (n for n in args.samplers if n != "ddim"):
        lines.append(f"| {name} | " + " | ".join(
            f"{_fmt(cells[f'{name}/{k}']['minus_ddim'])} {cells[f'{name}/{k}']['minus_ddim']['verdict']}"
            for k in args.steps) + " |")
    return {"rows": rows, "cells": cells, "table": "\n".join(lines), "elapsed_s": time.perf_counter() - t0}


def run_history(args: argparse.Namespace) -> dict[str, Any]:
    off, on = (json.loads(Path(p).read_text()) for p in (args.off, args.on))
    per_off, per_on = off["metrics"]["per_seed"], on["metrics"]["per_seed"]
    hg = on["config"].get("history_guidance")
    diffs: dict[str, Any] = {}
    lines = [f"History guidance {hg} (level {on['config'].get('history_level')}) minus off, paired per seed "
             "(95% t CI):", "", "| arm | task | metric | off | on | on - off | reading |",
             "|---|---|---|---|---|---|---|"]
    from fvdm.bench.stats import compared, verdict
    from fvdm.bench.suites.digits_zero_shot import DIRECTIONS, TARGETS

    seeds = sorted(set(per_off) & set(per_on))
    arms = per_off[seeds[0]].keys()
    for arm in arms:
        for task, res in per_off[seeds[0]][arm].items():
            for metric in (m for m, v in res.items() if m in DIRECTIONS and isinstance(v, float)):
                # a metric with an ideal value (boundary jump 1 = as smooth as real video) compares |value - ideal|
                ideal = TARGETS.get(metric)
                a = [compared(per_off[s][arm][task][metric], ideal) for s in seeds]
                b = [compared(per_on[s][arm][task][metric], ideal) for s in seeds]
                label = metric if ideal is None else f"{metric} distance to {ideal:g}"
                d = _ci([y - x for x, y in zip(a, b)])
                v = verdict(d["ci_low"], d["ci_high"], DIRECTIONS[metric])
                reading = {"supported": "guidance helps", "contradicted": "guidance hurts"}.get(v, "inconclusive")
                diffs[f"{arm}/{task}/{label}"] = {**d, "reading": reading}
                lines.append(f"| {arm} | {task} | {label} | {_fmt(_ci(a))} | {_fmt(_ci(b))} | {_fmt(d)} | "
                             f"{reading} |")
    return {"history_guidance": hg, "seeds": seeds, "diffs": diffs, "table": "\n".join(lines),
            "paired_fvdm_vs_vanilla": {"off": off["metrics"]["paired"], "on": on["metrics"]["paired"]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="part", required=True)
    s = sub.add_parser("steps")
    s.add_argument("--runs", required=True, help="the digits_zero_shot --out directory holding runs/")
    s.add_argument("--seeds", type=int, default=3)
    s.add_argument("--samplers", nargs="+", default=list(SAMPLERS))
    s.add_argument("--steps", type=int, nargs="+", default=list(STEPS))
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--only-seed", type=int, help="run this seed alone (merge later with --rows-from)")
    s.add_argument("--clips", type=int, default=128, help="unconditional clips per cell (the suite's FVD set)")
    s.add_argument("--rows-from", nargs="+", help="steps.json files whose (seed, sampler) cells are reused, not re-run")
    h = sub.add_parser("history")
    h.add_argument("--off", required=True)
    h.add_argument("--on", required=True)
    for p in (s, h):
        p.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = run_steps(args) if args.part == "steps" else run_history(args)
    res["provenance"] = _provenance(args, getattr(args, "workers", 1))
    (out / f"{args.part}.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / f"{args.part}.md").write_text(res["table"] + "\n")
    print(res["table"])


if __name__ == "__main__":
    main()
