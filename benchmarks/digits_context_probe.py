"""Does a digits model carry its context into new frames? Extension identity and trajectory per checkpoint.

For each checkpoint: extension (first ``--given`` of 8 frames of ``--clips`` test clips given), sampled
natively (`fvdm`) and with the replacement trick, scored on the generated frames with
``digit_identity`` (against the clips' true digits) and ``trajectory_error`` (against their true
positions). Prints one JSON line per (checkpoint, mode).

A second, sampler-free reading (one line per checkpoint, ``"mode": "denoise"``): the x0 error
of the new frames when they sit at noise level u and the given frames are clean, with the
clip's own given frames (``true``), another clip's (``other``) and none (given frames fully
noised). ``true`` below ``none`` means the model reads its context; how far ``true`` falls
toward 0 (the continuation is determined by the given frames) says how much of it it uses.

    python benchmarks/digits_context_probe.py CKPT [CKPT ...] [--clips 32] [--steps 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import json

import torch

LEVELS = (0.5, 0.7, 0.9)


def denoise_errors(lm, gt: torch.Tensor, given: int, seed: int, levels: tuple[float, ...] = LEVELS) -> dict:
    """x0 MSE of frames given.. at each level in ``levels``, for true / other / no context: {u: {kind: mse}}."""
    S = lm.schedule
    noise = torch.randn(gt.shape, generator=torch.Generator().manual_seed(seed))  # (N, F, C, H, W)
    out = {}
    for u in levels:
        row = {}
        for kind in ("true", "other", "none"):
            t = torch.zeros(gt.shape[:2])  # (N, F): given frames clean
            t[:, given:] = u
            x0 = gt.clone()
            if kind == "other":
                x0[:, :given] = gt.roll(1, 0)[:, :given]  # the next clip's given frames
            if kind == "none":
                t[:, :given] = 1.0
            xt = S.add_noise(x0, noise, t)
            with torch.no_grad():
                x0_hat, _ = S.predict_x0_eps(lm.model(xt, S.timestep_input(t)), xt, t)
            row[kind] = round(((x0_hat[:, given:] - gt[:, given:]) ** 2).mean().item(), 4)
        out[str(u)] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--given", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--levels", type=float, nargs="+", default=list(LEVELS), help="levels of the denoise reading")
    ap.add_argument("--denoise-only", action="store_true", help="skip the sampled extension (seconds, not minutes)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from fvdm.core.sampling_context import make_context
    from fvdm.core.loaded import load_for_sampling
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
        print(json.dumps({"checkpoint": str(path), "step": lm.step, "mode": "denoise", "x0_mse":
                          denoise_errors(lm, gt, args.given, args.seed, tuple(args.levels)), "clips": args.clips,
                          "given": args.given}), flush=True)
        for mode in () if args.denoise_only else ("fvdm", "vanilla_replacement"):
            task = plugins["tasks"].build({"name": "extension", "num_frames": F, "mode": mode})
            ctx = make_context(lm, plugins, steps=args.steps, batch_size=args.clips, seed=args.seed)
            with torch.no_grad():
                video = task.run(ctx, {"video": gt[:, :args.given]})
            print(json.dumps({
                "checkpoint": str(path), "step": lm.step, "mode": mode,
                "identity_f1": round(identity.evaluate(video, gt, truth=truth, context=given)["value"], 4),
                "trajectory_error_px": round(trajectory.evaluate(video, truth, mask=gen)["value"], 3),
                "clips": args.clips, "given": args.given, "steps": args.steps, "seed": args.seed}), flush=True)


if __name__ == "__main__":
    main()
