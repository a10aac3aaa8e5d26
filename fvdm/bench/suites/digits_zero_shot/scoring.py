"""How completed clips are scored: FVD against fixed real statistics and every configured evaluator.

Pixels arrive in [-1, 1]; evaluators get [0, 1] clips (clamped as the uint8 FVD path clamps),
a mask of the generated frames, and what a time-aware metric may ask for (given frames, task,
trajectories, the digits' ground truth), each evaluator only the keys it names.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from einops import rearrange

from fvdm.bench.suites.digits_zero_shot.design import COND_TASK_TABLE, Config, given


def fvd_metric(cfg: Config, plugins: Any, extractor: Any) -> Any:
    """The registered ``fvd_digits`` preset, every given clip used, our extractor instance."""
    entry = plugins["evaluators"].get("fvd_digits")
    fcfg = entry.config.model_validate({"extractor": cfg.extractor, "num_real": None, "num_fake": None,
                                        "batch_size": cfg.eval_batch, "num_frames": cfg.num_frames})
    return entry.obj(fcfg, extractor=extractor, plugins=plugins)


def fvd(metric: Any, real_stats: Any, fake: torch.Tensor) -> float:
    """FVD of pixel clips ``fake`` (N, F, C, H, W) in [-1, 1] against precomputed real statistics."""
    from fvdm.core.media import to_uint8

    return float(metric.evaluate(to_uint8(fake), real_stats)["value"])


def windows(videos: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Non-overlapping ``num_frames`` windows of long videos (N, T, C, H, W) -> (N * n_win, F, C, H, W)."""
    n_win = videos.shape[1] // num_frames
    return rearrange(videos[:, :n_win * num_frames], "n (w f) c h w2 -> (w n) f c h w2", w=n_win)


def score(cfg: Config, plugins: Any, fvd_m: Any, real: dict[str, Any], task: str, fake: torch.Tensor,
          gt: torch.Tensor, evaluators: dict[str, Any] | None = None) -> dict[str, float]:
    """Every configured metric of completed clips ``fake`` against ``gt`` (pixels in [-1, 1]).

    ``evaluators`` caches the built evaluators (metrics entry -> instance) across calls, so weights
    load once per process; ``real`` holds ``stats`` (FVD), and optionally ``trajectories``, ``truth``.
    """
    if task not in COND_TASK_TABLE:
        raise ValueError(f"score is for the conditional tasks {list(COND_TASK_TABLE)}, got {task!r}")
    cache = {} if evaluators is None else evaluators
    pos = given(cfg, task)
    mask = torch.ones(fake.shape[:2], dtype=torch.bool)
    mask[:, pos] = False  # score generated frames only
    f01, g01 = ((fake + 1) / 2).clamp(0, 1), ((gt + 1) / 2).clamp(0, 1)  # as the uint8 FVD path clamps
    res: dict[str, float] = {}
    for m in cfg.metrics:
        name = m["name"]
        if name == "fvd":
            res["fvd"] = fvd(fvd_m, real["stats"], fake)
            continue
        key = repr(sorted(m.items()))  # the whole entry: one name may appear with different params
        ev = cache.get(key)
        if ev is None:
            spec = {k: v for k, v in m.items() if k not in ("higher_is_better", "needs_trajectories")}
            entry = plugins["evaluators"].get(name)
            if entry.config is not None and "value_range" in entry.config.model_fields and "value_range" not in spec:
                spec["value_range"] = "0_1"  # we hand evaluators [0, 1] clips; say so to those that ask
            # plugins=: a Fréchet metric (fvd_digits, fid...) builds its feature extractor through it
            ev = cache[key] = plugins["evaluators"].build(spec, plugins=plugins)
        # what a time-aware metric may need: scored frames, given frames (context), ground truth
        extras = {"mask": mask, "given": pos, "context": pos, "task": task}
        if real.get("trajectories") is not None:
            extras["trajectories"] = real["trajectories"][:fake.shape[0]]
        if real.get("truth") is not None:
            extras["truth"] = real["truth"]
        params = inspect.signature(ev.evaluate).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            extras = {k: v for k, v in extras.items() if k in params}
        res[name] = float(ev.evaluate(f01, g01, **extras)["value"])
    return res
