"""Peak memory and CPU time of a ``wan`` training step with activation checkpointing against without it.

Activation checkpointing (``gradient_checkpointing: true``) keeps only each transformer block's input
for backward and recomputes the block there, trading compute for the activations that dominate a
video model's training memory. This measures what the trade is worth for fvdm's ``wan`` backbone:
one ``WanBackbone`` at size ``small`` (D=128, 2 blocks, ffn 256; random weights), built twice from
the same seed (``gradient_checkpointing`` True / False, identical weights), one thread, the same
inputs: x (B, F, 4, H, W) latents, t (B, F) per-frame timesteps uniform in [0, 1000], random text
embeddings (B, L, 64), and an MSE loss to a random target. A step is forward, loss, backward, with
the gradients set to None before it (so both arms allocate them inside the step alike).

Peak memory: the step runs under ``torch.profiler`` with ``profile_memory=True``, which records every
allocation and free of the CPU allocator (intermediates inside kernels included) as signed byte
counts; their running sum in time order is the bytes allocated above what was live before the step
(weights and inputs), and its maximum is the step's peak. Allocation sizes do not depend on timing,
so this is exact and repeatable, unlike process RSS (which the glibc heap does not give back).

Time: median process CPU time per step over interleaved rounds (the arm that runs first alternates),
wall clock beside it, without the profiler. Gradients of both arms are compared before timing.

    python benchmarks/wan_act_checkpoint.py --out benchmarks/results/wan_act_checkpoint
    python benchmarks/wan_act_checkpoint.py --out /tmp/ckpt --quick   # smoke run, seconds
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

#: what the trade must be worth: checkpointing at most 60% of the peak, at most 40% slower
TARGET_PEAK, TARGET_TIME = 0.6, 1.4

ARMS = ("checkpointing", "no_checkpointing")


def peak_bytes(step: Callable[[], None]) -> tuple[int, int]:
    """(peak, net): the maximum and the final running sum of CPU allocator bytes during ``step()``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # "[memory]" events: nbytes > 0 an allocation, < 0 a free; stable sort keeps the recorded order on ties
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak, live


def run(batch: int = 2, frames: int = 8, size_hw: int = 32, text_len: int = 16, rounds: int = 15,
        size: str = "small") -> dict[str, Any]:
    from fvdm.plugins.backbones.wan import WAN_SIZES, WanBackbone, WanConfig

    row = WAN_SIZES[size]
    models = {}
    for arm in ARMS:
        torch.manual_seed(0)  # the same init: identical weights in both arms
        cfg = WanConfig(size=size, in_channels=4, num_frames=frames, input_size=size_hw,
                        gradient_checkpointing=arm == "checkpointing")
        models[arm] = WanBackbone(cfg).train()
    for a, b in zip(models["checkpointing"].state_dict().values(), models["no_checkpointing"].state_dict().values()):
        assert torch.equal(a, b), "the two arms must start from identical weights"
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, frames, 4, size_hw, size_hw, generator=g)  # (B, F, C, H, W)
    t = torch.rand(batch, frames, generator=g) * 1000  # (B, F) per-frame levels
    ctx = torch.randn(batch, text_len, row.text_dim, generator=g)  # (B, L, text_dim)
    target = torch.randn(x.shape, generator=g)

    def step(arm: str) -> Callable[[], None]:
        """Forward, loss, backward; the caller sets the gradients to None first, so the step allocates them."""
        model = models[arm]
        return lambda: torch.nn.functional.mse_loss(model(x, t, encoder_hidden_states=ctx), target).backward()

    # gradients first: checkpointing must change memory and time only
    grads = {}
    for arm in ARMS:
        step(arm)()
        grads[arm] = torch.cat([p.grad.flatten() for p in models[arm].parameters()])
        models[arm].zero_grad(set_to_none=True)
    max_grad_diff = (grads["checkpointing"] - grads["no_checkpointing"]).abs().max().item()
    grads_equal = torch.allclose(grads["checkpointing"], grads["no_checkpointing"], rtol=1e-5, atol=1e-7)
    assert grads_equal, f"checkpointing changed the gradients (max abs difference {max_grad_diff})"

    # memory: two profiled steps per arm after the warm-up above; allocation sizes repeat exactly
    peaks: dict[str, list[int]] = {arm: [] for arm in ARMS}
    nets: dict[str, int] = {}
    for _ in range(2):
        for arm in ARMS:
            # freed outside the profiler: a free of a block allocated in an earlier profiled step is recorded,
            # one allocated before any profiling is not, so inside the step it would shift the baseline
            models[arm].zero_grad(set_to_none=True)
            peak, nets[arm] = peak_bytes(step(arm))
            peaks[arm].append(peak)

    cpu: dict[str, list[float]] = {arm: [] for arm in ARMS}
    wall: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for r in range(rounds):
        for arm in (ARMS if r % 2 == 0 else ARMS[::-1]):  # neither arm always runs first
            models[arm].zero_grad(set_to_none=True)
            c0, w0 = time.process_time(), time.perf_counter()
            step(arm)()
            cpu[arm].append(time.process_time() - c0)
            wall[arm].append(time.perf_counter() - w0)

    mb = 1e6
    peak = {arm: max(v) for arm, v in peaks.items()}
    med = {arm: statistics.median(v) for arm, v in cpu.items()}
    ratio_peak = peak["checkpointing"] / peak["no_checkpointing"]
    ratio_time = med["checkpointing"] / med["no_checkpointing"]
    weights = sum(p.numel() * p.element_size() for p in models["checkpointing"].parameters())
    inputs = sum(a.numel() * a.element_size() for a in (x, t, ctx, target))
    return {
        "config": {"size": size, "dim": row.dim, "layers": row.layers, "heads": row.heads, "ffn_dim": row.ffn_dim,
                   "latents_bfchw": list(x.shape), "tokens_per_clip": frames * (size_hw // 2) ** 2,
                   "text_len": text_len, "rounds": rounds, "dtype": str(x.dtype),
                   "loss": "mse_loss(model(x, t, encoder_hidden_states), random target)"},
        "method": {
            "peak_memory": "torch.profiler(profile_memory=True) records every CPU allocator allocation and free "
                           "during one step (forward, MSE loss, backward); the running sum of their signed sizes "
                           "in time order is the bytes allocated above the baseline (weights and inputs, live "
                           "before the step); its maximum is the peak. Gradients are set to None before the step, "
                           "so both arms allocate them inside it (net_after_step = the gradients). Two profiled "
                           "steps per arm; the larger is reported (they agree).",
            "time": "median process CPU time of a step over interleaved rounds (the first arm alternates), "
                    "without the profiler; wall clock beside it",
            "threads": torch.get_num_threads(),
        },
        "max_abs_grad_diff": max_grad_diff,
        "grads_allclose": grads_equal,
        "baseline_MB": {"weights": round(weights / mb, 3), "inputs_and_target": round(inputs / mb, 3)},
        "peak_above_baseline_MB": {arm: round(v / mb, 3) for arm, v in peak.items()},
        "peak_runs_MB": {arm: [round(b / mb, 3) for b in v] for arm, v in peaks.items()},
        "net_after_step_MB": {arm: round(v / mb, 3) for arm, v in nets.items()},
        "step_ms": {"cpu_median": {arm: round(v * 1e3, 2) for arm, v in med.items()},
                    "wall_median": {arm: round(statistics.median(v) * 1e3, 2) for arm, v in wall.items()}},
        "ratio_peak": {"value": ratio_peak, "target": f"<= {TARGET_PEAK}", "met": ratio_peak <= TARGET_PEAK},
        "ratio_time": {"value": ratio_time, "target": f"<= {TARGET_TIME}", "met": ratio_time <= TARGET_TIME,
                       "paired_median": statistics.median(
                           a / b for a, b in zip(cpu["checkpointing"], cpu["no_checkpointing"])),
                       "wall_clock": statistics.median(wall["checkpointing"]) / statistics.median(
                           wall["no_checkpointing"])},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="directory for results.json")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="smoke run: batch 1, 4 frames of 16x16, 2 rounds")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    result = run(batch=1, frames=4, size_hw=16, rounds=2) if args.quick else run(rounds=args.rounds)
    from fvdm.bench.runner import script_provenance, write_json

    result["quick"] = args.quick
    result["provenance"] = script_provenance(t0)
    write_json(result, Path(args.out) / "results.json")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
