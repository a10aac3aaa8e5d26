"""Collect the digits context study: identity with the given frames against training steps, per recipe.

Each recipe is a run directory of ``benchmarks/train_digits_fvdm.py`` (its curve.json: identity F1 of
image-to-video, extension and interpolation on held-out clips, unconditional fvd_digits and
recognisability, at every doubling of the steps). This script puts the curves side by side with the
floor (copying the nearest given frame) and the ceiling (the real clips), writes OUT/study.json and
OUT/identity.png, and copies each run's curve.json and last task grid into OUT/<recipe>/.

    python -m benchmarks.digits_context_study --out benchmarks/results/digits_context_study \\
        ft_context_mix=bench_out/ft_ctx scratch_context_mix=bench_out/scratch_A \\
        scratch_context_mix_tk3=bench_out/scratch_B spacetime=bench_out/ft_st \\
        clean_frame_loss=bench_out/ft_cl overfit16=bench_out/overfit16

A run scored on its own training clips (``train_digits_fvdm.py --score-split train``, the overfitting check)
is drawn dashed and marked ``scored_on: train``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", metavar="NAME=DIR")
    ap.add_argument("--out", required=True)
    ap.add_argument("--clips", type=int, default=32, help="held-out clips for the copy floor (as the curves)")
    args = ap.parse_args()
    from fvdm.bench.context_identity import copy_identity, held_out, real_identity
    from fvdm.bench.runner import provenance
    from fvdm.core.plugins import load_plugins

    torch.set_num_threads(1)
    plugins = load_plugins()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    study: dict = {"recipes": {}}
    for spec in args.runs:
        name, run = spec.split("=", 1)
        curve = json.loads((Path(run) / "curve.json").read_text())
        (out / name).mkdir(exist_ok=True)
        shutil.copyfile(Path(run) / "curve.json", out / name / "curve.json")
        last = curve["curve"][-1]["step"]
        if (Path(run) / f"grid_{last}_tasks.png").is_file():
            shutil.copyfile(Path(run) / f"grid_{last}_tasks.png", out / name / f"tasks_step{last}.png")
        r = curve["recipe"]
        study["recipes"][name] = {
            "vtv": r["vtv"], "backbone": r["backbone"], "init_from": r["train"].get("init_from"),
            "lr": r["train"]["lr"], "clips": curve["clips"], "sample_steps": curve["sample_steps"],
            "scored_on": curve.get("score_split", "val"),  # train: the overfitting check, not held-out clips
            "curve": [{"step": c["step"], "train_seconds": c.get("train_seconds"),
                       **{f"identity_{t}": v["identity_f1"] for t, v in c["tasks"].items()},
                       "fvd_digits": c["unconditional"].get("fvd_digits"),
                       "recognisability": c["unconditional"].get("recognisability")} for c in curve["curve"]]}
        data = r["data"]
    gt = held_out(plugins, {k: v for k, v in data.items() if k != "split"}, args.clips)
    study["real_identity"] = real_identity(plugins, gt)
    study["copy_identity"] = copy_identity(plugins, gt)
    study["provenance"] = provenance()
    (out / "study.json").write_text(json.dumps(study, indent=2) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, task in zip(axes, ("image_to_video", "extension")):
        for name, rec in study["recipes"].items():
            rows = [c for c in rec["curve"] if c["step"] > 0]
            held = rec["scored_on"] == "val"
            ax.plot([c["step"] for c in rows], [c[f"identity_{task}"] for c in rows], "o-" if held else "s--",
                    label=name if held else f"{name} (its own training clips)")
        ax.axhline(study["copy_identity"][task], ls="--", color="k", lw=0.8, label="copy nearest given frame")
        ax.axhline(study["real_identity"][task], ls=":", color="g", lw=0.8, label="real clips")
        ax.set(xscale="log", ylim=(0, 1), xlabel="training steps", ylabel="identity F1 with the given frames",
               title=task)
        ticks = sorted({c["step"] for rec in study["recipes"].values() for c in rec["curve"] if c["step"] > 0})
        ax.set_xticks(ticks, [str(t) for t in ticks], rotation=45, fontsize=7)  # the scored steps, not log labels
        ax.minorticks_off()
    axes[0].legend(fontsize=6, loc="center left")
    fig.tight_layout()
    fig.savefig(out / "identity.png", dpi=110)
    print(json.dumps({k: v for k, v in study.items() if k != "provenance"}, indent=1)[:3000])


if __name__ == "__main__":
    main()
