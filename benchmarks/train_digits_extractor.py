"""Train the digits feature extractor (fvdm/plugins/evaluators/digits_net.py) on CPU.

The network learns, from moving_digits train clips, the class of a single moving
digit (10-way, on 1-digit clips), how many digits move (1..3, on 1-3-digit
clips), and two temporal targets so that its features see motion: the clip's kind
(intact / frames shuffled in time / first frame frozen; half the clips stay intact)
and the digits' mean speed (pixels per frame; 0 when frozen, not asked when shuffled).
Content labels hold for every kind: the same digits are in the frames.
Held-out accuracy is measured on the val split, whose digit images are disjoint from
train's. Writes
``weights/digits_extractor.pt`` (float32 state dict), its ``.sha256`` and a ``.json``
with the accuracies and the exact recipe.

    python benchmarks/train_digits_extractor.py --threads 1                  # as shipped (fixed steps)
    python benchmarks/train_digits_extractor.py --out-dir /tmp/w             # exact re-run elsewhere
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

try:  # python -m benchmarks.train_digits_extractor
    from benchmarks.digits_training import parse_recipe, publish, recipe, render_clips
except ModuleNotFoundError:  # python benchmarks/train_digits_extractor.py: this folder is on sys.path
    from digits_training import parse_recipe, publish, recipe, render_clips
from fvdm.plugins.evaluators.digits_net import KINDS, MAX_DIGITS, WEIGHTS_FILE, DigitsNet, to_net_input


def make_split(split: str, n: int, num_frames: int, seed: int, num_digits: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 videos (n, F, 1, 32, 32), first-digit class (n,), digit count - 1 (n,), mean speed px/frame (n,)."""
    _, vids, metas = render_clips(split, n, num_frames, seed, max_digits=MAX_DIGITS, num_digits=num_digits)
    cls = torch.tensor([int(meta["labels"][0]) for meta in metas], dtype=torch.long)
    cnt = torch.tensor([len(meta["labels"]) - 1 for meta in metas], dtype=torch.long)
    # bounces keep speed; float32, as the values were stored one by one before
    speed = torch.tensor([float(np.linalg.norm(meta["velocity"], axis=1).mean()) for meta in metas],
                         dtype=torch.float32)
    return vids, cls, cnt, speed


def temporal_kinds(x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Net input (B, 1, T, H, W) -> (x with each clip intact, shuffled or frozen, kind (B,) index into KINDS).

    Half stay intact, a quarter get a random time permutation, a quarter repeat their first frame.
    """
    b, t = x.shape[0], x.shape[2]
    u = torch.randint(0, 4, (b,), generator=g)
    kind = torch.where(u < 2, 0, u - 1)  # 0, 1 -> intact; 2 -> shuffled; 3 -> frozen
    idx = torch.arange(t).expand(b, t).clone()  # (B, T) source frame of every frame
    perm = torch.argsort(torch.rand(b, t, generator=g), dim=1)
    idx = torch.where((kind == 1)[:, None], perm, idx)
    idx = torch.where((kind == 2)[:, None], torch.zeros_like(idx), idx)
    frames = rearrange(x, "b c t h w -> b t c h w")[torch.arange(b)[:, None], idx]
    return rearrange(frames, "b t c h w -> b c t h w"), kind


@torch.no_grad()
def evaluate(model: DigitsNet, single, multi, bs: int = 256, seed: int = 0) -> dict[str, float]:
    """Class accuracy on 1-digit clips, count accuracy on 1-3-digit clips; kind accuracy and speed
    error (intact clips) on 1-3-digit clips made intact/shuffled/frozen with a fixed generator."""
    model.eval()

    def outputs(vids):
        outs = [model(to_net_input(vids[i:i + bs])) for i in range(0, len(vids), bs)]
        return [torch.cat([o[k] for o in outs]) for k in range(5)]

    single_out, multi_out = outputs(single[0]), outputs(multi[0])
    x, kind = temporal_kinds(to_net_input(multi[0]), torch.Generator().manual_seed(seed))
    outs = [model(x[i:i + bs]) for i in range(0, len(x), bs)]
    kind_logits, speed = torch.cat([o[3] for o in outs]), torch.cat([o[4] for o in outs])
    intact = kind == 0
    return {
        "class_acc_1digit": float((single_out[1].argmax(1) == single[1]).float().mean()),
        "count_acc": float((multi_out[2].argmax(1) == multi[2]).float().mean()),
        "kind_acc": float((kind_logits.argmax(1) == kind).float().mean()),
        "speed_mae_px_per_frame": float((speed[intact] - multi[3][intact]).abs().mean()),
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_recipe(
        argv, __doc__, steps=300, train_clips=6000, val_clips=512, batch_size=64,
        steps_help="train exactly this many steps (reproducible)",
        more=lambda ap: ap.add_argument("--crop", type=int, default=8, help="frames per training clip (random window)"))

    t0 = time.time()
    half = args.train_clips // 2
    train_single = make_split("train", half, args.frames, args.seed, num_digits=1)
    train_multi = make_split("train", half, args.frames, args.seed + 1)
    val_single = make_split("val", args.val_clips, args.frames, args.seed, num_digits=1)
    val_multi = make_split("val", args.val_clips, args.frames, args.seed + 1)
    print(f"rendered {args.train_clips}+{args.val_clips} clips in {time.time() - t0:.1f}s", flush=True)

    model = DigitsNet()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(args.seed)
    step, epoch, t_start = 0, 0, time.time()

    def done() -> bool:
        return step >= args.steps

    while not done():
        model.train()
        perm = torch.randperm(half, generator=g)
        hb = args.batch_size // 2
        for i in range(0, half - hb + 1, hb):
            idx = perm[i:i + hb]
            start = int(torch.randint(0, args.frames - args.crop + 1, (), generator=g))
            window = slice(start, start + args.crop)  # random temporal crop: faster steps
            x = to_net_input(torch.cat([train_single[0][idx, window], train_multi[0][idx, window]]))
            if torch.rand((), generator=g) < 0.5:  # time reversal keeps every label (speed too): cheap augmentation
                x = x.flip(2)
            x, kind = temporal_kinds(x, g)
            speed = torch.cat([train_single[3][idx], train_multi[3][idx]]).masked_fill(kind == 2, 0.0)
            _, logits_cls, logits_cnt, logits_kind, pred_speed = model(x)
            moving = kind != 1  # a shuffled clip has no speed to ask for
            loss = F.cross_entropy(logits_cls[:hb], train_single[1][idx]) + \
                F.cross_entropy(logits_cnt, torch.cat([train_single[2][idx], train_multi[2][idx]])) + \
                F.cross_entropy(logits_kind, kind) + F.mse_loss(pred_speed[moving], speed[moving])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % 50 == 0:
                print(f"epoch {epoch} step {step} loss {loss.item():.4f} ({time.time() - t_start:.0f}s)", flush=True)
            if done():
                break
        epoch += 1
    metrics = evaluate(model, val_single, val_multi)
    train_metrics = evaluate(model, tuple(t[:512] for t in train_single), tuple(t[:512] for t in train_multi))
    print("held-out (val split):", metrics, "train subset:", train_metrics, flush=True)

    info = {
        "heldout_val": metrics, "train_subset": train_metrics,
        "steps": step, "epochs": epoch, "train_seconds": round(time.time() - t_start, 1), "threads": args.threads,
        "recipe": recipe(args), "kinds": list(KINDS),
    }
    return publish(model, args, WEIGHTS_FILE, info)


if __name__ == "__main__":
    main()
