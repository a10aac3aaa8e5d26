"""Train and export the committed synchronized digits base that fine-tuning into FVDM starts from.

The base is the conventional video diffusion model: every frame of a clip at one shared level
(``vtv: synchronized``), ``unet_video`` on 8-frame 32x32 moving digits, DDPM v-prediction
(``configs/digits_sync_base.yaml``). The ``finetune_forgetting`` suite and the demo start from it, so
nobody retrains it. This script trains it (or takes a finished run), exports its EMA weights as an
fvdm backbone directory (``config.json`` naming the backbone and its spec, ``model.safetensors``:
what ``backbone.pretrained: DIR`` or ``train.init_from: DIR`` reads), scores it (digit
recognisability of 64 unconditional samples next to 64 held-out real clips, the bundled per-frame
detector), draws a grid of 8 samples, and writes ``provenance.json`` (config, steps, seconds,
threads, torch, git, the weights' sha256, the scores).

    OMP_NUM_THREADS=1 python benchmarks/train_digits_base.py --out fvdm/bench/weights/digits_sync_base
    python benchmarks/train_digits_base.py --run-dir /work/base_run/run --out ...   # export a finished run

Reproducibility: the training is seeded (data order, timesteps, noise, init) and bit-identical across
runs on one machine and thread count; bf16 autocast on another CPU can round differently.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "digits_sync_base.yaml"


def export(ckpt_path: Path, out: Path, plugins) -> dict:
    """The checkpoint's EMA weights as an fvdm backbone directory; returns the weights' sha256 and spec."""
    from safetensors.torch import save_file

    from fvdm.core.hashing import sha256_file

    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    out.mkdir(parents=True, exist_ok=True)
    spec = dict(ckpt["model_info"])
    (out / "config.json").write_text(json.dumps({"backbone": spec["name"], "spec": spec}, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in ckpt["ema"].items()}, str(out / "model.safetensors"))
    sha = sha256_file(out / "model.safetensors")
    return {"sha256": sha, "spec": spec, "step": int(ckpt["step"]), "config": json.loads(ckpt["config"])}


def score(ckpt_path: Path, out: Path, plugins, n: int = 64) -> dict:
    from fvdm.core.loaded import load_for_sampling
    from fvdm.core.media import write_png_grid
    from fvdm.core.sampling_context import sample_unconditional

    loaded = load_for_sampling(ckpt_path, plugins)
    fake = sample_unconditional(loaded, plugins, n, steps=25, seed=1000, chunk=16).clamp(-1, 1)
    val = plugins["datasets"].build({**loaded.config.data.spec(), "split": "val", "num_clips": n})
    real = torch.stack([val[i]["video"] for i in range(n)])
    ev = plugins["evaluators"].build({"name": "digit_recognisability"})
    gen, ref = ev.evaluate(fake), ev.evaluate(real)
    write_png_grid(fake[:8], out / "samples.png", scale=3)
    return {"clips": n, "sample_steps": 25, "generated": round(float(gen["value"]), 4),
            "real": round(float(ref["value"]), 4), "detector_sha256": gen["weights_sha256"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="directory for config.json, model.safetensors, provenance.json")
    ap.add_argument("--run-dir", help="a finished run of configs/digits_sync_base.yaml to export (else train one)")
    ap.add_argument("--steps", type=int, help="override train.steps (the committed base: the config's)")
    ap.add_argument("--max-minutes", type=float, default=None, metavar="M",
                    help="train for at most M minutes (a checkpoint at the stop); the same command continues")
    args = ap.parse_args()
    from fvdm.bench.runner import provenance
    from fvdm.core.config import load_config
    from fvdm.core.engine import train
    from fvdm.core.plugins import load_plugins

    plugins = load_plugins()
    t0 = time.time()
    if args.run_dir is None:
        cfg = load_config(CONFIG, plugins)
        if args.steps:
            cfg.train.steps = args.steps
        run_dir = Path(args.out).parent / "run"
        ckpt = run_dir / "checkpoints" / "last.pt"
        res = train(cfg, plugins, run_dir=run_dir, progress=False, resume=ckpt.is_file(), max_minutes=args.max_minutes)
        seconds = round(time.time() - t0, 1)
        if res["stopped_early"]:
            print(f"stopped at step {res['step']} of {cfg.train.steps} after --max-minutes {args.max_minutes:g}; "
                  "run the same command again to continue (nothing exported yet)")
            return
        ckpt = Path(res["checkpoint"])
    else:
        ckpt, seconds = Path(args.run_dir) / "checkpoints" / "last.pt", None
    out = Path(args.out)
    weights = export(ckpt, out, plugins)
    scores = score(ckpt, out, plugins)
    record = {"config_file": str(CONFIG.relative_to(REPO)), "train_seconds": seconds,
              "threads": torch.get_num_threads(), **weights, "recognisability": scores, "provenance": provenance()}
    (out / "provenance.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"base step {weights['step']}: sha256 {weights['sha256'][:12]}, recognisability {scores['generated']} "
          f"(real {scores['real']})")


if __name__ == "__main__":
    main()
