"""Time per new frame of a causal rollout: with the key/value cache, recomputing the past, and sliding windows.

The digits-sized unet_video (causal, rope, temporal_window 16 = its training clip length), random
weights (time does not depend on them), ``--batch`` clips at once, DDIM ``--steps`` per frame, one frame per chunk.
For N in ``--frames`` it times, side by side in one process:

- ``cache``    causal_rollout with the cache: each call runs the new frame only (and ``chunk`` 8: 8 new
               frames per call, as many as the default sliding window makes);
- ``recompute`` the same rollout recomputing every finished frame at every call (up to ``--max-recompute``
               frames: its cost grows with N);
- ``sliding``  long_video with 16-frame windows and overlap 15 (one new frame per window, what a
               non-causal model must do to continue frame by frame) and overlap 8 (the default rollout).

    python benchmarks/causal_cache.py --out benchmarks/results/causal_cache --threads 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--frames", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    ap.add_argument("--max-recompute", type=int, default=64)
    ap.add_argument("--max-sliding", type=int, default=64, help="sliding windows cost the same per frame at any N")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16, help="clips per rollout (at batch 1 a CPU is latency-bound)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from fvdm.core.plugins import load_plugins
    from fvdm.core.sampling_context import build_context

    P = load_plugins(entry_points=False)
    W = 16
    model = P["backbones"].build({"name": "unet_video", "in_channels": 1, "input_size": 32, "num_frames": W,
                                  "temporal_attention": "causal", "temporal_positions": "rope",
                                  "temporal_window": W}).eval()
    sched = P["noise_schedules"].build({"name": "ddpm", "learn_sigma": False, "prediction": "v"})

    def sampling() -> Any:
        return build_context(P, model=model, schedule=sched, sampler="ddim", matrix="standard", num_frames=W,
                             shape=(1, 32, 32), steps=args.steps, batch_size=args.batch, seed=0)

    def timed(spec: dict[str, Any], n: int) -> float:
        task = P["tasks"].build(spec)
        t0 = time.perf_counter()
        with torch.inference_mode():
            task.run(sampling(), {"num_frames": n})
        return time.perf_counter() - t0

    timed({"name": "causal_rollout", "cache": True}, 4)  # warm-up
    rows = []
    for n in args.frames:
        row: dict[str, Any] = {"frames": n}
        row["cache_s"] = timed({"name": "causal_rollout", "cache": True}, n)
        row["cache_chunk8_s"] = timed({"name": "causal_rollout", "cache": True, "chunk": 8}, n)
        if n <= args.max_recompute:
            row["recompute_s"] = timed({"name": "causal_rollout", "cache": False}, n)
        if n <= args.max_sliding:
            row["sliding_o15_s"] = timed({"name": "long_video", "overlap": W - 1}, n)
            row["sliding_o8_s"] = timed({"name": "long_video", "overlap": W // 2}, n)
        for k in [k for k in row if k.endswith("_s")]:
            row[k.replace("_s", "_ms_per_frame")] = 1000 * row[k] / n
        rows.append(row)
        print(json.dumps(row), flush=True)
    first, last = rows[0], rows[-1]
    slide = [r for r in rows if "sliding_o15_s" in r][-1]  # the longest video timed both ways
    summary = {
        "cache_ms_per_frame_first_last": [first["cache_ms_per_frame"], last["cache_ms_per_frame"]],
        "cache_flatness_last_over_first": last["cache_ms_per_frame"] / first["cache_ms_per_frame"],
        "sliding_compared_at_frames": slide["frames"],
        "speedup_vs_sliding_o15": slide["sliding_o15_ms_per_frame"] / slide["cache_ms_per_frame"],
        "speedup_vs_sliding_o8": slide["sliding_o8_ms_per_frame"] / slide["cache_ms_per_frame"],
        "speedup_chunk8_vs_sliding_o8": slide["sliding_o8_ms_per_frame"] / slide["cache_chunk8_ms_per_frame"],
    }
    rec = [r for r in rows if "recompute_s" in r]
    if rec:
        summary["speedup_vs_recompute_at"] = {r["frames"]: r["recompute_s"] / r["cache_s"] for r in rec}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import platform
    import subprocess

    prov = {"git": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
            "torch": torch.__version__, "python": platform.python_version(), "threads": args.threads,
            "args": vars(args), "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (out / "results.json").write_text(json.dumps({"rows": rows, "summary": summary, "provenance": prov}, indent=2)
                                      + "\n")
    lines = ["| frames | cache ms/frame | cache, chunk 8 | recompute | sliding o=15 | sliding o=8 |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        cell = lambda k: f"{r[k]:.0f}" if k in r else "-"  # noqa: E731
        lines.append(f"| {r['frames']} | {cell('cache_ms_per_frame')} | {cell('cache_chunk8_ms_per_frame')} | "
                     f"{cell('recompute_ms_per_frame')} | "
                     f"{cell('sliding_o15_ms_per_frame')} | {cell('sliding_o8_ms_per_frame')} |")
    (out / "results.md").write_text("\n".join(lines) + "\n\n" + json.dumps(summary, indent=2) + "\n")
    print("\n".join(lines))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
