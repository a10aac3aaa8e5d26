"""The statistics every benchmark reports: t intervals over seeds, paired differences and verdicts.

One implementation for the suites (``fvdm/bench/suites``) and the scripts in ``benchmarks/``, so
a number in one table means what it means in another:

- ``mean_ci(values)``: mean, sample std and the two-sided 95% Student-t interval over seeds
  (``scipy.stats.t``; without scipy, the tabulated quantiles ``T975`` for df <= 30, 1.96 beyond).
- ``paired_ci(a, b)``: the interval of the per-seed differences a - b over the seeds both have
  (paired: the same seed in both arms cancels what the arms share).
- ``verdict(low, high, higher_is_better)``: supported / contradicted / inconclusive.
- ``compared(value, target)``: what is compared for a metric with an ideal value (|value - target|).
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Mapping

#: two-sided 95% quantiles of Student's t for df = 1..30: the fallback when scipy is not installed
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)

VERDICTS = ("supported", "contradicted", "inconclusive")


def t_quantile(df: int) -> float:
    """Two-sided 95% quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"t_quantile needs df >= 1, got {df}; an interval needs at least 2 values")
    try:
        from scipy import stats

        return float(stats.t.ppf(0.975, df))
    except ImportError:  # documented fallback: tabulated for small df, normal beyond
        return T975[df - 1] if df <= len(T975) else 1.96


def mean_ci(values: list[float]) -> dict[str, Any]:
    """Mean, sample std and 95% t confidence interval of ``values`` (std and CI are NaN with fewer than 2)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci of no values; give at least one (two for an interval)")
    mean = statistics.fmean(values)
    if n < 2:
        return {"mean": mean, "std": float("nan"), "n": n, "ci_low": float("nan"), "ci_high": float("nan"),
                "values": list(values)}
    sd = statistics.stdev(values)
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "std": sd, "n": n, "ci_low": mean - half, "ci_high": mean + half, "values": list(values)}


def paired_ci(a: Mapping[Any, float], b: Mapping[Any, float]) -> dict[str, Any] | None:
    """``mean_ci`` of a[s] - b[s] over the seeds ``s`` both have (in sorted order); None when they share none."""
    common = sorted(set(a) & set(b))
    if not common:
        return None
    return mean_ci([a[s] - b[s] for s in common])


def verdict(ci_low: float, ci_high: float, higher_is_better: bool) -> str:
    """supported / contradicted / inconclusive for a difference (arm - other) with this CI."""
    if not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return "inconclusive"
    if ci_low > 0 or ci_high < 0:
        favours_arm = (ci_low > 0) == higher_is_better
        return "supported" if favours_arm else "contradicted"
    return "inconclusive"


def compared(value: float, target: float | None) -> float:
    """What differences compare: the value, or its distance to the metric's ideal value ``target``."""
    return value if target is None else abs(value - target)


def compared_name(metric: str, target: float | None) -> str:
    """``FVD``, or ``|BOUNDARY_JUMP - 1|`` for a metric compared by its distance to an ideal value."""
    return metric.upper() if target is None else f"|{metric.upper()} - {target:g}|"


def ci_text(d: Mapping[str, Any] | None, signed: bool = True) -> str:
    """``mean [low, high]`` (a difference: signed), ``mean (n=1)`` without an interval, ``-`` for None."""
    if d is None:
        return "-"
    f = "+.4g" if signed else ".4g"
    if d["n"] < 2 or not math.isfinite(d["ci_low"]):
        return f"{d['mean']:{f}} (n={d['n']})"
    return f"{d['mean']:{f}} [{d['ci_low']:.4g}, {d['ci_high']:.4g}]"


__all__ = ["T975", "VERDICTS", "t_quantile", "mean_ci", "paired_ci", "verdict", "compared", "compared_name",
           "ci_text"]
