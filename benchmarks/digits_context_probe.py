"""Does a digits model carry its context into new frames? Extension identity and trajectory per checkpoint.

For each checkpoint: extension (first ``--given`` of 8 frames of ``--clips`` test clips given), sampled
natively (`fvdm`) and with the replacement trick, scored on the generated frames with
``digit_identity`` (against the clips' true digits) and ``trajectory_error`` (against their true
positions). Prints one JSON line per (checkpoint, mode).

    python benchmarks/digits_context_probe.py CKPT [CKPT ...] [--clips 32] [--steps 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import json

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--given", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from fvdm.commands.sample import make_context
    from fvdm.core.checkpoint import load_for_sampling
    from fvdm.core.plugins import load_plugins
    from fvdm.plugins.evaluators.digits_truth import digits_truth

    plugins = load_plugins()
    identity = plugins["evaluators"].build({"name": "digit_identity"})
    trajectory = plugins["evaluators"].build({"name": "trajectory_error"})
    for path in args.checkpoints:
        lm = load_for_sampling(path, plugins)
        F = lm.num_frames
        ds = plugins["datasets"].build({"name": "moving_digits", "split": "test", "num_frames": F,
                                        "num_clips": args.clips})
        gt = torch.stack([ds[i]["video"] for i in range(args.clips)])  # (N, F, C, H, W) in [-1, 1]
        truth = digits_truth(ds, range(args.clips))
        given = list(range(args.given))
        gen = torch.zeros(args.clips, F, dtype=torch.bool)
        gen[:, args.given:] = True
        for mode in ("fvdm", "vanilla_replacement"):
            task = plugins["tasks"].build({"name": "extension", "num_frames": F, "mode": mode})
            ctx = make_context(lm, plugins, steps=args.steps, batch_size=args.clips, seed=args.seed)
            with torch.no_grad():
                video = task.run(ctx, {"video": gt[:, :args.given]})
            print(json.dumps({
                "checkpoint": str(path), "mode": mode,
                "identity_f1": round(identity.evaluate(video, gt, truth=truth, context=given)["value"], 4),
                "trajectory_error_px": round(trajectory.evaluate(video, truth, mask=gen)["value"], 3),
                "clips": args.clips, "given": args.given, "steps": args.steps, "seed": args.seed}), flush=True)


if __name__ == "__main__":
    main()
