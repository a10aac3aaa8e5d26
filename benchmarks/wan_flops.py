"""FLOPs of one Wan forward: scalar t, fvdm's per-frame t, diffusers' per-token t, counted on the meta device.

The model is built on the meta device (no weights, no memory; shapes only) at Wan2.1-T2V-1.3B's
sampling shapes: 81 frames at 480x832 -> Wan VAE latents 21 x 16 x 60 x 104, patch 1x2x2 ->
21 x 30 x 52 = 32760 tokens, 512 umT5 text tokens, batch 1. ``torch.utils.flop_counter.FlopCounterMode``
counts matmuls, convolutions and attention (elementwise ops are not FLOPs to it). Three forwards:

- ``scalar``    diffusers' ``WanTransformer3DModel`` with timestep (B,): one embedding per clip;
- ``per_frame`` fvdm's ``wan`` backbone with t (B, F): one embedding per (clip, frame), broadcast;
- ``per_token`` diffusers' module with timestep (B, S) expanded from the same (B, F) (Wan2.2's path).

    python benchmarks/wan_flops.py --out benchmarks/results/wan_flops
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from einops import rearrange, repeat


def count(fn) -> tuple[int, dict[str, int]]:
    """Total FLOPs of ``fn()`` and the FLOPs of the time embedding alone (condition_embedder's time layers)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    by_module = {name: sum(ops.values()) for name, ops in fc.get_flop_counts().items()}
    time_part = {k: v for k, v in by_module.items()
                 if k.split(".")[-1] in ("time_embedder", "time_proj") and "condition_embedder" in k}
    return fc.get_total_flops(), time_part


def run(size: str = "wan2.1-t2v-1.3b", frames: int = 21, height: int = 60, width: int = 104,
        text_len: int = 512, batch: int = 1) -> dict[str, Any]:
    from fvdm.plugins.backbones.wan import WAN_SIZES, WanBackbone

    row = WAN_SIZES[size]
    with torch.device("meta"):
        model = WanBackbone(WanBackbone.Config(size=size)).eval()
        x = torch.randn(batch, frames, row.channels, height, width)
        t = torch.rand(batch, frames) * 1000
        ctx = torch.randn(batch, text_len, row.text_dim)
    n = (height // row.patch[1]) * (width // row.patch[2])
    video = rearrange(x, "b f c h w -> b c f h w")
    dm = model.transformer
    runs = {
        "scalar": lambda: dm(video, t[:, 0], ctx, return_dict=False),
        "per_frame": lambda: model(x, t, encoder_hidden_states=ctx),
        "per_token": lambda: dm(video, repeat(t, "b f -> b (f n)", n=n), ctx, return_dict=False),
    }
    flops, time_flops = {}, {}
    with torch.no_grad():
        for name, fn in runs.items():
            flops[name], time_flops[name] = count(fn)
    return {
        "size": size, "latents_bfchw": [batch, frames, row.channels, height, width], "tokens": frames * n,
        "text_len": text_len, "params": model.num_params(trainable_only=False),
        "flops": flops, "time_embedding_flops": {k: sum(v.values()) for k, v in time_flops.items()},
        "ratio_per_frame_over_scalar": flops["per_frame"] / flops["scalar"],
        "ratio_per_token_over_scalar": flops["per_token"] / flops["scalar"],
        "ratio_per_frame_over_per_token": flops["per_frame"] / flops["per_token"],
        "target": "per_frame / scalar <= 1.001",
        "target_met": flops["per_frame"] / flops["scalar"] <= 1.001,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", default="wan2.1-t2v-1.3b")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    result = run(args.size)
    import diffusers
    from fvdm.bench.runner import provenance, write_json

    # the project's provenance (versions, threads, CPU, git revision and dirtiness) plus what only this
    # benchmark knows
    result["provenance"] = {**provenance(), "diffusers": diffusers.__version__,
                            "device": "meta (FlopCounterMode; no weights)",
                            "seconds": round(time.perf_counter() - t0, 1)}
    write_json(result, Path(args.out) / "results.json")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
