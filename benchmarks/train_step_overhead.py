"""Train-step cost of FVDM's vectorized timestep vs the scalar Latte step, measured side by side.

One process, three variants of the SAME backbone (same weights), timed interleaved (ABC, BCA, CAB, ...)
over many repetitions, medians reported:

  scalar      t_in (B,)   classic Latte: one embedding per clip, broadcast over frames
  per_frame   t_in (B, F) FVDM, adaLN modulation computed once per frame and broadcast over positions
  per_token   t_in (B, F) FVDM public-code style: temporal adaLN Linear on every (position, frame) row

A train step is forward + MSE + backward + AdamW. FLOPs per step come from
torch.utils.flop_counter.FlopCounterMode; MFU is against a fp32 matmul peak measured here with
the same thread count. METHOD.md: per_token is 1.19-1.28x scalar on CPU (Latte-S/2, 16x32x32
latents, batch 2, 1 thread); per_frame must stay <= 1.03x.

    python benchmarks/train_step_overhead.py [--quick] [--threads 1] [--reps 7] [--out overhead.json]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.runner import write_json

VARIANTS = ("scalar", "per_frame", "per_token")

FULL = dict(model="latte_s_2", batch=2, frames=16, channels=4, size=32, reps=7, warmup=1)
QUICK = dict(model="latte_s_2", batch=1, frames=8, channels=4, size=16, reps=9, warmup=2)


def _randomize_zero_init(model: torch.nn.Module, seed: int = 0) -> None:
    """adaLN-Zero starts at zero; give the zero tensors small values so timing sees a trained-like net."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().max() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def build_variants(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    from fvdm.plugins.backbones.latte import build_latte

    kw = dict(in_channels=spec["channels"], input_size=spec["size"], num_frames=spec["frames"])
    base = build_latte(spec["model"], **kw)
    _randomize_zero_init(base)
    B, Fr = spec["batch"], spec["frames"]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, Fr, spec["channels"], spec["size"], spec["size"], generator=g)
    target = torch.randn(B, Fr, base.out_channels, spec["size"], spec["size"], generator=g)
    t_frames = torch.randint(0, 1000, (B, Fr), generator=g).float()
    out = {}
    for name in VARIANTS:
        if name == "per_token":
            model = build_latte(spec["model"], temporal_modulation="per_token", **kw)
            model.load_state_dict(base.state_dict())
        else:
            model = copy.deepcopy(base)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
        t_in = t_frames[:, 0].clone() if name == "scalar" else t_frames
        out[name] = dict(model=model, opt=opt, x=x, t_in=t_in, target=target)
    return out


def train_step(v: dict[str, Any]) -> None:
    v["opt"].zero_grad(set_to_none=True)
    loss = F.mse_loss(v["model"](v["x"], v["t_in"]), v["target"])
    loss.backward()
    v["opt"].step()


def count_flops(v: dict[str, Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        train_step(v)
    return int(counter.get_total_flops())


def matmul_peak(threads: int, n: int = 1024, reps: int = 5) -> float:
    """Best fp32 matmul FLOP/s at this thread count (the MFU denominator)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.process_time()
        a @ b
        best = min(best, time.process_time() - t0)
    return 2 * n**3 / best


def run(quick: bool = False, threads: int = 1, reps: int | None = None, model: str | None = None) -> dict[str, Any]:
    """Time the three variants interleaved; return ratios, steps/s, FLOPs and MFU (JSON-able)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    spec = dict(QUICK if quick else FULL)
    if reps is not None:
        spec["reps"] = reps
    if model is not None:
        spec["model"] = model
    variants = build_variants(spec)
    flops = {name: count_flops(v) for name, v in variants.items()}  # also a warm-up step
    for _ in range(spec["warmup"]):
        for v in variants.values():
            train_step(v)
    wall: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for r in range(spec["reps"]):
        order = VARIANTS[r % 3:] + VARIANTS[: r % 3]  # rotate so no variant always runs first
        for name in order:
            c0, t0 = time.process_time(), time.perf_counter()
            train_step(variants[name])
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    # On a shared machine the process's CPU time is the steadier clock (waiting for a core is not
    # counted); with threads=1 it equals wall time on an idle machine. Ratios use CPU time.
    times = cpu
    med = {name: statistics.median(ts) for name, ts in times.items()}
    med_wall = {name: statistics.median(ts) for name, ts in wall.items()}
    # paired ratios (same repetition, adjacent in time) are robust to load drift on a shared machine
    paired = {
        name: statistics.median(a / b for a, b in zip(times[name], times["scalar"])) for name in VARIANTS[1:]
    }
    peak = matmul_peak(threads)
    result = {
        "benchmark": "train_step_overhead",
        "spec": spec,
        "threads": threads,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "loadavg_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "params": variants["scalar"]["model"].num_params(),
        "clock": "process_time (CPU seconds of this process)",
        "median_s": med,
        "median_wall_s": med_wall,
        "ratio_wall_per_frame_vs_scalar": med_wall["per_frame"] / med_wall["scalar"],
        "ratio_wall_per_token_vs_scalar": med_wall["per_token"] / med_wall["scalar"],
        "steps_per_s": {k: 1.0 / v for k, v in med.items()},
        "ratio_per_frame_vs_scalar": med["per_frame"] / med["scalar"],
        "ratio_per_token_vs_scalar": med["per_token"] / med["scalar"],
        "paired_ratio_median": paired,
        "flops_per_step": flops,
        "matmul_peak_flops": peak,
        "mfu": {k: flops[k] / med[k] / peak for k in VARIANTS},
        "flops_ratio": {k: flops[k] / flops["scalar"] for k in VARIANTS},
        "cpu_s": cpu,
        "wall_s": wall,
        "pass_per_frame_le_1.03": med["per_frame"] / med["scalar"] <= 1.03,
    }
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small size (B=1, F=8, 16x16 latents)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--model", default=None, help="backbone name (default latte_s_2)")
    ap.add_argument("--out", default=None, help="write the JSON result here")
    args = ap.parse_args(argv)
    res = run(quick=args.quick, threads=args.threads, reps=args.reps, model=args.model)
    s = res["spec"]
    print(f"{s['model']} B={s['batch']} F={s['frames']} C={s['channels']} {s['size']}x{s['size']}, "
          f"threads={res['threads']}, reps={s['reps']} (interleaved, medians)")
    for k in VARIANTS:
        print(f"  {k:10s} {res['median_s'][k]:8.3f} CPU-s/step  {res['steps_per_s'][k]:7.3f} steps/s  "
              f"{res['flops_per_step'][k] / 1e9:8.1f} GFLOP/step  MFU {100 * res['mfu'][k]:5.1f}%")
    for k, note in (("per_frame", "must be <= 1.03"), ("per_token", "public-code style, METHOD.md 1.19-1.28")):
        print(f"  {k} / scalar = {res[f'ratio_{k}_vs_scalar']:.3f} CPU-time "
              f"(paired {res['paired_ratio_median'][k]:.3f}; wall {res[f'ratio_wall_{k}_vs_scalar']:.3f}; "
              f"FLOPs {res['flops_ratio'][k]:.4f}) {note}")
    print(f"  matmul peak {res['matmul_peak_flops'] / 1e9:.1f} GFLOP/s; load avg {res['machine']['loadavg_at_end']}")
    if args.out:
        write_json(res, args.out)
        print(f"  wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
