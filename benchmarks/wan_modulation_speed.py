"""CPU time of fvdm's per-frame Wan modulation against diffusers' per-token path (and the scalar-t path).

One ``wan`` backbone (size ``small``: D=128, 2 blocks, ffn 256, freq_dim 256, random weights) and the
diffusers ``WanTransformer3DModel`` it wraps, same weights, one thread, batch 1, 8 latent frames of
4 x 32 x 32 -> 8 x 16 x 16 = 2048 tokens, 16 text tokens. Per repetition, in rotating order:

- ``per_frame`` fvdm's forward with t (B, F): time embedding on B*F rows, modulation broadcast per frame;
- ``per_token`` diffusers' forward with timestep (B, S) expanded from the same t (Wan2.2 TI2V's path);
- ``scalar``    diffusers' forward with timestep (B,) (what a one-level model costs; reference only).

Reported: medians (process CPU time; wall-clock beside it) of inference forwards (no grad) and of
train steps (forward + backward), their ratios (paired per repetition too), and the bytes autograd
saves for backward (distinct storages).
Outputs are checked equal (per_frame vs per_token, 1e-5) before timing.

    python benchmarks/wan_modulation_speed.py --out benchmarks/results/wan_modulation_speed
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
from einops import rearrange, repeat


def saved_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of the distinct storages autograd saves for backward during ``fn()``."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def run(reps: int = 15, frames: int = 8, size_hw: int = 32, text_len: int = 16, size: str = "small") -> dict[str, Any]:
    from fvdm.plugins.backbones.wan import WAN_SIZES, WanBackbone

    row = WAN_SIZES[size]
    torch.manual_seed(0)
    model = WanBackbone(WanBackbone.Config(size=size)).eval()
    dm = model.transformer
    x = torch.randn(1, frames, row.channels, size_hw, size_hw)
    t = torch.rand(1, frames) * 1000
    ctx = torch.randn(1, text_len, row.text_dim)
    n = (size_hw // 2) ** 2
    video = rearrange(x, "b f c h w -> b c f h w")
    t_tok = repeat(t, "b f -> b (f n)", n=n)
    variants: dict[str, Callable[[], torch.Tensor]] = {
        "per_frame": lambda: model(x, t, encoder_hidden_states=ctx),
        "per_token": lambda: dm(video, t_tok, ctx, return_dict=False)[0],
        "scalar": lambda: dm(video, t[:, 0], ctx, return_dict=False)[0],
    }
    with torch.no_grad():
        ours, ref = variants["per_frame"](), rearrange(variants["per_token"](), "b c f h w -> b f c h w")
    max_diff = (ours - ref).abs().max().item()
    assert max_diff < 1e-5, f"per_frame and per_token disagree by {max_diff}"

    def train_step(fn: Callable[[], torch.Tensor]) -> None:
        model.zero_grad(set_to_none=True)
        fn().square().mean().backward()

    names = list(variants)
    # process CPU time (one thread): what this process spent, robust to other users of a shared machine;
    # wall-clock medians are reported next to it
    fwd: dict[str, list[float]] = {k: [] for k in names}
    step: dict[str, list[float]] = {k: [] for k in names}
    fwd_wall: dict[str, list[float]] = {k: [] for k in names}
    step_wall: dict[str, list[float]] = {k: [] for k in names}
    for name in names:  # warm-up
        with torch.no_grad():
            variants[name]()
        train_step(variants[name])
    for r in range(reps):
        order = names[r % 3:] + names[:r % 3]  # rotate: no variant always runs first
        for name in order:
            t0, w0 = time.process_time(), time.perf_counter()
            with torch.no_grad():
                variants[name]()
            fwd[name].append(time.process_time() - t0)
            fwd_wall[name].append(time.perf_counter() - w0)
        for name in order:
            t0, w0 = time.process_time(), time.perf_counter()
            train_step(variants[name])
            step[name].append(time.process_time() - t0)
            step_wall[name].append(time.perf_counter() - w0)

    def summary(times: dict[str, list[float]]) -> dict[str, Any]:
        med = {k: statistics.median(v) for k, v in times.items()}
        paired = statistics.median(a / b for a, b in zip(times["per_frame"], times["per_token"]))
        return {"median_ms": {k: round(v * 1e3, 3) for k, v in med.items()},
                "ratio_per_frame_over_per_token": med["per_frame"] / med["per_token"],
                "paired_ratio_per_frame_over_per_token": paired,
                "ratio_per_frame_over_scalar": med["per_frame"] / med["scalar"]}

    model.train()
    saved = {k: saved_bytes(v) for k, v in variants.items()}
    inference, training = summary(fwd), summary(step)
    inference["wall_clock"], training["wall_clock"] = summary(fwd_wall), summary(step_wall)
    return {
        "config": {"size": size, "dim": row.dim, "layers": row.layers, "ffn_dim": row.ffn_dim,
                   "freq_dim": row.freq_dim, "latents_bfchw": list(x.shape), "tokens": frames * n,
                   "text_len": text_len, "reps": reps},
        "max_abs_diff_per_frame_vs_per_token": max_diff,
        "inference_forward": inference, "train_step": training,
        "saved_for_backward_MiB": {k: round(v / 2**20, 2) for k, v in saved.items()},
        "target": "inference_forward ratio_per_frame_over_per_token <= 0.9",
        "target_met": inference["ratio_per_frame_over_per_token"] <= 0.9,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    result = run(args.reps)
    from fvdm.bench.runner import script_provenance, write_json

    result["provenance"] = script_provenance(t0)
    write_json(result, Path(args.out) / "results.json")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
