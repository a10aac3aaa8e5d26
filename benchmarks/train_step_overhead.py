"""Train-step cost of FVDM's vectorized timestep vs the scalar Latte step, and bf16 autocast vs fp32,
measured side by side.

One process, four variants of the SAME backbone (same weights), timed interleaved (rotated order)
over many repetitions, medians reported:

  scalar          t_in (B,)   classic Latte: one embedding per clip, broadcast over frames
  per_frame       t_in (B, F) FVDM, adaLN modulation computed once per frame and broadcast over positions
  per_token       t_in (B, F) FVDM public-code style: temporal adaLN Linear on every (position, frame) row
  per_frame_bf16  per_frame under the engine's ``train.bf16`` path: bf16 autocast for the forward,
                  loss in fp32, the ``attention: auto`` kernel the engine installs for bf16

A train step is forward + MSE + backward + AdamW. FLOPs per step come from
torch.utils.flop_counter.FlopCounterMode; MFU is against a fp32 matmul peak measured here with
the same thread count (and, for bf16, against a bf16 matmul peak). Reference range: per_token is
1.19-1.28x scalar on CPU (Latte-S/2, 16x32x32 latents, batch 2, 1 thread); per_frame must stay
<= 1.03x. Issue 13's throughput target (the bf16 step <= 0.4x the public code's fp32 step) is
measured against the public code itself by ``benchmarks/speed_public_fvdm.py``; the bf16 / per_token
figure here is against fvdm's own imitation of the public modulation layout (our blocks, our
attention kernel), an ablation, not the public code.

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

from fvdm.bench.runner import write_json

VARIANTS = ("scalar", "per_frame", "per_token")  # fp32; ``median_s`` and the overhead ratios
BF16 = "per_frame_bf16"
ALL = (*VARIANTS, BF16)
#: issue 13, part 5: bf16 step <= this fraction of the public code's fp32 LatteVIDEO-S/2 step (the real
#: figure: benchmarks/speed_public_fvdm.py; here only against the per_token imitation)
TARGET_VS_PUBLIC = 0.4

FULL = dict(model="latte_s_2", batch=2, frames=16, channels=4, size=32, reps=7, warmup=1)
QUICK = dict(model="latte_s_2", batch=1, frames=8, channels=4, size=16, reps=9, warmup=2)


def _randomize_zero_init(model: torch.nn.Module, seed: int = 0) -> None:
    """adaLN-Zero starts at zero; give the zero tensors small values so timing sees a trained-like net."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().max() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def cpu_flags() -> dict[str, Any]:
    """The x86 flags that decide whether bf16 matmuls are native (avx512_bf16, AMX) on this CPU."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:  # not Linux: torch's own capability string still says something
        pass
    return {"avx512f": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags,
            "amx_bf16": "amx_bf16" in flags, "amx_tile": "amx_tile" in flags,
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkldnn_bf16_supported": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}


def engine_bf16_kernel() -> Any:
    """The attention kernel the engine installs for ``train.bf16`` (``attention: auto``, bf16)."""
    from fvdm.core.attention import select_attention_kernel
    from fvdm.core.plugins import load_plugins

    return select_attention_kernel(load_plugins(), "auto", device="cpu", dtype=torch.bfloat16)


def build_variants(spec: dict[str, Any], bf16: bool = True) -> dict[str, dict[str, Any]]:
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
    for name in ALL if bf16 else VARIANTS:
        if name == "per_token":
            model = build_latte(spec["model"], temporal_modulation="per_token", **kw)
            model.load_state_dict(base.state_dict())
        else:
            model = copy.deepcopy(base)
        if name == BF16:
            model.set_attention_kernel(engine_bf16_kernel())
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
        t_in = t_frames[:, 0].clone() if name == "scalar" else t_frames
        out[name] = dict(model=model, opt=opt, x=x, t_in=t_in, target=target, bf16=name == BF16)
    return out


def train_step(v: dict[str, Any]) -> None:
    """forward (bf16 autocast for the bf16 variant) + fp32 MSE + backward + AdamW, as the engine does."""
    v["opt"].zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=v.get("bf16", False)):
        out = v["model"](v["x"], v["t_in"])
    loss = F.mse_loss(out.float(), v["target"])  # the engine upcasts the output before the loss
    loss.backward()
    v["opt"].step()


def count_flops(v: dict[str, Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        train_step(v)
    return int(counter.get_total_flops())


def matmul_peak(threads: int, n: int = 1024, reps: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Best matmul FLOP/s at this thread count in ``dtype`` (the MFU denominator)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.process_time()
        a @ b
        best = min(best, time.process_time() - t0)
    return 2 * n**3 / best


def run(quick: bool = False, threads: int = 1, reps: int | None = None, model: str | None = None,
        bf16: bool = True) -> dict[str, Any]:
    """Time the variants interleaved; return ratios, steps/s, FLOPs and MFU (JSON-able)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    spec = dict(QUICK if quick else FULL)
    if reps is not None:
        spec["reps"] = reps
    if model is not None:
        spec["model"] = model
    variants = build_variants(spec, bf16=bf16)
    names = tuple(variants)
    flops = {name: count_flops(v) for name, v in variants.items()}  # also a warm-up step
    for _ in range(spec["warmup"]):
        for v in variants.values():
            train_step(v)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(spec["reps"]):
        k = r % len(names)
        order = names[k:] + names[:k]  # rotate so no variant always runs first
        for name in order:
            c0, t0 = time.process_time(), time.perf_counter()
            train_step(variants[name])
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    # On a shared machine the process's CPU time is the steadier clock (waiting for a core is not
    # counted); with threads=1 it equals wall time on an idle machine. Ratios use CPU time.
    times = cpu
    med_all = {name: statistics.median(ts) for name, ts in times.items()}
    med = {name: med_all[name] for name in VARIANTS}
    med_wall = {name: statistics.median(wall[name]) for name in VARIANTS}
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
    if BF16 in variants:
        result["bf16"] = _bf16_figures(variants, med_all, times, wall, flops, threads, peak)
    return result


def _route(kern: Any, n: int) -> str | None:
    """Which kernel ``kern`` runs for bf16 sequences of ``n`` keys (a tiny probe call)."""
    if not hasattr(kern, "last_used"):
        return getattr(kern, "__name__", None)
    q = torch.zeros(1, n, 1, 8, dtype=torch.bfloat16)
    with torch.no_grad():
        kern(q, q, q)
    return kern.last_used


def _bf16_figures(variants: dict[str, Any], med: dict[str, float], times: dict[str, list[float]],
                  wall: dict[str, list[float]], flops: dict[str, int], threads: int, peak32: float) -> dict[str, Any]:
    """bf16 autocast vs fp32 (per_frame both) and vs the public-code-style fp32 step (per_token)."""
    model = variants[BF16]["model"]
    kern = next((m.kernel for m in model.modules() if hasattr(m, "kernel")), None)
    n_spatial, n_temporal = (model.input_size // model.patch_size) ** 2, variants[BF16]["x"].shape[1]
    peak16 = matmul_peak(threads, dtype=torch.bfloat16)
    vs_fp32 = med[BF16] / med["per_frame"]
    vs_public_style = med[BF16] / med["per_token"]
    return {
        "autocast": "torch.autocast('cpu', bfloat16) forward, MSE on the fp32-upcast output (engine train.bf16)",
        "attention": {"requested": getattr(kern, "requested", None),
                      f"spatial_{n_spatial}_keys": _route(kern, n_spatial),
                      f"temporal_{n_temporal}_keys": _route(kern, n_temporal)},
        "cpu_flags": cpu_flags(),
        "median_s": {"fp32": med["per_frame"], "bf16": med[BF16], "public_style_fp32": med["per_token"]},
        "median_wall_s": {"fp32": statistics.median(wall["per_frame"]), "bf16": statistics.median(wall[BF16])},
        "steps_per_s": {"fp32": 1.0 / med["per_frame"], "bf16": 1.0 / med[BF16]},
        "ratio_bf16_vs_fp32": vs_fp32,
        "paired_ratio_bf16_vs_fp32": statistics.median(a / b for a, b in zip(times[BF16], times["per_frame"])),
        # per_token is the public code's temporal-modulation layout on our blocks and kernels, not the
        # public code (which, for one, runs explicit math attention by default): the target's real
        # denominator is timed by benchmarks/speed_public_fvdm.py. Keys kept for the suite's readers.
        "ratio_bf16_vs_public_style_fp32": vs_public_style,
        "ratio_fp32_vs_public_style_fp32": med["per_frame"] / med["per_token"],
        "target_vs_public": TARGET_VS_PUBLIC,
        f"pass_bf16_le_{TARGET_VS_PUBLIC}_public_style": vs_public_style <= TARGET_VS_PUBLIC,
        "flops_per_step": flops[BF16],
        "bf16_matmul_peak_flops": peak16,
        "bf16_matmul_peak_vs_fp32": peak16 / peak32,
        "mfu_vs_bf16_peak": flops[BF16] / med[BF16] / peak16,
        "mfu_vs_fp32_peak": flops[BF16] / med[BF16] / peak32,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small size (B=1, F=8, 16x16 latents)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--model", default=None, help="backbone name (default latte_s_2)")
    ap.add_argument("--no-bf16", action="store_true", help="skip the bf16 autocast variant")
    ap.add_argument("--out", default=None, help="write the JSON result here")
    args = ap.parse_args(argv)
    res = run(quick=args.quick, threads=args.threads, reps=args.reps, model=args.model, bf16=not args.no_bf16)
    s = res["spec"]
    print(f"{s['model']} B={s['batch']} F={s['frames']} C={s['channels']} {s['size']}x{s['size']}, "
          f"threads={res['threads']}, reps={s['reps']} (interleaved, medians)")
    for k in VARIANTS:
        print(f"  {k:10s} {res['median_s'][k]:8.3f} CPU-s/step  {res['steps_per_s'][k]:7.3f} steps/s  "
              f"{res['flops_per_step'][k] / 1e9:8.1f} GFLOP/step  MFU {100 * res['mfu'][k]:5.1f}%")
    for k, note in (("per_frame", "must be <= 1.03"), ("per_token", "public-code style, reference 1.19-1.28")):
        print(f"  {k} / scalar = {res[f'ratio_{k}_vs_scalar']:.3f} CPU-time "
              f"(paired {res['paired_ratio_median'][k]:.3f}; wall {res[f'ratio_wall_{k}_vs_scalar']:.3f}; "
              f"FLOPs {res['flops_ratio'][k]:.4f}) {note}")
    print(f"  matmul peak {res['matmul_peak_flops'] / 1e9:.1f} GFLOP/s; load avg {res['machine']['loadavg_at_end']}")
    if "bf16" in res:
        b = res["bf16"]
        print(f"  bf16 autocast: {b['median_s']['bf16']:.3f} CPU-s/step; bf16 / fp32 = {b['ratio_bf16_vs_fp32']:.3f} "
              f"(paired {b['paired_ratio_bf16_vs_fp32']:.3f}); bf16 / public-style fp32 = "
              f"{b['ratio_bf16_vs_public_style_fp32']:.3f} (per_token imitation; the <= {b['target_vs_public']} "
              f"target is against the public code: benchmarks/speed_public_fvdm.py); "
              f"bf16 matmul peak {b['bf16_matmul_peak_flops'] / 1e9:.1f} GFLOP/s "
              f"({b['bf16_matmul_peak_vs_fp32']:.2f}x fp32), MFU vs it {100 * b['mfu_vs_bf16_peak']:.1f}%; "
              f"attention {b['attention']}; flags {b['cpu_flags']}")
    if args.out:
        write_json(res, args.out)
        print(f"  wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
