"""Train the per-frame digit detector (fvdm/plugins/evaluators/digits_frame_net.py) on CPU.

Targets come from the generator's truth: moving_digits knows every digit's label and
top-left position per frame, so a frame's 8x8 class map marks each digit's centre cell
with its class (background elsewhere) and the 3x3 cells around a centre regress its
sub-cell offset. One batch in eight is structure-free frames (Gaussian/uniform noise,
constant grey, all black) labelled all background, so that noise does not read as a
digit. Held-out numbers are measured on the val split, whose digit images are disjoint
from train's. Fixed steps, seeded, one thread: bit-reproducible on the same torch build.
Writes ``weights/digits_frame_net.pt`` (float32 state dict), its ``.sha256`` and a
``.json`` with the held-out numbers and the exact recipe.

    python benchmarks/train_digits_frame_net.py --threads 1          # as shipped
    python benchmarks/train_digits_frame_net.py --out-dir /tmp/w      # re-run elsewhere
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

try:  # python -m benchmarks.train_digits_frame_net
    from benchmarks.digits_training import parse_recipe, publish, recipe, render_clips
except ModuleNotFoundError:  # python benchmarks/train_digits_frame_net.py: this folder is on sys.path
    from digits_training import parse_recipe, publish, recipe, render_clips
from fvdm.plugins.evaluators.digits_frame_net import (
    DIGIT_SIZE, WEIGHTS_FILE, DigitsFrameNet, centre_targets, detect, frames_to_net_input,
)

MAX_DIGITS = 3


def make_frames(split: str, n_clips: int, num_frames: int, seed: int) -> tuple[torch.Tensor, ...]:
    """uint8 frames (n*F, 1, 32, 32), centres (n*F, 3, 2) [y, x] px, labels (n*F, 3) (-1 = no digit)."""
    ds, vids, metas = render_clips(split, n_clips, num_frames, seed, max_digits=MAX_DIGITS)
    if ds.digit_size != DIGIT_SIZE:
        raise ValueError(f"moving_digits digit_size {ds.digit_size} != {DIGIT_SIZE} the net is built for")
    centres = torch.zeros(n_clips, num_frames, MAX_DIGITS, 2)
    labels = torch.full((n_clips, num_frames, MAX_DIGITS), -1, dtype=torch.long)
    for i, meta in enumerate(metas):
        traj = torch.from_numpy(ds._positions(meta).astype(np.float32))  # (D, F, 2) top-left
        d = traj.shape[0]
        centres[i, :, :d] = rearrange(traj, "d f c -> f d c") + DIGIT_SIZE / 2
        labels[i, :, :d] = torch.from_numpy(np.asarray(meta["labels"], dtype=np.int64))
    return (rearrange(vids, "n f c h w -> (n f) c h w"), rearrange(centres, "n f d c -> (n f) d c"),
            rearrange(labels, "n f d -> (n f) d"))


def structureless(n: int, g: torch.Generator) -> torch.Tensor:
    """n frames (n, 1, 32, 32) in [-1, 1] without digits: Gaussian noise, uniform noise, constant grey, black."""
    kind = torch.randint(0, 4, (n, 1, 1, 1), generator=g)
    level = torch.rand(n, 1, 1, 1, generator=g) * 2 - 1
    sigma = torch.rand(n, 1, 1, 1, generator=g)
    gauss = (level + sigma * torch.randn(n, 1, 32, 32, generator=g)).clamp(-1, 1)
    unif = torch.rand(n, 1, 32, 32, generator=g) * 2 - 1
    const = torch.where(kind == 2, level, torch.full_like(level, -1.0)).expand_as(gauss)
    return torch.where(kind == 0, gauss, torch.where(kind == 1, unif, const))


@torch.no_grad()
def evaluate(model: DigitsFrameNet, frames: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor,
             noise: torch.Tensor, bs: int = 1024, radius: float = 3.0) -> dict[str, float]:
    """Held-out detection numbers on frames of 1-3 digits (+ false alarms on structure-free frames)."""
    model.eval()

    def run(x: torch.Tensor):
        outs = [model(x[i:i + bs]) for i in range(0, len(x), bs)]
        return detect(torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs]))

    det = run(frames_to_net_input(rearrange(frames, "n c h w -> n 1 c h w")))
    n = len(frames)
    valid = labels >= 0  # (N, 3)
    lab = labels.clamp(min=0)
    # distance from every gt digit to every kept peak of its class
    pos = det.pos[torch.arange(n)[:, None], lab]  # (N, 3, 8, 8, 2)
    keep = det.keep[torch.arange(n)[:, None], lab]  # (N, 3, 8, 8)
    dist = (pos - centres[:, :, None, None, :]).norm(dim=-1).masked_fill(~keep, float("inf"))
    nearest = dist.flatten(2).amin(dim=2)  # (N, 3)
    hit = valid & (nearest <= radius)
    true_sets = torch.zeros(n, 10, dtype=torch.bool)
    true_sets[torch.arange(n)[:, None].expand_as(lab)[valid], lab[valid]] = True
    nd = run(noise)
    return {
        "digit_recall": float(hit.sum() / valid.sum()),  # gt digit found with its class within `radius` px
        "detections_per_frame": float(det.keep.sum() / n),
        "digits_per_frame": float(valid.sum() / n),
        "set_exact_match": float((det.present == true_sets).all(dim=1).float().mean()),
        "class_precision": float((det.present & true_sets).sum() / det.present.sum().clamp(min=1)),
        "mean_pos_error_px": float(nearest[hit].mean()),
        "recognised_frames": float((det.frame_conf >= 0.5).float().mean()),
        "noise_recognised_frames": float((nd.frame_conf >= 0.5).float().mean()),
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_recipe(argv, __doc__, steps=1500, train_clips=4000, val_clips=256, batch_size=128,
                        batch_help="frames per step")

    t0 = time.time()
    tr_x, tr_c, tr_l = make_frames("train", args.train_clips, args.frames, args.seed)
    va_x, va_c, va_l = make_frames("val", args.val_clips, args.frames, args.seed + 1)
    tr_cls, tr_off, tr_omask = centre_targets(tr_c, tr_l)
    print(f"rendered {len(tr_x)} train + {len(va_x)} val frames in {time.time() - t0:.1f}s", flush=True)

    model = DigitsFrameNet()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    g = torch.Generator().manual_seed(args.seed)
    n_neg = args.batch_size // 8
    t_start = time.time()
    for step in range(1, args.steps + 1):
        model.train()
        idx = torch.randint(0, len(tr_x), (args.batch_size - n_neg,), generator=g)
        x = torch.cat([frames_to_net_input(rearrange(tr_x[idx], "n c h w -> n 1 c h w")), structureless(n_neg, g)])
        cls = torch.cat([tr_cls[idx], torch.zeros(n_neg, 8, 8, dtype=torch.long)])
        off = torch.cat([tr_off[idx], torch.zeros(n_neg, 2, 8, 8)])
        omask = torch.cat([tr_omask[idx], torch.zeros(n_neg, 8, 8, dtype=torch.bool)])
        logits, offsets = model(x)
        ce = F.cross_entropy(logits, cls, reduction="none")  # (N, 8, 8)
        pos = cls > 0
        # centre cells are ~2 of 64: average them apart from the background so they are not drowned out
        loss_cls = ce[pos].mean() + ce[~pos].mean()
        l1 = (offsets - off).abs().sum(dim=1)  # (N, 8, 8)
        loss_off = l1[omask].mean()
        loss = loss_cls + loss_off
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.4f} (cls {loss_cls.item():.3f} off {loss_off.item():.3f}) "
                  f"{time.time() - t_start:.0f}s", flush=True)
    train_seconds = time.time() - t_start
    noise = structureless(2048, torch.Generator().manual_seed(args.seed + 2))
    metrics = evaluate(model, va_x, va_c, va_l, noise)
    sub = torch.randperm(len(tr_x), generator=torch.Generator().manual_seed(args.seed + 3))[:len(va_x)]
    train_metrics = evaluate(model, tr_x[sub], tr_c[sub], tr_l[sub], noise)
    print("held-out (val split):", metrics, "\ntrain subset:", train_metrics, flush=True)

    info = {
        "heldout_val": metrics, "train_subset": train_metrics,
        "steps": args.steps, "train_seconds": round(train_seconds, 1), "threads": args.threads,
        "recipe": recipe(args),
        "notes": "recall/precision at 3 px; threshold 0.5 on the 3x3 class mass; val digits disjoint from train",
    }
    return publish(model, args, WEIGHTS_FILE, info)


if __name__ == "__main__":
    main()
