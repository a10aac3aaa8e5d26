"""Attention-kernel benchmark: forward+backward time per kernel, as ratios to ``math``.

Shapes are Latte's two attention calls for the latte_s_2 and latte_b_2 configs at
their defaults (16 frames of 32x32 latents, patch 2 -> 256 tokens per frame):

  spatial          (B*F, N = tokens per frame, H, D)   full attention inside a frame
  temporal         (B*N, F = frames, H, D)             full attention across frames
  temporal_causal  same, causal=True                   temporal_attention: causal

Every available kernel runs on the same inputs in one process, interleaved round by
round, so the ratios to math are measured side by side; times are medians. A kernel
that cannot run backward here (flex on CPU) gets a forward-only time (``fwd_ms``
is reported for every kernel). Peak memory per kernel is measured in a separate pass:
``torch.cuda.max_memory_allocated`` on CUDA, torch's dispatch-level MemTracker on CPU
(peak bytes of live tensors created during the call). Not a test: nothing asserts.

    python -m benchmarks.attention --threads 1 --out bench_out/attention.json [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from fvdm.bench.runner import write_json

CONFIGS = ("latte_s_2", "latte_b_2")
KERNELS = ("math", "sdpa", "xformers", "flex")


def _shapes(plugins: Any, batch: int) -> list[dict[str, Any]]:
    rows = []
    for name in CONFIGS:
        cfg = plugins["backbones"].get(name).config()
        heads, dim = cfg.num_heads, cfg.hidden_size // cfg.num_heads
        tokens = (cfg.input_size // cfg.patch_size) ** 2
        frames = cfg.num_frames
        rows += [
            {"config": name, "kind": "spatial", "batch": batch * frames, "n": tokens, "heads": heads, "dim": dim,
             "causal": False},
            {"config": name, "kind": "temporal", "batch": batch * tokens, "n": frames, "heads": heads, "dim": dim,
             "causal": False},
            {"config": name, "kind": "temporal_causal", "batch": batch * tokens, "n": frames, "heads": heads,
             "dim": dim, "causal": True},
        ]
    return rows


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _step(fn: Callable, qkv: list[torch.Tensor], grad_out: torch.Tensor | None, causal: bool) -> None:
    out = fn(*qkv, causal=causal)
    if grad_out is not None:
        out.backward(grad_out)
        for t in qkv:
            t.grad = None


def _peak_bytes(fn: Callable, qkv: list[torch.Tensor], grad_out: torch.Tensor | None, causal: bool,
                device: torch.device) -> int | None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        _step(fn, qkv, grad_out, causal)
        _sync(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    try:
        from torch.distributed._tools.mem_tracker import MemTracker  # private but stable since torch 2.5
    except Exception:
        return None
    tracker = MemTracker()
    with tracker:
        _step(fn, qkv, grad_out, causal)
    snap = tracker.get_tracker_snapshot("peak")
    return int(sum(v.get("Total", 0) for v in snap.values()))


def run(quick: bool = False, threads: int = 1, *, device: str | None = None, dtype: str = "float32",
        reps: int | None = None, shapes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Time every available kernel on the latte_s_2/latte_b_2 attention shapes; returns the JSON dict.

    ``shapes`` replaces the Latte shapes (dicts with config, kind, batch, n, heads, dim, causal),
    e.g. for a smoke test.
    """
    from fvdm.core.plugins import load_plugins

    torch.set_num_threads(threads)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dt = getattr(torch, dtype)
    plugins = load_plugins()
    reg = plugins["attention_kernels"]
    batch = 1 if quick else 2
    reps = reps or (3 if quick else 5)
    results: dict[str, Any] = {}  # "latte_s_2.spatial" -> shape and per-kernel figures (flattens cleanly)
    for shape in shapes if shapes is not None else _shapes(plugins, batch):
        g = torch.Generator().manual_seed(0)
        make = lambda: torch.randn(shape["batch"], shape["n"], shape["heads"], shape["dim"], generator=g)  # noqa: E731
        base = [make().to(dev, dt) for _ in range(3)]
        grad_out = make().to(dev, dt)
        row: dict[str, Any] = {**shape, "kernels": {}}
        modes: dict[str, list[str]] = {"fwd_bwd": [], "fwd": []}
        for name in KERNELS:
            if name not in reg:
                continue
            entry = reg.get(name)
            av_f = entry.availability(device=dev, dtype=dt, requires_grad=False)
            av_b = entry.availability(device=dev, dtype=dt, requires_grad=True)
            row["kernels"][name] = {} if av_b else {"unavailable": av_f.reason if not av_f else
                                                    f"forward only: {av_b.reason}"}
            if av_f:
                modes["fwd"].append(name)
            if av_b:
                modes["fwd_bwd"].append(name)
        for mode, names in modes.items():
            qkv = [t.detach().requires_grad_(mode == "fwd_bwd") for t in base]
            go = grad_out if mode == "fwd_bwd" else None
            times: dict[str, list[float]] = {n: [] for n in names}
            with warnings.catch_warnings(), torch.set_grad_enabled(mode == "fwd_bwd"):
                warnings.simplefilter("ignore")
                for n in names:  # warm-up (also builds flex block masks / compiles on CUDA)
                    _step(reg.get(n).obj, qkv, go, shape["causal"])
                for _ in range(reps):  # interleaved rounds: machine noise hits every kernel alike
                    for n in names:
                        _sync(dev)
                        t0 = time.perf_counter()
                        _step(reg.get(n).obj, qkv, go, shape["causal"])
                        _sync(dev)
                        times[n].append(time.perf_counter() - t0)
                if mode == "fwd_bwd":
                    for n in names:
                        peak = _peak_bytes(reg.get(n).obj, qkv, go, shape["causal"], dev)
                        row["kernels"][n]["peak_mb"] = None if peak is None else round(peak / 2**20, 2)
            ref = statistics.median(times["math"]) if "math" in times else None
            for n, ts in times.items():
                med = statistics.median(ts)
                row["kernels"][n][f"{mode}_ms"] = round(med * 1e3, 3)
                row["kernels"][n][f"{mode}_ratio_to_math"] = round(med / ref, 4) if ref else None
        results[f"{shape['config']}.{shape['kind']}"] = row

    speedups = [round(r["kernels"]["math"]["fwd_bwd_ms"] / r["kernels"]["sdpa"]["fwd_bwd_ms"], 3)
                for r in results.values()
                if r["n"] >= 256 and "fwd_bwd_ms" in r["kernels"].get("sdpa", {}) and "fwd_bwd_ms" in r["kernels"]["math"]]
    return {
        "benchmark": "attention",
        "quick": quick,
        "threads": threads,
        "device": str(dev),
        "dtype": dtype,
        "reps": reps,
        "batch": batch,
        "torch": torch.__version__,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
        "results": results,
        "expectation": {
            "claim": "sdpa >= 3x faster than math (forward+backward) at N >= 256 on CPU",
            "sdpa_speedups_at_n_ge_256": speedups,
            "met": bool(speedups) and min(speedups) >= 3.0 if dev.type == "cpu" else None,
        },
    }


def format_table(res: dict[str, Any]) -> str:
    lines = [f"attention benchmark: device={res['device']} dtype={res['dtype']} threads={res['threads']} "
             f"batch={res['batch']} reps={res['reps']} torch={res['torch']} "
             f"(load avg {res['machine']['loadavg_1m']})",
             f"{'config':<10} {'shape':<16} {'B':>5} {'N':>4} {'H':>3} {'D':>3}  {'kernel':<9} "
             f"{'fwd+bwd ms':>10} {'x math':>7} {'fwd ms':>9} {'x math':>7} {'peak MB':>8}"]
    for r in res["results"].values():
        for n, k in r["kernels"].items():
            if "fwd_ms" not in k:
                lines.append(f"{r['config']:<10} {r['kind']:<16} {r['batch']:>5} {r['n']:>4} {r['heads']:>3} "
                             f"{r['dim']:>3}  {n:<9} unavailable: {k.get('unavailable', '')}")
                continue
            fb = f"{k['fwd_bwd_ms']:>10.2f} {k['fwd_bwd_ratio_to_math']:>7.3f}" if "fwd_bwd_ms" in k else f"{'-':>10} {'-':>7}"
            pk = k.get("peak_mb")
            lines.append(f"{r['config']:<10} {r['kind']:<16} {r['batch']:>5} {r['n']:>4} {r['heads']:>3} {r['dim']:>3}  "
                         f"{n:<9} {fb} {k['fwd_ms']:>9.2f} {k['fwd_ratio_to_math']:>7.3f} "
                         f"{'-' if pk is None else f'{pk:.1f}':>8}")
    e = res["expectation"]
    lines.append(f"expectation: {e['claim']}: speedups {e['sdpa_speedups_at_n_ge_256']} -> met={e['met']}")
    lines.append("(ratio = kernel time / math time in this run; < 1 is faster)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="batch 1, 3 reps (smoke run)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (stated in the output)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--out", type=Path, default=None, help="write the results JSON here")
    args = p.parse_args(argv)
    res = run(args.quick, args.threads, device=args.device, dtype=args.dtype, reps=args.reps)
    print(format_table(res))
    if args.out is not None:
        write_json(res, args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
