"""Long-video sampling cost vs number of frames (sliding windows), measured side by side.

A 16-frame latte_tiny model (random weights: cost does not depend on them) samples
N = 16, 32, 64, 128 frames with the ``long_video`` task (window 16, overlap 8,
stride 8, DDIM K steps). Each window is one K-step sample of 16 frames, so the time
should grow linearly with the number of windows: 1 + ceil((N - 16) / 8), i.e. 15 for
N = 128. Reported: time(128) / time(16) next to the window count, the slope of a
least-squares line time = a + b * windows and its r².

    python benchmarks/long_video.py [--quick] [--threads 1] [--out long_video.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any

import torch

from fvdm.bench.runner import write_json

FULL = dict(frames=[16, 32, 64, 128], window=16, overlap=8, size=32, patch=4, steps=10, reps=3)
QUICK = dict(frames=[16, 32, 64, 128], window=16, overlap=8, size=16, patch=4, steps=2, reps=2)


def _context(spec: dict[str, Any]) -> Any:
    from fvdm.core.plugins import load_plugins
    from fvdm.core.sampling_context import build_context

    P = load_plugins(entry_points=False)
    schedule = P["noise_schedules"].build("ddpm")
    model = P["backbones"].build({"name": "latte_tiny", "in_channels": 1, "input_size": spec["size"],
                                  "num_frames": spec["window"], "patch_size": spec["patch"], "learn_sigma": True})
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # adaLN-Zero starts at 0; give it trained-like values
        for p in model.parameters():
            if p.abs().max() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    model.eval()
    ctx = build_context(P, model=model, schedule=schedule, sampler="ddim", matrix="standard",
                        num_frames=spec["window"], shape=(1, spec["size"], spec["size"]), steps=spec["steps"],
                        batch_size=1, seed=0)
    return P, ctx


def run(quick: bool = False, threads: int = 1) -> dict[str, Any]:
    from fvdm.tasks.base import num_windows

    torch.set_num_threads(threads)
    spec = dict(QUICK if quick else FULL)
    P, ctx = _context(spec)
    tasks = {n: P["tasks"].build({"name": "long_video", "num_frames": n, "overlap": spec["overlap"]})
             for n in spec["frames"]}
    calls = {"n": 0}
    inner = ctx.model

    def counted(*a: Any, **k: Any) -> Any:
        calls["n"] += 1
        return inner(*a, **k)

    ctx.model = counted
    with torch.no_grad():
        tasks[spec["frames"][0]].run(ctx, {})  # warm-up
        times: dict[int, list[float]] = {n: [] for n in spec["frames"]}
        model_calls: dict[int, int] = {}
        for _ in range(spec["reps"]):
            for n in spec["frames"]:  # interleaved so load changes hit every N alike
                calls["n"] = 0
                t0 = time.perf_counter()
                video = tasks[n].run(ctx, {})
                times[n].append(time.perf_counter() - t0)
                model_calls[n] = calls["n"]
                assert video.shape[1] == n
    med = [statistics.median(times[n]) for n in spec["frames"]]
    wins = [num_windows(n, spec["window"], spec["overlap"]) for n in spec["frames"]]
    # least squares time = a + b * windows
    mw, mt = statistics.fmean(wins), statistics.fmean(med)
    sxx = sum((w - mw) ** 2 for w in wins)
    b = sum((w - mw) * (t - mt) for w, t in zip(wins, med)) / sxx
    a = mt - b * mw
    ss_res = sum((t - (a + b * w)) ** 2 for w, t in zip(wins, med))
    ss_tot = sum((t - mt) ** 2 for t in med)
    n0, n1 = spec["frames"][0], spec["frames"][-1]
    return {
        "frames": spec["frames"], "windows": wins, "seconds": [round(t, 4) for t in med],
        "model_calls": [model_calls[n] for n in spec["frames"]],
        f"time_ratio_{n1}_vs_{n0}": round(med[-1] / med[0], 3),
        f"windows_ratio_{n1}_vs_{n0}": wins[-1] / wins[0],
        "seconds_per_window_slope": round(b, 4), "intercept_s": round(a, 4), "linear_r2": round(1 - ss_res / ss_tot, 4)
        if ss_tot > 0 else 1.0,
        "settings": {**spec, "threads": threads, "sampler": "ddim", "model": "latte_tiny (random weights)",
                     "machine": f"{platform.machine()} {os.cpu_count()} cores", "torch": torch.__version__},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="write the JSON result here")
    args = p.parse_args(argv)
    res = run(quick=args.quick, threads=args.threads)
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        write_json(res, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
