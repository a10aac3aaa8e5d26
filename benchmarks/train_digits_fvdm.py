"""Fine-tune the committed synchronized digits base into an FVDM model; learning curve; export the demo's model.

Starts from ``fvdm/bench/weights/digits_sync_base`` (``train.init_from``) with a per-frame VTV
strategy (default: ``context_mix``, PTSS plus task-shaped draws) and checkpoints at every doubling
of the fine-tuning steps. Each checkpoint is scored the way the demo scores a model:

* what it gained, zero-shot: image-to-video (frame 0 given), extension (the first half given) and
  interpolation (first + last given) from ``--clips`` held-out val clips, native sampling (the given
  frames at level 0), DDIM ``--sample-steps``, the same noise at every checkpoint; ``digit_identity``
  (F1 of the digit classes found in each generated frame against those of the given frames), and
  the same score of the real clips (the ceiling, the detector's own error) and of the base;
* what it kept: ``fvd_digits`` and ``digit_recognisability`` of ``--samples`` unconditional clips
  (``benchmarks/digits_recipe.py``'s scoring).

Writes OUT/curve.json, OUT/curve.png and OUT/grid_<step>.png; ``--export DIR`` writes the checkpoint
with the best mean identity (image-to-video and extension) as an fvdm backbone directory with
``provenance.json`` (recipe, steps, seconds, threads, the base's and the weights' sha256, the curve).

    OMP_NUM_THREADS=1 python -m benchmarks.train_digits_fvdm --out bench_out/ft_ctx --steps 8000 \\
        --export fvdm/bench/weights/digits_fvdm
    python -m benchmarks.train_digits_fvdm --out bench_out/ft_ptss --steps 4000 -o 'vtv={name: ptss, p: 0.2}'
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from fvdm.bench.context_identity import GIVEN, held_out, real_identity

REPO = Path(__file__).resolve().parents[1]
BASE_DIR = REPO / "fvdm" / "bench" / "weights" / "digits_sync_base"
CONFIG = REPO / "configs" / "digits_sync_base.yaml"

# The fine-tune's recipe: the base's config with per-frame levels and the base's weights as the start.
# lr 5e-4 (half the base's): long enough fine-tunes here that the suite's 2e-4 would leave steps unused.
RECIPE: dict[str, Any] = {
    "name": "digits_fvdm",
    "vtv": {"name": "context_mix", "p_context": 0.5, "p": 0.2},
    "train": {"init_from": str(BASE_DIR), "lr": 5e-4, "ema_decay": 0.995, "ckpt_every": 100000,
              "sample_every": 0, "log_every": 200},
}

def score_checkpoint(ckpt: Path, plugins: Any, gt: torch.Tensor, args: argparse.Namespace, png: Path | None
                     ) -> dict[str, Any]:
    from benchmarks.digits_recipe import score as uncond_score
    from fvdm.bench.context_identity import sample_tasks, score_tasks
    from fvdm.core.loaded import load_for_sampling
    from fvdm.core.media import write_png_grid

    t0 = time.perf_counter()
    videos = sample_tasks(load_for_sampling(ckpt, plugins), plugins, gt, args.sample_steps)
    tasks = score_tasks(plugins, videos, gt)
    if png is not None:  # rows: ground truth, image-to-video, extension, interpolation for the first 4 clips
        rows = torch.stack([gt[:4], videos["image_to_video"][:4], videos["extension"][:4],
                            videos["interpolation"][:4]], dim=1).flatten(0, 1)  # (16, F, C, H, W)
        write_png_grid(rows, png.with_name(png.stem + "_tasks.png"), scale=3)
    unc = uncond_score(ckpt, plugins, args.samples, args.sample_steps, 1234, png or Path("/dev/null"))
    mean = (tasks["image_to_video"]["identity_f1"] + tasks["extension"]["identity_f1"]) / 2
    return {"tasks": tasks, "identity_i2v_ext": round(mean, 4), "unconditional": unc,
            "score_seconds": round(time.perf_counter() - t0, 1)}


def export_best(out: Path, curve: list[dict[str, Any]], dest: Path, plugins: Any, record: dict[str, Any]) -> dict:
    from benchmarks.train_digits_base import export
    from fvdm.core.hashing import sha256_file

    best = max((r for r in curve if r["step"] > 0), key=lambda r: r["identity_i2v_ext"])
    weights = export(out / f"ckpt_{best['step']}.pt", dest, plugins)
    shutil.copyfile(out / f"grid_{best['step']}_tasks.png", dest / "tasks.png")
    shutil.copyfile(out / f"grid_{best['step']}.png", dest / "samples.png")
    prov = {**record, **weights, "chosen": f"the curve's best mean identity F1 (image-to-video, extension): step "
                                          f"{best['step']}", "scores": best,
            "base_sha256": sha256_file(BASE_DIR / "model.safetensors")}
    (dest / "provenance.json").write_text(json.dumps(prov, indent=2) + "\n")
    return prov


def plot(out: Path, curve: list[dict[str, Any]], real: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in curve if r["step"] > 0]
    if not rows:  # the base alone: nothing to draw on a log axis yet
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = [r["step"] for r in rows]
    for name in GIVEN:
        a.plot(steps, [r["tasks"][name]["identity_f1"] for r in rows], "o-", label=name)
        a.axhline(curve[0]["tasks"][name]["identity_f1"], ls=":", lw=0.8, color=a.lines[-1].get_color())
    a.axhline(min(real.values()), ls="--", color="k", lw=0.8, label="real clips")
    a.set(xscale="log", xlabel="fine-tuning steps", ylabel="identity F1 (given digits kept)", ylim=(0, 1),
          title="gained (dotted: the base)")
    a.legend(fontsize=7)
    b.plot(steps, [r["unconditional"]["fvd_digits"] for r in rows], "o-", label="fine-tuned")
    b.axhline(curve[0]["unconditional"]["fvd_digits"], ls=":", color="k", label="base")
    b.set(xscale="log", xlabel="fine-tuning steps", ylabel="unconditional fvd_digits (64 samples)", title="kept")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="run directory: checkpoints, curve.json, grids")
    ap.add_argument("--steps", type=int, default=8000, help="fine-tuning steps (checkpoints at every doubling)")
    ap.add_argument("--first", type=int, default=250, help="first scored step")
    ap.add_argument("--clips", type=int, default=32, help="held-out clips per context task")
    ap.add_argument("--samples", type=int, default=64, help="unconditional samples (fvd_digits, recognisability)")
    ap.add_argument("--sample-steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--export", help="write the best checkpoint here as an fvdm backbone directory")
    ap.add_argument("--score-split", default="val", choices=("val", "train"),
                    help="clips the context tasks are scored on: val (held out) or train, the first --clips "
                         "training clips (with -o data.num_clips=N: can the model overfit them?)")
    ap.add_argument("--max-minutes", type=float, default=None, metavar="M",
                    help="train for at most M minutes in this call; the same command continues the curve")
    ap.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                    help="override the recipe, e.g. -o 'vtv={name: ptss, p: 0.2}' -o train.lr=2e-4")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import yaml

    from benchmarks.digits_recipe import doubling_run
    from fvdm.bench.runner import provenance
    from fvdm.core.config import apply_overrides, parse_config
    from fvdm.core.engine import train
    from fvdm.core.plugins import load_plugins

    plugins = load_plugins()
    recipe = yaml.safe_load(CONFIG.read_text())
    for section, fields in RECIPE.items():  # one level deep: the recipe replaces vtv, amends train
        recipe[section] = {**recipe[section], **fields} if section == "train" else fields
    recipe = apply_overrides(recipe, args.override)
    recipe["train"]["steps"] = args.steps
    cfg = parse_config(recipe, "train_digits_fvdm")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gt = held_out(plugins, cfg.data.spec(), args.clips, args.score_split)
    real = real_identity(plugins, gt)
    prev = json.loads((out / "curve.json").read_text())["curve"] if (out / "curve.json").is_file() else []
    if not prev:  # the base through the same pipeline: one step at lr 1e-12 (Adam moves no weight by > 1e-10)
        base = parse_config({**recipe, "train": {**recipe["train"], "lr": 1e-12, "warmup_steps": 0}},
                            "train_digits_fvdm (base)")
        res = train(base, plugins, run_dir=out / "base_run", max_steps=1, overwrite=True, progress=False)
        shutil.copyfile(res["checkpoint"], out / "ckpt_0.pt")
    curve = prev or [{"step": 0, "what": "the base (1 step at lr 1e-12), native sampling",
                      **score_checkpoint(out / "ckpt_0.pt", plugins, gt, args, out / "grid_0.png")}]
    done, t_train = curve[-1]["step"], curve[-1].get("train_seconds", 0.0)

    def write() -> None:
        (out / "curve.json").write_text(json.dumps(
            {"recipe": json.loads(cfg.model_dump_json()), "real_identity": real, "clips": args.clips,
             "score_split": args.score_split,
             "samples": args.samples, "sample_steps": args.sample_steps, "threads": args.threads,
             "curve": curve, "provenance": provenance()}, indent=2) + "\n")
        plot(out, curve, real)

    write()
    for done, ckpt, t_train, res in doubling_run(cfg, plugins, out, first=args.first, steps=args.steps, done=done,
                                                  t_train=t_train, max_minutes=args.max_minutes):
        curve.append({"step": done, "train_seconds": round(t_train, 1), "loss": res.get("final_loss"),
                      **score_checkpoint(ckpt, plugins, gt, args, out / f"grid_{done}.png")})
        print(json.dumps({k: curve[-1][k] for k in ("step", "train_seconds", "identity_i2v_ext")}), flush=True)
        write()
    if args.export and done >= args.steps:
        prov = export_best(out, curve, Path(args.export), plugins,
                           {"script": "benchmarks/train_digits_fvdm.py", "argv": vars(args),
                            "recipe": json.loads(cfg.model_dump_json()), "train_seconds": t_train,
                            "threads": args.threads, "real_identity": real, "provenance": provenance()})
        print(f"exported step {prov['step']} -> {args.export} (sha256 {prov['sha256'][:12]})")


if __name__ == "__main__":
    main()
