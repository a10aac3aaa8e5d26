"""Calibrate the moving-digits metrics (and FVD) on clips whose quality is known by construction.

Reference = the moving_digits test split (512 clips x 16 frames). Arms:

* ``real``: the val split (digit images disjoint from test): the floor of every metric;
* ``shuffled``: test clips with their frames permuted in time (per clip, seeded);
* ``frozen``: the first frame of each test clip repeated;
* ``random_frame``: frame f of clip b taken from a random other test clip (per frame);
* ``noise``: test clips + N(0, 0.3^2) per pixel on [-1, 1], clipped;
* ``black`` (all -1) and ``mean_frame`` (the test split's mean frame, repeated);
* ``noise_sigma1`` (test clips + N(0, 1), clipped) and ``uniform`` (U[-1, 1] pixels): what an
  undertrained model's salt-and-pepper frames look like.

``shuffled``, ``frozen`` and ``random_frame`` are also built from the val clips
(``*_val`` rows), so their content is disjoint from the reference like ``real``'s.
Whole-clip table: FVD (``fvd_digits``: digits extractor, 512 vs 512), recognisability,
identity against the true labels and trajectory error against the true positions of the
clip the arm was made from (every frame). Conditional table (extension: 4 given frames;
interpolation: first and last given): the given frames are the test clip's, the others
come from the arm (``frozen`` = copy the nearest given frame); identity against the given
frames, trajectory error and recognisability on the generated frames, boundary jump
against the true clips. Writes ``benchmarks/results/digits_calibration.{json,md}``.

    python benchmarks/calibrate_digits_metrics.py --threads 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def load_split(split: str, n: int, frames: int) -> tuple[torch.Tensor, Any]:
    """Videos (n, F, 1, 32, 32) float in [-1, 1] and their DigitsTruth."""
    from fvdm.plugins.datasets.moving_digits import MovingDigits
    from fvdm.plugins.evaluators.digits_truth import digits_truth

    ds = MovingDigits(MovingDigits.Config(split=split, num_clips=n, num_frames=frames))
    return ds.get_batch(range(n)), digits_truth(ds, range(n))


def whole_clip_arms(v: torch.Tensor, g: torch.Generator, sigma: float) -> dict[str, torch.Tensor]:
    """Perturbed copies of clips v (B, F, C, H, W) in [-1, 1] (the same truth applies to every arm)."""
    b, f = v.shape[:2]
    perm = torch.argsort(torch.rand(b, f, generator=g), dim=1)  # (B, F) a time permutation per clip
    src = torch.randint(0, b, (b, f), generator=g)  # (B, F) which clip each frame comes from
    return {
        "shuffled": v[torch.arange(b)[:, None], perm],
        "frozen": v[:, :1].expand(-1, f, -1, -1, -1).clone(),
        "random_frame": v[src, torch.arange(f)[None, :]],
        "noise": (v + sigma * torch.randn(v.shape, generator=g)).clamp(-1, 1),
    }


def conditional_arms(v: torch.Tensor, ctx: torch.Tensor, mean_frame: torch.Tensor, g: torch.Generator,
                     sigma: float) -> dict[str, torch.Tensor]:
    """Given frames (ctx, (F,) bool) from v; the generated frames from each arm."""
    b, f = v.shape[:2]
    gen = torch.nonzero(~ctx).flatten()
    given = torch.nonzero(ctx).flatten()
    out: dict[str, torch.Tensor] = {"real": v.clone()}
    x = v.clone()
    perm = torch.argsort(torch.rand(b, len(gen), generator=g), dim=1)
    x[:, gen] = v[:, gen][torch.arange(b)[:, None], perm]
    out["shuffled"] = x
    nearest = given[(gen[:, None] - given[None, :]).abs().argmin(dim=1)]  # (n_gen,) the closest given frame
    x = v.clone()
    x[:, gen] = v[:, nearest]
    out["frozen"] = x  # = copy the nearest given frame
    x = v.clone()
    src = torch.randint(0, b, (b, len(gen)), generator=g)
    x[:, gen] = v[src, gen[None, :]]
    out["random_frame"] = x
    x = v.clone()
    x[:, gen] = (v[:, gen] + sigma * torch.randn(v[:, gen].shape, generator=g)).clamp(-1, 1)
    out["noise"] = x
    x = v.clone()
    x[:, gen] = -1.0
    out["black"] = x
    x = v.clone()
    x[:, gen] = mean_frame
    out["mean_frame"] = x
    return out


def timed(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    t0 = time.perf_counter()
    res = fn()
    res["seconds"] = round(time.perf_counter() - t0, 2)
    return res


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=512)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--extension-frames", type=int, default=4)
    ap.add_argument("--sigma", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fvd-only", action="store_true", help="only the whole-clip FVD column")
    ap.add_argument("--extractor-weights", default=None, help="digits extractor weights (default: bundled)")
    ap.add_argument("--out", default=str(RESULTS / "digits_calibration"), help="path stem for .json and .md")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.clips < 512:
        print(f"note: {args.clips} clips (< 512): FVD is biased upwards at small n; not the reported protocol")

    from fvdm.core.plugins import load_plugins
    from fvdm.plugins.evaluators.common import to_uint8_video

    plugins = load_plugins()
    ev = plugins["evaluators"]
    t0 = time.perf_counter()
    test_v, test_truth = load_split("test", args.clips, args.frames)
    val_v, val_truth = load_split("val", args.clips, args.frames)
    g = torch.Generator().manual_seed(args.seed)
    mean_frame = test_v.mean(dim=(0, 1))  # (C, H, W)
    arms: dict[str, tuple[torch.Tensor, Any]] = {"real": (val_v, val_truth)}
    arms.update({k: (x, test_truth) for k, x in whole_clip_arms(test_v, g, args.sigma).items()})
    arms.update({f"{k}_val": (x, val_truth) for k, x in whole_clip_arms(val_v, g, args.sigma).items()
                 if k in ("shuffled", "frozen", "random_frame")})
    arms["black"] = (torch.full_like(test_v, -1.0), test_truth)
    arms["mean_frame"] = (mean_frame.expand_as(test_v).clone(), test_truth)
    arms["noise_sigma1"] = ((test_v + torch.randn(test_v.shape, generator=g)).clamp(-1, 1), test_truth)
    arms["uniform"] = (torch.rand(test_v.shape, generator=g) * 2 - 1, test_truth)
    print(f"built {len(arms)} arms of {args.clips} clips in {time.perf_counter() - t0:.1f}s", flush=True)

    fvd_spec: dict[str, Any] = {"name": "fvd_digits"}
    if args.extractor_weights:
        fvd_spec["weights"] = args.extractor_weights
    fvd = ev.build(fvd_spec)
    real_stats = fvd.real_stats(to_uint8_video(test_v, value_range="-1_1"))
    rec, ident, traj = ev.build("digit_recognisability"), ev.build("digit_identity"), ev.build("trajectory_error")
    if not args.fvd_only:
        ident._detector = traj._detector = rec.detector  # one detector, loaded once

    whole: dict[str, dict[str, Any]] = {}
    for name, (x, truth) in arms.items():
        row: dict[str, Any] = {"fvd": fvd.evaluate(to_uint8_video(x, value_range="-1_1"), real_stats)["value"]}
        if not args.fvd_only:
            r = rec.evaluate(x)
            row.update({"recognisability": r["value"], "mean_confidence": r["mean_confidence"],
                        "digits_per_frame": r["digits_per_frame"]})
            i = ident.evaluate(x, truth=truth)
            row.update({"identity_f1": i["value"], "identity_exact": i["exact_match"]})
            t = traj.evaluate(x, truth=truth)
            row.update({"trajectory_error_px": t["value"], "matched_error_px": t["matched_error_px"],
                        "miss_rate": t["miss_rate"]})
        whole[name] = row
        print(name, {k: round(v, 4) for k, v in row.items()}, flush=True)
    floor = whole["real"]["fvd"]
    for row in whole.values():
        row["fvd_over_floor"] = row["fvd"] / floor

    conditional: dict[str, dict[str, dict[str, Any]]] = {}
    if not args.fvd_only:
        bj = ev.build("boundary_jump")
        f = args.frames
        tasks = {"extension": list(range(args.extension_frames)), "interpolation": [0, f - 1]}
        for task, given in tasks.items():
            ctx = torch.zeros(f, dtype=torch.bool)
            ctx[given] = True
            conditional[task] = {}
            for name, x in conditional_arms(test_v, ctx, mean_frame, g, args.sigma).items():
                gen_mask = (~ctx).expand(x.shape[0], -1)
                row = {
                    "recognisability": rec.evaluate(x, mask=gen_mask)["value"],
                    "identity_f1": ident.evaluate(x, context=given)["value"],
                    "trajectory_error_px": traj.evaluate(x, truth=test_truth, mask=gen_mask)["value"],
                }
                b = bj.evaluate(x, test_v, context=given)
                row.update({"boundary_jump": b["value"], "interior_ratio": b.get("interior_ratio", float("nan"))})
                conditional[task][name] = row
                print(task, name, {k: round(v, 4) for k, v in row.items()}, flush=True)

    result = {
        "protocol": {**{k: v for k, v in vars(args).items() if k != "out"},
                     "reference": f"moving_digits test split, {args.clips} clips x {args.frames} frames",
                     "real_arm": "moving_digits val split (digit images disjoint from test)"},
        "fvd_extractor": {"extractor_id": fvd.extractor.extractor_id, "weights_sha256": fvd.extractor.weights_sha256},
        "detector": None if args.fvd_only else {"detector_id": rec.detector.detector_id,
                                                "weights_sha256": rec.detector.weights_sha256},
        "whole_clip": whole,
        "conditional": conditional,
        "seconds": round(time.perf_counter() - t0, 1),
        "torch": torch.__version__,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from fvdm.bench.runner import write_json

    write_json(result, out.with_suffix(".json"))
    out.with_suffix(".md").write_text(to_markdown(result))
    print(out.with_suffix(".md").read_text())
    return result


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def to_markdown(res: dict[str, Any]) -> str:
    p = res["protocol"]
    lines = [
        "# Moving-digits metric calibration",
        "",
        f"Reference: {p['reference']}; `real` = {p['real_arm']}. Noise sigma {p['sigma']} on [-1, 1]. "
        f"FVD extractor `{res['fvd_extractor']['extractor_id']}` ({res['fvd_extractor']['weights_sha256'][:12]}), "
        + (f"detector `{res['detector']['detector_id']}` ({res['detector']['weights_sha256'][:12]}). "
           if res["detector"] else "")
        + "Made by `benchmarks/calibrate_digits_metrics.py`.",
        "",
        "## Whole clips (every frame scored; identity and trajectory against the source clip's truth)",
        "",
    ]
    first = next(iter(res["whole_clip"].values()))
    cols = [c for c in ("fvd", "fvd_over_floor", "recognisability", "mean_confidence", "identity_f1", "identity_exact",
                        "trajectory_error_px", "matched_error_px", "miss_rate") if c in first]
    lines += ["| arm | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in res["whole_clip"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    for task, rows in res["conditional"].items():
        lines += ["", f"## {task} (given frames from the test clip; generated frames from the arm)", ""]
        cols = list(next(iter(rows.values())))
        lines += ["| arm | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for name, row in rows.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
