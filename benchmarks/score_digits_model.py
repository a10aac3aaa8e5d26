"""Score one digits model's context tasks and unconditional samples, with intervals over test clips.

What it writes (OUT/results.json, OUT/results.md, OUT/tasks.png):

* ``identity_f1``: ``image_to_video`` (frame 0 given) and ``extension`` (the first half given), and
  ``interpolation``: F1 of the digit classes the bundled detector finds in each generated frame
  against those of the given frames (``digit_identity``), per clip, mean and 95% t interval over the
  ``--clips`` held-out clips. Beside each: the same score of the real clips (the ceiling the detector's
  own error sets) and of copying the nearest given frame (the floor a model must beat).
* ``trajectory_error_px``: ``extension`` (and the others): mean distance in pixels between the digits
  found in each generated frame and the clip's true digit positions (``trajectory_error``, capped), per
  clip, with the same two references.
* ``unconditional``: ``fvd_digits`` of ``--samples`` samples against as many held-out real clips, and
  ``digit_recognisability`` of the samples next to the real clips'.

Native sampling (the given frames at level 0, re-imposed every step), DDIM ``--steps``, chunk b of 16
clips drawn from generator ``seed + b``: the numbers are a function of the model, the clips and the seed.

    python -m benchmarks.score_digits_model fvdm/bench/weights/digits_fvdm --out benchmarks/results/digits_fvdm
    python -m benchmarks.score_digits_model bench_out/run/checkpoints/last.pt --out OUT --clips 64
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

TASKS = ("image_to_video", "extension", "interpolation")


def per_clip(ev: Any, fake: torch.Tensor, gt: torch.Tensor, **kw: Any) -> list[float]:
    """One evaluator value per clip (clips scored one at a time, so each gets its own interval weight)."""
    return [float(ev.evaluate(fake[i:i + 1], gt[i:i + 1], **kw)["value"]) for i in range(fake.shape[0])]


def _truth_slice(truth: Any, i: int) -> Any:
    from dataclasses import fields, is_dataclass, replace

    if is_dataclass(truth):
        return replace(truth, **{f.name: getattr(truth, f.name)[i:i + 1] for f in fields(truth)
                                 if isinstance(getattr(truth, f.name), torch.Tensor)})
    return truth


def score(lm: Any, plugins: Any, *, clips: int, samples: int, steps: int, seed: int) -> tuple[dict, dict]:
    """(results, task videos) for a loaded model."""
    from fvdm.bench.context_identity import GIVEN, copy_nearest, sample_tasks
    from fvdm.bench.stats import mean_ci
    from fvdm.plugins.evaluators.digits_truth import digits_truth
    from fvdm.core.sampling_context import sample_unconditional

    data = lm.config.data.spec()
    val = plugins["datasets"].build({**data, "split": "val", "num_clips": max(clips, samples)})
    gt = torch.stack([val[i]["video"] for i in range(clips)])  # (N, F, C, H, W) in [-1, 1]
    truth = digits_truth(val, range(clips))
    f = gt.shape[1]
    # the evaluators' default value range is [-1, 1], the pixels' range here
    ident = plugins["evaluators"].build({"name": "digit_identity"})
    traj = plugins["evaluators"].build({"name": "trajectory_error"})
    recog = plugins["evaluators"].build({"name": "digit_recognisability"})
    t0 = time.perf_counter()
    videos = sample_tasks(lm, plugins, gt, steps, seed=seed)
    res: dict[str, Any] = {"identity_f1": {}, "trajectory_error_px": {}, "recognisability": {}}
    for task in TASKS:
        given = GIVEN[task](f)
        mask = torch.ones(f, dtype=torch.bool)
        mask[given] = False
        arms = {"model": videos[task], "real clips": gt, "copy nearest given frame": copy_nearest(gt, given)}
        res["identity_f1"][task] = {k: mean_ci(per_clip(ident, v, gt, context=given))
                                    for k, v in arms.items()}
        res["trajectory_error_px"][task] = {
            k: mean_ci([float(traj.evaluate(v[i:i + 1], truth=_truth_slice(truth, i), mask=mask)["value"])
                        for i in range(clips)]) for k, v in arms.items()}
        res["recognisability"][task] = float(recog.evaluate(videos[task])["value"])
    res["task_seconds"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    fake = sample_unconditional(lm, plugins, samples, steps=steps, seed=seed + 1000, chunk=16)  # (n, F, C, H, W)
    real = torch.stack([val[i]["video"] for i in range(samples)])
    fvd = plugins["evaluators"].build({"name": "fvd_digits", "num_real": None, "num_fake": None,
                                       "num_frames": f}, plugins=plugins)
    from fvdm.core.media import to_uint8

    res["unconditional"] = {
        "samples": samples, "fvd_digits": float(fvd.evaluate(to_uint8(fake.clamp(-1, 1)), to_uint8(real))["value"]),
        "recognisability": {"generated": float(recog.evaluate(fake.clamp(-1, 1))["value"]),
                            "real": float(recog.evaluate(real)["value"])},
        "seconds": round(time.perf_counter() - t0, 1)}
    res.update(clips=clips, steps=steps, seed=seed, sampler="ddim (the model's sample section), native sampling")
    return res, videos | {"gt": gt}


def markdown(name: str, res: dict[str, Any]) -> str:
    def cell(d: dict[str, Any]) -> str:
        return f"{d['mean']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}]" if d.get("ci_low") is not None else \
            f"{d['mean']:.3f}"

    lines = [f"# {name}: context tasks and unconditional samples", "",
             f"{res['clips']} held-out clips per task, DDIM {res['steps']} steps, native sampling, seed {res['seed']}; "
             "mean [95% t interval over clips].", "",
             "| task | metric | model | real clips | copy nearest given frame |", "|---|---|---|---|---|"]
    for metric in ("identity_f1", "trajectory_error_px"):
        for task, arms in res[metric].items():
            lines.append(f"| {task} | {metric} | {cell(arms['model'])} | {cell(arms['real clips'])} | "
                         f"{cell(arms['copy nearest given frame'])} |")
    u = res["unconditional"]
    lines += ["", f"Unconditional ({u['samples']} samples): fvd_digits {u['fvd_digits']:.1f}; recognisability "
                  f"{u['recognisability']['generated']:.3f} (real {u['recognisability']['real']:.3f})."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a checkpoint (.pt) or a committed model directory (with provenance.json)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from fvdm.bench.runner import provenance
    from fvdm.core.media import write_png_grid
    from fvdm.core.plugins import load_plugins

    plugins = load_plugins()
    src = Path(args.model)
    if src.is_dir():
        from fvdm.commands.demo_committed import load_committed

        lm, prov = load_committed(src, plugins)
        model = {"path": str(src), "sha256": prov["sha256"], "step": prov.get("step")}
    else:
        from fvdm.core.hashing import sha256_file
        from fvdm.core.loaded import load_for_sampling

        lm, model = load_for_sampling(src, plugins), {"path": str(src), "sha256": sha256_file(src)}
    res, videos = score(lm, plugins, clips=args.clips, samples=args.samples, steps=args.steps, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"model": model, **res, "threads": args.threads, "provenance": provenance()}
    (out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "results.md").write_text(markdown(out.name, res))
    rows = torch.stack([videos["gt"][:4], *(videos[t][:4] for t in TASKS)], dim=1).flatten(0, 1)
    write_png_grid(rows, out / "tasks.png", scale=3)  # per clip: truth, image-to-video, extension, interpolation
    print(markdown(out.name, res))


if __name__ == "__main__":
    main()
