"""What the two digits evaluator-net trainers share: their command line, their data and how they publish.

``train_digits_extractor.py`` (clip features) and ``train_digits_frame_net.py`` (per-frame detector) both
train a small net on CPU from rendered ``moving_digits`` clips for a fixed number of seeded steps and ship
its weights with a JSON of held-out numbers and the exact recipe. Only their nets, targets and losses
differ; the recipe flags, the rendering of clips to uint8 and the writing of the weights live here once,
so the two recipes (and the committed weights they made) stay reproducible the same way.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable

import torch

from fvdm.plugins.evaluators.weights import PACKAGE_WEIGHTS_DIR, write_trained_weights


def parse_recipe(argv: list[str] | None, doc: str | None, *, steps: int, train_clips: int, val_clips: int,
                 batch_size: int, steps_help: str | None = None, batch_help: str | None = None,
                 more: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """The recipe flags at this trainer's defaults (``more`` adds its own after --frames), then one seeded
    thread count: the arguments in the order they are recorded as the recipe."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=steps, help=steps_help)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--train-clips", type=int, default=train_clips)
    ap.add_argument("--val-clips", type=int, default=val_clips)
    ap.add_argument("--frames", type=int, default=16)
    if more is not None:
        more(ap)
    ap.add_argument("--batch-size", type=int, default=batch_size, help=batch_help)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", default=str(PACKAGE_WEIGHTS_DIR))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    return args


def render_clips(split: str, n: int, num_frames: int, seed: int, *, max_digits: int,
                 num_digits: int | None = None) -> tuple[Any, torch.Tensor, list[dict[str, Any]]]:
    """(the moving_digits dataset, its first ``n`` clips as uint8 (n, F, 1, 32, 32), each clip's metadata).

    The metadata holds the generator's truth (labels, velocities, trajectories) the targets come from."""
    from fvdm.plugins.datasets.moving_digits import MovingDigits

    ds = MovingDigits(MovingDigits.Config(split=split, num_clips=n, num_frames=num_frames, resolution=32,
                                          max_digits=max_digits, num_digits=num_digits, seed=seed))
    vids = torch.empty(n, num_frames, 1, 32, 32, dtype=torch.uint8)
    metas = []
    for i in range(n):
        meta = ds.metadata(i)
        vids[i] = ((ds.ground_truth(i, meta) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        metas.append(meta)
    return ds, vids, metas


def recipe(args: argparse.Namespace) -> dict[str, Any]:
    """The flags that reproduce the weights (where they were written is not part of it)."""
    return {k: v for k, v in vars(args).items() if k != "out_dir"}


def publish(model: torch.nn.Module, args: argparse.Namespace, filename: str, info: dict[str, Any]) -> dict[str, Any]:
    """Write the weights, their sha256 and the provenance JSON to ``--out-dir``; print and return the JSON."""
    info = write_trained_weights(model, args.out_dir, filename, info)
    print(json.dumps(info, indent=2))
    return info

