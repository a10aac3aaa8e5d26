"""`frame_correlation`: a benchmark suite comparing how strongly VTV strategies tie frames together.

For each strategy it draws per-frame levels u (N, F) and reports the mean gap between
neighbouring frames, E|u_{f+1} - u_f|, and their Pearson correlation. `synchronized`
(gap 0, correlation 1) and `independent` (gap 1/3, correlation 0) bracket
`correlated_frames` at each `step_std`.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from fvdm.core import PluginConfig


def neighbour_stats(u: torch.Tensor) -> tuple[float, float]:
    """(mean |u_{f+1} - u_f|, Pearson correlation of (u_f, u_{f+1})) for u (N, F)."""
    a, b = u[:, :-1].flatten().double(), u[:, 1:].flatten().double()
    gap = float((b - a).abs().mean())
    corr = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    return gap, corr


class FrameCorrelationSuite:
    """Neighbour-frame gap and correlation of VTV strategies (correlated_frames vs the built-ins)."""

    class Config(PluginConfig):
        num_clips: int = Field(20000, ge=100)
        num_frames: int = Field(16, ge=2)
        step_stds: list[float] = [0.02, 0.05, 0.1, 0.2, 0.5]

    def __init__(self, cfg: "FrameCorrelationSuite.Config"):
        self.cfg = cfg

    def run(self, out_dir: Any, *, plugins: Any, quick: bool = False, seed: int = 0) -> dict[str, Any]:
        # plugins: the host's plugin manager (the runner passes it), which builds the strategies compared
        n = 2000 if quick else self.cfg.num_clips
        f = self.cfg.num_frames
        specs = [("synchronized", {"name": "synchronized"}), ("independent", {"name": "independent"})]
        specs += [(f"correlated_frames(step_std={s})", {"name": "correlated_frames", "step_std": s})
                  for s in self.cfg.step_stds]
        rows, metrics = [], {}
        for label, spec in specs:
            strategy = plugins["vtv_strategies"].build(spec)
            u = strategy(n, f, generator=torch.Generator().manual_seed(seed))  # (N, F)
            gap, corr = neighbour_stats(u)
            rows.append([label, round(gap, 4), round(corr, 4)])
            metrics[label] = {"neighbour_gap": gap, "neighbour_corr": corr}
        corr_series = [metrics[f"correlated_frames(step_std={s})"]["neighbour_corr"] for s in self.cfg.step_stds]
        return {
            "metrics": metrics,
            "tables": [{"title": f"neighbouring-frame statistics ({n} clips x {f} frames)",
                        "columns": ["strategy", "E|u_f+1 - u_f|", "corr(u_f, u_f+1)"], "rows": rows}],
            "plots": [{"name": "frame_correlation", "title": "correlated_frames: neighbour correlation",
                       "xlabel": "step_std", "ylabel": "corr(u_f, u_f+1)", "x": list(self.cfg.step_stds),
                       "series": {"correlated_frames": corr_series}, "kind": "line", "logx": True}],
            "seeds": [seed],
        }
