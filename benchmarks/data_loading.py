"""Data-loading throughput of every dataset reader vs the demo model's training-step consumption.

Measures clips/s of each loader through a torch DataLoader (batch = the default
training batch) with 0, 1 and 2 workers, on fixtures written to a temporary folder:

  moving_digits          generated on the fly (the demo / test / benchmark default)
  webdataset_npy         `fvdm data make-digits` shards (uint8 .npy, lossless)
  webdataset_mp4         the same clips as .mp4 in shards (PyAV decode)
  video_folder_mp4       one .mp4 file per clip, class subfolders
  video_folder_png       one frame folder of .png per clip

and the clips/s a training step of the default demo experiment consumes
(``ExperimentConfig()`` defaults: latte_tiny, ddpm, ptss, moving_digits 16x1x32x32,
batch 8: forward + loss + backward + AdamW), timed in the same process right before.
``ratio`` = loader clips/s / train clips/s; > 1 means the loader is not the bottleneck.

Throughput is measured after the first batch (worker start-up excluded; reported
separately). The worker processes and the trainer share the same cores in real
runs, and this machine may be shared: compare numbers measured together only.

    python benchmarks/data_loading.py [--quick] [--threads 1] [--out data_loading.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from fvdm.bench.runner import write_json

WORKERS = (0, 1, 2)


def _demo_train_rate(batch: int, steps: int, threads: int) -> dict[str, Any]:
    """Clips/s consumed by a train step of the default demo model (built like the engine builds it)."""
    from fvdm.core.config import ExperimentConfig
    from fvdm.core.plugins import load_plugins

    plugins = load_plugins()
    cfg = ExperimentConfig()
    from fvdm.core.build import build_components

    parts = build_components(cfg, plugins)
    dataset, model, schedule, vtv = parts.dataset, parts.model, parts.schedule, parts.vtv
    data = torch.stack([dataset[i]["video"] for i in range(batch)])  # (B, F, C, H, W)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    model.train()

    def step() -> None:
        b, f = data.shape[:2]
        t = schedule.snap(vtv(b, f, generator=g))  # (B, F)
        noise = torch.randn(data.shape, generator=g)
        xt = schedule.add_noise(data, noise, t)
        out = model(xt, schedule.timestep_input(t))
        loss = schedule.loss(out, data, xt, noise, t).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    med = sorted(times)[len(times) // 2]
    return {"available": True, "model": cfg.backbone.name, "batch": batch,
            "clip_shape": list(data.shape[1:]), "step_s_median": med, "clips_per_s": batch / med,
            "params": sum(p.numel() for p in model.parameters()), "threads": threads}


def _write_fixtures(root: Path, n: int) -> dict[str, dict[str, Any]]:
    """Dataset specs (registry form) over fixtures of ``n`` moving-digits clips (16 x 1 x 32 x 32)."""
    from fvdm.plugins.datasets import video_io as vio
    from fvdm.plugins.datasets.moving_digits import MovingDigits
    from fvdm.plugins.datasets.pack import make_digits

    common = {"num_frames": 16, "resolution": 32, "channels": 1}
    make_digits(root / "npy", num_clips=n, shard_size="1MB", progress=False)
    make_digits(root / "mp4", num_clips=n, shard_size="100k", storage="mp4", progress=False)
    md = MovingDigits(MovingDigits.Config(num_clips=n, class_conditional=True))
    for i in range(n):
        item = md[i]
        frames = vio.to_uint8_frames(item["video"])  # (F, H, W, 1)
        d = root / "folder_mp4" / str(item["label"])
        d.mkdir(parents=True, exist_ok=True)
        vio.encode_video(frames, d / f"clip{i:05d}.mp4")
        fd = root / "folder_png" / str(item["label"]) / f"clip{i:05d}"
        fd.mkdir(parents=True, exist_ok=True)
        for k, f in enumerate(frames):
            (fd / f"{k:04d}.png").write_bytes(vio.encode_image(f))
    return {
        "moving_digits": {"name": "moving_digits", "num_clips": n, **common},
        "webdataset_npy": {"name": "webdataset", "urls": str(root / "npy"), "offset": "start", **common},
        "webdataset_mp4": {"name": "webdataset", "urls": str(root / "mp4"), "offset": "start", **common},
        "video_folder_mp4": {"name": "video_folder", "root": str(root / "folder_mp4"), "offset": "start", **common},
        "video_folder_png": {"name": "video_folder", "root": str(root / "folder_png"), "offset": "start", **common},
    }


def _loader_rate(dataset: Any, batch: int, workers: int) -> dict[str, Any]:
    t_start = time.perf_counter()
    dl = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=workers, drop_last=False)
    it = iter(dl)
    first = next(it)
    t_first = time.perf_counter()
    clips = 0
    for b in it:
        clips += b["video"].shape[0]
    dt = time.perf_counter() - t_first
    return {"clips_per_s": clips / dt if dt > 0 else float("nan"), "clips_timed": clips,
            "first_batch_s": t_first - t_start, "batch_shape": list(first["video"].shape)}


def run(quick: bool = False, threads: int = 1) -> dict[str, Any]:
    """Loader clips/s for 0/1/2 workers and the ratio to the demo train step's consumption (JSON-able)."""
    torch.set_num_threads(threads)
    from fvdm.core.plugins import load_plugins

    n = 96 if quick else 512
    batch = 8
    plugins = load_plugins()
    train = _demo_train_rate(batch, steps=3 if quick else 10, threads=threads)
    results: dict[str, Any] = {
        "benchmark": "data_loading", "quick": quick, "threads": threads, "clips": n, "batch": batch,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__},
        "train_step": train, "loaders": {},
    }
    with tempfile.TemporaryDirectory(prefix="fvdm-bench-data-") as tmp:
        t0 = time.perf_counter()
        specs = _write_fixtures(Path(tmp), n)
        results["fixture_write_s"] = time.perf_counter() - t0
        for name, spec in specs.items():
            ds = plugins["datasets"].build(spec)
            row = {}
            for w in WORKERS:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    r = _loader_rate(ds, batch, w)
                if train.get("available"):
                    r["ratio_to_train"] = r["clips_per_s"] / train["clips_per_s"]
                row[str(w)] = r
            results["loaders"][name] = row
    md0 = results["loaders"]["moving_digits"]["0"]
    results["demo_loader_not_bottleneck"] = (md0.get("ratio_to_train", float("inf")) > 1.0
                                             if train.get("available") else None)
    results["loadavg_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="96 clips, 3 train steps")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the JSON result here")
    args = ap.parse_args(argv)
    res = run(quick=args.quick, threads=args.threads)
    tr = res["train_step"]
    print(f"data loading: {res['clips']} clips of 16x1x32x32, batch {res['batch']}, torch threads={res['threads']}, "
          f"{res['machine']['cpu_count']} CPUs (load avg at end {res['loadavg_at_end']})")
    if tr.get("available"):
        print(f"train step ({tr['model']}, demo defaults): {tr['step_s_median'] * 1e3:.1f} ms/step -> "
              f"consumes {tr['clips_per_s']:.1f} clips/s")
    else:
        print(f"train step: not measured ({tr['reason']})")
    print(f"{'loader':18s} " + " ".join(f"{f'{w} workers':>22s}" for w in WORKERS))
    for name, row in res["loaders"].items():
        cells = []
        for w in WORKERS:
            r = row[str(w)]
            ratio = f" ({r['ratio_to_train']:.0f}x)" if "ratio_to_train" in r else ""
            cells.append(f"{r['clips_per_s']:9.0f} clips/s{ratio:>7s}")
        print(f"{name:18s} " + " ".join(f"{c:>22s}" for c in cells))
    if res["demo_loader_not_bottleneck"] is not None:
        print(f"demo loader (moving_digits, 0 workers) faster than the train step: {res['demo_loader_not_bottleneck']}")
    if args.out:
        write_json(res, args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
