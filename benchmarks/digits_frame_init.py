"""Frame-init probe: do a digits model's context tasks keep the given digits if the generated frames start
from the nearest given frame instead of pure noise?

For each start level s: the generated frames start as the nearest given frame (``copy_nearest``) noised to
level s (SDEdit's start, the low-frequency frame init of image-to-video work), and the sampling matrix is
cut to its rows at or below s; the given frames stay clean (native sampling). Scored on ``--clips``
held-out val clips: identity F1 with the given frames and trajectory error of the generated frames
(``digit_identity``, ``trajectory_error``). s = 1 is ordinary sampling. Prints one JSON line per level.

A high identity with a trajectory error above the copy's (4.4 px on extension) means the start kept the
copied digits but the model did not move them where they go: no better than copying.

    OMP_NUM_THREADS=1 python -m benchmarks.digits_frame_init CKPT --levels 1,0.7,0.5,0.4,0.3 --clips 32
"""

from __future__ import annotations

import argparse
import json

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--levels", default="1,0.7,0.5,0.4,0.3", help="start levels, comma-separated, each in (0, 1]")
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    levels = [float(v) for v in args.levels.split(",")]
    if not all(0 < s <= 1 for s in levels):
        raise SystemExit(f"--levels {args.levels}: every start level must be in (0, 1]")
    torch.set_num_threads(1)
    from fvdm.bench.context_identity import GIVEN, copy_nearest
    from fvdm.core.loaded import load_for_sampling
    from fvdm.core.plugins import load_plugins
    from fvdm.core.sampling import sample_loop
    from fvdm.core.sampling_context import make_context
    from fvdm.plugins.evaluators.digits_truth import digits_truth
    from fvdm.tasks.base import context_model_fn, place

    plugins = load_plugins()
    lm = load_for_sampling(args.checkpoint, plugins)
    n = args.clips
    val = plugins["datasets"].build({**lm.config.data.spec(), "split": "val", "num_clips": n})
    gt = torch.stack([val[i]["video"] for i in range(n)])  # (N, F, C, H, W) in [-1, 1]
    truth = digits_truth(val, range(n))
    ident = plugins["evaluators"].build({"name": "digit_identity"})
    traj = plugins["evaluators"].build({"name": "trajectory_error"})
    F = gt.shape[1]
    for s in levels:
        row = {"checkpoint": args.checkpoint, "start_level": s, "clips": n, "steps": args.steps, "seed": args.seed}
        for name in ("image_to_video", "extension", "interpolation"):
            given = GIVEN[name](F)
            ctx_x0, ctx = place(gt[:, given], given, F)  # (N, F, C, H, W) given values, (F,) mask
            sc = make_context(lm, plugins, steps=args.steps, batch_size=n, seed=args.seed)
            S = sc.matrix(sc.steps, F, context=ctx, num_timesteps=getattr(sc.schedule, "num_timesteps", None))
            S = S[int((S[:, ~ctx].amax(dim=1) > s + 1e-6).sum()):]  # (rows, F): the rows at or below s
            noise = torch.randn(gt.shape, generator=torch.Generator().manual_seed(args.seed))
            start = lm.schedule.add_noise(copy_nearest(gt, given), noise, S[0].expand(n, F))
            x = noise if s >= 1 else torch.where(ctx[None, :, None, None, None], noise, start)
            with torch.no_grad():
                out = sample_loop(context_model_fn(sc, sc.model, None), x, S, sampler=sc.sampler,
                                  schedule=sc.schedule, ctx=ctx, ctx_x0=ctx_x0).clamp(-1, 1)
            gen = (~ctx).expand(n, F)
            row[name] = {"identity_f1": round(float(ident.evaluate(out, gt, context=given)["value"]), 4),
                         "trajectory_error_px": round(float(traj.evaluate(out, truth, mask=gen)["value"]), 3),
                         "rows": int(S.shape[0])}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
