"""The real data every arm is scored against, and what no learning at all scores (trivial baselines).

Conditioning clips and their ground truth come from the test split with ``conditioning_seed``;
the FVD reference statistics from ``num_reference`` clips of the same split drawn with
``reference_seed`` (checked disjoint by hash). Baselines per conditional task: the ground truth
(the ceiling), all black, the reference set's mean frame, a copy of the nearest given frame and
ground truth + N(0, sigma^2); for unconditional FVD the real clips with and without noise.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from typing import Any

import torch
from einops import repeat

from fvdm.bench.suites.digits_zero_shot.design import COND_TASKS, Budget, Config, data_spec, given, refuse
from fvdm.bench.suites.digits_zero_shot.scoring import fvd, score, windows


def log(msg: str) -> None:
    print(f"[digits_zero_shot {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def digest(clip: torch.Tensor) -> str:
    return hashlib.sha1(clip.contiguous().numpy().tobytes()).hexdigest()


def clips(plugins: Any, spec: dict[str, Any], n: int) -> tuple[torch.Tensor, Any]:
    """The first ``n`` clips of dataset ``spec`` -> ((N, F, C, H, W) in [-1, 1], the dataset)."""
    ds = plugins["datasets"].build(spec)
    return torch.stack([ds[i]["video"] for i in range(min(n, len(ds)))]), ds


def real_sets(cfg: Config, plugins: Any, fvd_m: Any, budget: Budget) -> dict[str, Any]:
    """Conditioning clips + their ground truth (seed c) and the disjoint FVD reference (seed r)."""
    from fvdm.core.media import to_uint8

    F, cseed, rseed = cfg.num_frames, cfg.conditioning_seed, cfg.reference_seed
    n_cond = max(budget.num_task, budget.num_uncond)  # the unconditional real + noise baseline uses these too
    cond, ds = clips(plugins, data_spec(cfg, "test", F, n_cond, cseed), n_cond)
    ref, _ = clips(plugins, data_spec(cfg, "test", F, budget.num_reference, rseed), budget.num_reference)
    if ref.shape[0] < cfg.min_reference:
        raise refuse(f"the reference split gave {ref.shape[0]} clips, fewer than min_reference="
                     f"{cfg.min_reference}; raise the dataset's num_clips")
    shared = {digest(c) for c in cond} & {digest(c) for c in ref}
    if shared:  # by construction impossible unless the dataset ignores its seed
        raise refuse(f"{len(shared)} conditioning clip(s) also appear in the reference set: dataset "
                     f"{cfg.dataset.get('name')!r} ignores its seed; use a different split for the reference")
    n_win = cfg.long_frames // F
    n_long_ref = math.ceil(budget.num_reference / n_win)
    long_ref, _ = clips(plugins, data_spec(cfg, "test", cfg.long_frames, n_long_ref, rseed), n_long_ref)
    traj = truth = None
    if callable(getattr(ds, "trajectories", None)):
        traj = [torch.as_tensor(ds.trajectories(i)) for i in range(budget.num_task)]
        try:  # the digit metrics' ground-truth bundle (labels, trajectories, digit size), when available
            from fvdm.plugins.evaluators.digits_truth import digits_truth

            truth = digits_truth(ds, range(budget.num_task))
        except Exception:  # noqa: BLE001 - optional: only the time-aware digit metrics use it
            truth = None
    log(f"real sets: conditioning {tuple(cond.shape)} (seed {cseed}), reference {tuple(ref.shape)} "
        f"(seed {rseed}), long reference {tuple(long_ref.shape)}")
    return {"clips": cond, "trajectories": traj, "truth": truth,
            "ref_mean_frame": ref.mean(dim=(0, 1)),  # (C, H, W)
            "stats": fvd_m.real_stats(to_uint8(ref)), "long_stats": fvd_m.real_stats(to_uint8(windows(long_ref, F)))}


def trivial_baselines(cfg: Config, plugins: Any, fvd_m: Any, real: dict[str, Any], budget: Budget,
                      evaluators: dict[str, Any] | None = None) -> dict[str, Any]:
    """task -> baseline -> metric -> value: what no learning at all scores (one value, no seed)."""
    gt = real["clips"][:budget.num_task]  # (N, F, C, H, W)
    g = torch.Generator().manual_seed(12345)
    noisy = lambda x: (x + cfg.noise_sigma * torch.randn(x.shape, generator=g)).clamp(-1, 1)  # noqa: E731
    out: dict[str, Any] = {}
    if "unconditional" in cfg.tasks:
        uncond = real["clips"][:budget.num_uncond]
        out["unconditional"] = {"real": {"fvd": fvd(fvd_m, real["stats"], uncond)},
                                f"real + noise {cfg.noise_sigma:g}": {"fvd": fvd(fvd_m, real["stats"], noisy(uncond))}}
    for task in (t for t in COND_TASKS if t in cfg.tasks):
        pos = given(cfg, task)
        F = gt.shape[1]
        nearest = [min(pos, key=lambda p: (abs(p - j), p)) for j in range(F)]
        fakes = {"ground truth": gt.clone(),  # the ceiling: what a perfect generator scores here
                 "all black": torch.full_like(gt, -1.0),
                 "mean frame": repeat(real["ref_mean_frame"], "c h w -> n f c h w", n=gt.shape[0], f=F).clone(),
                 "copy nearest given frame": gt[:, nearest].clone(),
                 f"real + noise {cfg.noise_sigma:g}": noisy(gt)}
        out[task] = {}
        for name, fake in fakes.items():
            fake[:, pos] = gt[:, pos]  # every baseline keeps the given frames, like the models
            out[task][name] = score(cfg, plugins, fvd_m, real, task, fake, gt, evaluators)
    return out
