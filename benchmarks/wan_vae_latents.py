"""A ``wan`` training step on precomputed Wan-VAE latents against the same step encoding pixels on the fly.

Why: fine-tuning a Wan model can read latents packed once into the shards (float16) or read pixels
(uint8) and run the causal VAE's encoder on every batch. This measures both arms side by side in one
process, one thread, random weights:

  precomputed  float16 latents (B, 5, 4, 8, 8) from the shard -> float32 -> step
  on_the_fly   uint8 pixels (B, 17, 3, 64, 64) from the shard -> [-1, 1] -> ``wan_vae`` tiny encode -> step

step = ``WanBackbone`` size ``small`` (in_channels 4 = the VAE's z_dim) forward with per-frame
t (B, F) ~ U[0, 1000] and no text (``missing_text: zeros``), MSE to a random target, backward. The
arms alternate order each round; medians of wall and CPU seconds per step are reported.

The tiny VAE (Wan2.1's structure at base width 8 and 4 latent channels, against 96 and 16) and the
small backbone are far from the real pair's cost balance, so the result also holds ``flops``:
FlopCounterMode counts of one step of each arm at these shapes and, on the meta device (no weights),
of Wan2.1-1.3B's training step against the Wan2.1 VAE's encode at 81 frames of 480x832 (latents
21 x 16 x 60 x 104, 512 text tokens). Their precomputed / on_the_fly ratio is what the measured one
stands for at full scale. Bytes per clip stored in the shards are exact from the shapes, here and at
Wan2.1's 16 channels.

    python benchmarks/wan_vae_latents.py            # writes benchmarks/results/wan_vae_latents/results.json
    python benchmarks/wan_vae_latents.py --quick    # smoke run (9 frames of 32x32, 3 rounds); writes only with --out
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from fvdm.core.temporal import latent_frame_count

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "wan_vae_latents"


def shard_bytes(frames: int, res: tuple[int, int], channels: int, spatial: int, latent_frames: int) -> dict[str, Any]:
    """Bytes of one clip in a shard: float16 latents against uint8 RGB pixels (F * 3 * H * W)."""
    latent = latent_frames * channels * (res[0] // spatial) * (res[1] // spatial) * 2
    pixels = frames * 3 * res[0] * res[1]
    return {"latents_float16": latent, "pixels_uint8": pixels, "pixels_over_latents": pixels / latent}


def count_flops(fn: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def full_scale_flops() -> dict[str, Any]:
    """Wan2.1-1.3B training step vs Wan2.1 VAE encode at 81 x 480 x 832, counted on the meta device."""
    from diffusers import AutoencoderKLWan

    from fvdm.plugins.backbones.wan import WanBackbone

    with torch.device("meta"):
        vae = AutoencoderKLWan().eval()  # the default config is Wan2.1's VAE
        model = WanBackbone(WanBackbone.Config(size="wan2.1-t2v-1.3b")).train()
        video = torch.empty(1, 3, 81, 480, 832)  # (B, C, F, H, W): diffusers' layout
        z = torch.empty(1, 21, 16, 60, 104)  # (B, f, c, h, w)
        t = torch.empty(1, 21)
        text = torch.empty(1, 512, 4096)

    def step() -> None:
        model(z, t, encoder_hidden_states=text).float().square().mean().backward()

    with torch.no_grad():
        encode = count_flops(lambda: vae.encode(video).latent_dist.mode())
    train = count_flops(step)
    return {"shapes": {"pixels_bfchw": [1, 81, 3, 480, 832], "latents_bfchw": [1, 21, 16, 60, 104], "text_len": 512},
            "vae_encode": encode, "train_step": train,
            "ratio_precomputed_over_on_the_fly": train / (train + encode)}


def run(*, batch: int = 2, frames: int = 17, res: int = 64, rounds: int = 21, steps: int = 3) -> dict[str, Any]:
    from fvdm.core.plugins import load_plugins
    from fvdm.plugins.backbones.wan import WanBackbone

    vae = load_plugins(entry_points=False)["autoencoders"].build({"name": "wan_vae", "variant": "tiny"})
    channels, size = vae.latent_shape(3, res)
    latent_frames = latent_frame_count(vae, frames)
    torch.manual_seed(0)
    model = WanBackbone(WanBackbone.Config(size="small", in_channels=channels, num_frames=latent_frames,
                                           input_size=size)).train()
    g = torch.Generator().manual_seed(1)
    # the two shard contents: uint8 pixels (B, F, 3, H, W) and the float16 latents the VAE makes of them
    pixels = torch.randint(0, 256, (batch, frames, 3, res, res), generator=g, dtype=torch.uint8)
    latents = vae.encode(pixels.float() / 127.5 - 1).half()  # (B, f, c, h, w)
    t = torch.rand(batch, latent_frames, generator=g) * 1000  # (B, f) Wan timesteps
    target = torch.randn(latents.shape, generator=g)

    def x0(arm: str) -> torch.Tensor:
        return vae.encode(pixels.float() / 127.5 - 1) if arm == "on_the_fly" else latents.float()

    def step(arm: str) -> None:
        model.zero_grad(set_to_none=True)
        F.mse_loss(model(x0(arm), t), target).backward()

    arms = ("precomputed", "on_the_fly")
    wall: dict[str, list[float]] = {a: [] for a in arms}
    cpu: dict[str, list[float]] = {a: [] for a in arms}
    for arm in arms:  # warm-up: first-call allocations and kernel selection
        step(arm)
    for r in range(rounds):
        for arm in arms if r % 2 == 0 else arms[::-1]:
            for _ in range(steps):
                w0, c0 = time.perf_counter(), time.process_time()
                step(arm)
                wall[arm].append(time.perf_counter() - w0)
                cpu[arm].append(time.process_time() - c0)
    med_wall = {a: statistics.median(v) for a, v in wall.items()}
    med_cpu = {a: statistics.median(v) for a, v in cpu.items()}
    encode_flops = count_flops(lambda: x0("on_the_fly"))
    step_flops = count_flops(lambda: step("precomputed"))
    vae_params = sum(p.numel() for p in vae.parameters())
    return {
        "shapes": {"pixels_bfchw": list(pixels.shape), "latents_bfchw": list(latents.shape)},
        "models": {"backbone": f"wan small, random, in_channels {channels}, {model.num_params()} params",
                   "vae": f"wan_vae tiny, random, base width 8, z_dim {channels}, {vae_params} params"},
        "rounds": rounds, "steps_per_round_per_arm": steps,
        "seconds_per_step": med_wall, "cpu_seconds_per_step": med_cpu,
        "ratio_precomputed_over_on_the_fly": med_wall["precomputed"] / med_wall["on_the_fly"],
        "ratio_precomputed_over_on_the_fly_cpu": med_cpu["precomputed"] / med_cpu["on_the_fly"],
        "samples": {"wall": wall, "cpu": cpu},
        "bytes_per_clip": {
            "these_shapes": shard_bytes(frames, (res, res), channels, vae.downsample, latent_frames),
            "wan2.1_81x480x832": shard_bytes(81, (480, 832), 16, 8, 21),
        },
        "flops": {
            "these_shapes": {"vae_encode": encode_flops, "train_step": step_flops,
                             "ratio_precomputed_over_on_the_fly": step_flops / (step_flops + encode_flops)},
            "wan2.1_1.3b_81x480x832": full_scale_flops(),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 9 frames of 32x32, 3 rounds")
    ap.add_argument("--out", default=None, help=f"results folder (default {DEFAULT_OUT}; --quick writes only here)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    result = run(frames=9, res=32, rounds=3, steps=1) if args.quick else run()
    out = Path(args.out) if args.out else (None if args.quick else DEFAULT_OUT)
    import diffusers

    from fvdm.bench.runner import provenance, write_json

    result.update(quick=args.quick, threads=torch.get_num_threads(),
                  provenance={**provenance(), "diffusers": diffusers.__version__,
                              "seconds": round(time.perf_counter() - t0, 1)})
    if out is not None:
        write_json(result, out / "results.json")
    summary = {k: result[k] for k in ("seconds_per_step", "ratio_precomputed_over_on_the_fly", "bytes_per_clip")}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
