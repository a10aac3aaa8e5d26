"""A ``wan`` training step on precomputed latents against the same step encoding pixels with the VAE on the fly.

Fine-tuning a Wan model reads latents packed once by ``fvdm data pack --autoencoder wan_vae:DIR`` instead
of running the causal VAE's encoder on every batch. This measures what that saves on this CPU, side by
side in one process: a ``WanBackbone`` at size ``small`` (random weights, 4 latent channels) and fvdm's
tiny ``wan_vae`` (random weights, the Wan2.1 VAE's structure at base width 8: 8x spatial, 4x temporal,
causal), one thread. Arm ``on_the_fly``: encode the pixel clip (B, 17, 3, 64, 64) -> (B, 5, 4, 8, 8),
then forward + MSE + backward. Arm ``precomputed``: the same latents given, forward + MSE + backward.
Median CPU seconds per step over interleaved rounds (the first arm alternates). The real Wan2.1 VAE is
about 12x wider than the tiny one (base width 96), so at real sizes the encoder's share is larger; the
ratio here is the CPU figure at these small shapes, not a GPU one.

Bytes per clip in the shards are exact from the shapes: float16 latents against uint8 pixels, at these
shapes and at Wan2.1-1.3B's 81 frames of 480x832 (21 x 16 x 60 x 104 latents).

    python benchmarks/wan_vae_latents.py --out benchmarks/results/wan_vae_latents [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch


def bytes_per_clip(frames: int, height: int, width: int, channels: int = 16, spatial: int = 8) -> dict[str, int]:
    """Shard bytes of one clip: float16 latents (1 + (F-1)/4 frames) and uint8 RGB pixels."""
    lat = (1 + (frames - 1) // 4) * channels * (height // spatial) * (width // spatial) * 2
    return {"latent_float16": lat, "pixels_uint8": frames * 3 * height * width}


def run(batch: int = 2, frames: int = 17, res: int = 64, rounds: int = 9) -> dict[str, Any]:
    from fvdm.core.plugins import load_plugins
    from fvdm.plugins.backbones.wan import WanBackbone

    torch.manual_seed(0)
    vae = load_plugins()["autoencoders"].build({"name": "wan_vae", "variant": "tiny"})
    model = WanBackbone(WanBackbone.Config(size="small", in_channels=vae.latent_channels)).train()
    g = torch.Generator().manual_seed(1)
    pixels = torch.rand(batch, frames, 3, res, res, generator=g) * 2 - 1  # (B, F, 3, H, W)
    latents = vae.encode(pixels)  # (B, f, c, h, w): what the shards hold
    t = torch.rand(batch, latents.shape[1], generator=g) * 1000
    target = torch.randn(latents.shape, generator=g)

    def step(arm: str) -> float:
        model.zero_grad(set_to_none=True)
        c0 = time.process_time()
        x0 = vae.encode(pixels) if arm == "on_the_fly" else latents
        loss = (model(x0, t) - target).square().mean()
        loss.backward()
        return time.process_time() - c0

    arms = ("precomputed", "on_the_fly")
    for arm in arms:  # warm-up
        step(arm)
    times: dict[str, list[float]] = {a: [] for a in arms}
    for r in range(rounds):
        for arm in (arms if r % 2 == 0 else arms[::-1]):
            times[arm].append(step(arm))
    med = {a: statistics.median(v) for a, v in times.items()}
    return {
        "shapes": {"pixels_bfchw": list(pixels.shape), "latents_bfchw": list(latents.shape)},
        "seconds_per_step": med, "rounds": rounds,
        "ratio_precomputed_over_on_the_fly": med["precomputed"] / med["on_the_fly"],
        "bytes_per_clip": {"these_shapes": bytes_per_clip(frames, res, res, channels=vae.latent_channels),
                           "wan2.1_81x480x832": bytes_per_clip(81, 480, 832)},
        "models": {"backbone": "wan small (random)", "vae": "wan_vae tiny (random, base width 8)"},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="3 rounds at 9 frames of 32x32: a smoke run")
    args = ap.parse_args()
    torch.set_num_threads(1)
    result = run(frames=9, res=32, rounds=3) if args.quick else run()
    from fvdm.bench.runner import provenance, write_json

    result.update(quick=args.quick, threads=torch.get_num_threads(), provenance=provenance())
    write_json(result, Path(args.out) / "results.json")
    print(f"precomputed / on the fly: {result['ratio_precomputed_over_on_the_fly']:.3f} "
          f"({result['seconds_per_step']})")


if __name__ == "__main__":
    main()
