"""`fvdm eval`: FVD / FID / PSNR / SSIM with full provenance, as JSON.

    fvdm eval --real moving_digits --fake samples/ --metric fvd_digits
    fvdm eval --real ucf_stats.npz --fake samples/ --metric fvd2048_16f --weights i3d_torchscript.pt
    fvdm eval --real data/ucf101_frames --fake runs/x/ckpt.pt --metric fvd2048_16f --stats-cache ucf.npz

``--real``: a registered dataset name (built with split=test and clips as long as the
protocol needs), a directory of videos (.mp4/.gif/.npy or frame folders), or an .npz of
statistics (fvdm or pytorch-fid) / features / videos.
``--fake``: a directory of videos, an .npz of features / videos, or a training
checkpoint (samples ``--num-samples`` unconditional videos first).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from fvdm.commands.argtypes import device_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="compute FVD/FID/PSNR/SSIM (JSON with provenance)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real", required=True, help="dataset name | video dir | stats/features/videos .npz")
    p.add_argument("--fake", required=True, help="video dir | features/videos .npz | checkpoint .pt")
    p.add_argument("--metric", action="append", default=None,
                   help="registered evaluator (repeatable; default fvd2048_16f); see `fvdm plugins --kind evaluators`")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="metric config override, e.g. --set num_real=512 (YAML value)")
    p.add_argument("--real-param", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset parameter when --real names a dataset, e.g. --real-param split=val")
    p.add_argument("--weights", help="feature-extractor weights file (else $FVDM_WEIGHTS_DIR)")
    p.add_argument("--seed", type=int, help="protocol seed (clip offsets, random selection)")
    p.add_argument("--num-real", type=int, help="max real videos")
    p.add_argument("--num-fake", type=int, help="fake videos")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--workers", type=int, help="DataLoader workers for decoding")
    p.add_argument("--device", type=device_arg, help="extractor device (cpu, cuda)")
    p.add_argument("--stats-cache", help=".npz cache of the real statistics (reused only if it matches)")
    p.add_argument("--num-samples", type=int, default=64, help="videos to sample when --fake is a checkpoint")
    p.add_argument("--sample-steps", type=int, help="sampler steps when --fake is a checkpoint")
    p.add_argument("--out", help="write the JSON results here")
    p.add_argument("--tensorboard", metavar="LOGDIR", help="also log scalars to TensorBoard")
    p.add_argument("--step", type=int, default=0, help="global step for --tensorboard")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


def _kv(items: list[str], what: str) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"{what} must look like KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


def _check_set_keys(overrides: dict[str, Any], metrics: list[str], plugins: Any) -> None:
    """A --set key that no chosen metric has would be dropped silently: refuse it, with a close match."""
    import difflib

    fields = {"seed", "device"}  # also used to sample from a checkpoint
    for name in metrics:
        entry = plugins["evaluators"].get(name)
        fields |= set(entry.config.model_fields) if entry.config is not None else set()
    for key in overrides:
        if key not in fields:
            close = difflib.get_close_matches(key, sorted(fields), n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"--set {key}: no chosen metric ({', '.join(metrics)}) has this field.{hint} "
                             f"Fields: {', '.join(sorted(fields))}")


def _is_checkpoint(path: Path) -> bool:
    return path.is_file() and path.suffix in (".pt", ".pth", ".ckpt")


def sample_checkpoint(path: str | Path, plugins: Any, *, num_samples: int, batch_size: int = 8,
                      steps: int | None = None, seed: int = 0, device: str = "cpu",
                      progress: bool = True) -> "torch.Tensor":
    """Unconditional samples of a training checkpoint as uint8 videos (N, F, C, H, W)."""
    import torch

    from fvdm.core.loaded import load_for_sampling
    from fvdm.core.sampling_context import make_context, torch_generator

    lm = load_for_sampling(path, plugins, device=device)
    task = plugins["tasks"].build("unconditional")
    gen = torch_generator(seed, device)  # one stream through every chunk
    out = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=num_samples, desc="sampling", unit="video", leave=False)
    done = 0
    while done < num_samples:
        b = min(batch_size, num_samples - done)
        ctx = make_context(lm, plugins, steps=steps, batch_size=b, generator=gen, device=device)
        inputs: dict[str, Any] = {}
        if lm.num_classes > 0:  # class-conditional: cycle through the classes
            inputs["labels"] = torch.arange(done, done + b) % lm.num_classes
        with torch.no_grad():
            z = task.run(ctx, inputs)
            x = lm.autoencoder.decode(z) if lm.autoencoder is not None else z  # (B, F, C, H, W) in [-1, 1]
        out.append(((x.float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
        done += b
        if bar is not None:
            bar.update(b)
    if bar is not None:
        bar.close()
    return torch.cat(out)


def log_to_tensorboard(writer: Any, results: list[dict[str, Any]], step: int, prefix: str = "eval") -> None:
    """Scalars ``eval/<metric>`` for results of :func:`evaluate_many` (used inside training too)."""
    for r in results:
        writer.add_scalar(f"{prefix}/{r['metric']}", float(r["value"]), step)


def evaluate_many(metrics: list[str], real: Any, fake: Any, *, plugins: Any, overrides: dict[str, Any],
                  progress: bool = True) -> list[dict[str, Any]]:
    """Build each metric with the overrides it accepts and evaluate; returns JSON-able dicts."""
    results = []
    for name in metrics:
        entry = plugins["evaluators"].get(name)
        fields = getattr(entry.config, "model_fields", {}) if entry.config is not None else {}
        params = {k: v for k, v in overrides.items() if k in fields}
        if "progress" in fields:
            params.setdefault("progress", progress)
        ev = plugins["evaluators"].build({"name": name, **params}, plugins=plugins)
        res = ev.evaluate(fake, real)
        res.setdefault("metric", name)
        results.append(res)
    return results


def _run(args: argparse.Namespace) -> int:
    from fvdm.core.plugins import load_plugins

    plugins = load_plugins()
    metrics = args.metric or ["fvd2048_16f"]
    overrides = _kv(args.set, "--set")
    _check_set_keys(overrides, metrics, plugins)
    for flag, key in (("weights", "weights"), ("seed", "seed"), ("num_real", "num_real"), ("num_fake", "num_fake"),
                      ("batch_size", "batch_size"), ("workers", "num_workers"), ("device", "device"),
                      ("stats_cache", "stats_cache")):
        val = getattr(args, flag)
        if val is not None:
            overrides[key] = val
    progress = not args.no_progress and sys.stderr.isatty()

    real: Any = args.real
    real_params = _kv(args.real_param, "--real-param")
    if real_params:
        real = {"name": args.real, **real_params}
    fake: Any = args.fake
    fake_path = Path(args.fake)
    sources = {"real": args.real, "fake": args.fake}
    if _is_checkpoint(fake_path):
        sources["fake_sampling"] = {"num_samples": args.num_samples, "sample_steps": args.sample_steps,
                                    "seed": int(overrides.get("seed", 0))}
        fake = sample_checkpoint(fake_path, plugins, num_samples=args.num_samples, steps=args.sample_steps,
                                 seed=int(overrides.get("seed", 0)), device=str(overrides.get("device") or "cpu"),
                                 progress=progress)
    elif not fake_path.exists():
        raise FileNotFoundError(f"--fake {args.fake}: no such directory or file")

    results = evaluate_many(metrics, real, fake, plugins=plugins, overrides=overrides, progress=progress)
    for r in results:
        r["inputs"] = sources
    text = json.dumps(results if len(results) > 1 else results[0], indent=2, default=str)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    if args.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(args.tensorboard) as w:
            log_to_tensorboard(w, results, args.step)
    print(text)
    return 0
