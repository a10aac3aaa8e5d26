"""Zero-shot ability against fine-tuning steps: the finetune_forgetting design at doubling budgets.

For each budget (``--steps``, default 125 250 500 1000 2000 fine-tuning steps) one resumable
``finetune_forgetting`` run in OUT/steps_<N> with the control (``continue_sync``, sampled by
replacement) and PTSS (native), ``--seeds`` seeds, scored on unconditional, image-to-video,
interpolation and extension (FVD, identity with the given frames, trajectory error, ...). Budgets run
smallest first, so a run cut short still gives the start of the curve. ``--max-minutes`` stops after
the jobs in flight and the same command continues (finished jobs are read back from each run's
records). Then OUT/curve.json and OUT/curve.png collect every budget whose seeds are all complete:
per arm and task, mean and 95% interval over seeds, and the paired PTSS - control difference.

    python -m benchmarks.finetune_curve --out benchmarks/results/finetune_curve --max-minutes 60
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

TASKS = ["unconditional", "image_to_video", "interpolation", "extension"]
ARMS = ["continue_sync", "ptss"]


def params(steps: int, seeds: int) -> dict[str, Any]:
    """The suite settings of one budget: two arms, no long video (time goes to more budgets)."""
    from fvdm.bench.suites.finetune_forgetting import FINETUNE_ARMS

    crit = [{"arm": "ptss", "task": t, "metric": "fvd", "against": "continue_sync",
             "why": "PTSS gains (or, unconditional, keeps) this task over the same compute spent synchronized"}
            for t in TASKS]
    return {"arms": [a for a in FINETUNE_ARMS if a["name"] in ARMS], "criteria": crit, "tasks": TASKS, "min_seeds": seeds,
            "standard": {"seeds": seeds, "train_steps": steps, "sample_steps": 8, "num_uncond": 256, "num_task": 32,
                         "num_long": 1}}


def collect(out: Path, budgets: list[int]) -> dict[str, Any]:
    """Every finished budget's summary (mean, interval over seeds) and paired differences, as one curve."""
    rows = []
    for n in budgets:
        res = out / f"steps_{n}" / "results.json"
        if not res.is_file():
            continue
        doc = json.loads(res.read_text())
        if doc["status"] != "ok":
            continue
        m = doc["metrics"]
        row: dict[str, Any] = {"steps": n, "seeds": doc["seeds"]}
        for task in TASKS:
            for metric in ("fvd", "digit_identity", "trajectory_error"):
                s = m["summary"].get(task, {}).get(metric)
                if s is None:
                    continue
                row[f"{task}/{metric}"] = {arm: {k: s[arm][k] for k in ("mean", "ci_low", "ci_high", "values")}
                                           for arm in ARMS if arm in s}
                d = m["paired"].get(task, {}).get(metric, {}).get("ptss")
                if d:
                    row[f"{task}/{metric}"]["ptss - continue_sync"] = {k: d[k] for k in ("mean", "ci_low", "ci_high",
                                                                                         "verdict") if k in d}
        rows.append(row)
    return {"budgets": budgets, "arms": ARMS, "tasks": TASKS, "curve": rows}


def plot(out: Path, curve: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = curve["curve"]
    if not rows:
        return
    fig, axes = plt.subplots(2, 4, figsize=(16, 6.5))
    for col, task in enumerate(TASKS):
        for r, metric in enumerate(("fvd", "digit_identity")):
            ax = axes[r, col]
            key = f"{task}/{metric}"
            for arm in ARMS:
                pts = [(row["steps"], row[key][arm]) for row in rows if key in row and arm in row[key]]
                if pts:
                    xs = [p[0] for p in pts]
                    ax.errorbar(xs, [p[1]["mean"] for p in pts],
                                yerr=[[p[1]["mean"] - p[1]["ci_low"] for p in pts],
                                      [p[1]["ci_high"] - p[1]["mean"] for p in pts]], marker="o", capsize=3,
                                label=arm)
            ax.set(xscale="log", title=f"{task}: {metric}", xlabel="fine-tuning steps")
            budgets = [row["steps"] for row in rows]  # the budgets themselves, not log-axis minor labels
            ax.set_xticks(budgets, [str(b) for b in budgets])
            ax.minorticks_off()
            if not ax.lines and not ax.collections:
                ax.set_visible(False)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, nargs="+", default=[125, 250, 500, 1000, 2000])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (split over the suite's 2 workers)")
    ap.add_argument("--max-minutes", type=float, default=None)
    args = ap.parse_args()
    from fvdm.bench.runner import run_suite
    from fvdm.core.plugins import load_plugins

    plugins = load_plugins()
    out = Path(args.out)
    t0 = time.monotonic()
    for n in sorted(args.steps):
        left = None if args.max_minutes is None else args.max_minutes - (time.monotonic() - t0) / 60
        if left is not None and left <= 0:
            print(f"finetune_curve: --max-minutes {args.max_minutes:g} reached before budget {n}; run the same "
                  "command again to continue", flush=True)
            break
        doc = run_suite("finetune_forgetting", out / f"steps_{n}", params=params(n, args.seeds), threads=args.threads,
                        plugins=plugins, max_minutes=left)
        print(f"finetune_curve: {n} steps: {doc['status']}", flush=True)
        if doc["status"] != "ok":
            print(f"finetune_curve: stopped; {doc.get('resume', '')}", flush=True)
            break
    curve = collect(out, sorted(args.steps))
    (out / "curve.json").write_text(json.dumps(curve, indent=2) + "\n")
    plot(out, curve)
    print(f"finetune_curve: {len(curve['curve'])} of {len(args.steps)} budgets complete -> {out / 'curve.json'}")


if __name__ == "__main__":
    main()
