"""fvdm.bench.stats: the t intervals, paired differences and verdicts every benchmark reports."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from fvdm.bench.stats import T975, ci_text, compared, compared_name, mean_ci, paired_ci, t_quantile, verdict


def test_mean_ci_against_hand_computed_values():
    r = mean_ci([1.0, 2.0, 3.0])
    assert r["mean"] == 2.0 and r["std"] == 1.0 and r["n"] == 3 and r["values"] == [1.0, 2.0, 3.0]
    assert r["ci_high"] - 2.0 == pytest.approx(4.302653 / 3 ** 0.5, rel=1e-5)  # t(0.975, df=2) = 4.302653
    assert r["ci_low"] == pytest.approx(4.0 - r["ci_high"])
    one = mean_ci([1.0])
    assert one["mean"] == 1.0 and math.isnan(one["ci_low"]) and math.isnan(one["std"])  # no interval from one seed
    with pytest.raises(ValueError, match="mean_ci of no values"):
        mean_ci([])


def test_t_quantiles_and_their_fallback_table():
    scipy_stats = pytest.importorskip("scipy.stats")
    assert t_quantile(40) == pytest.approx(2.021, abs=1e-3)
    for df, q in enumerate(T975, 1):  # the table used without scipy agrees with scipy
        assert q == pytest.approx(float(scipy_stats.t.ppf(0.975, df)), abs=1e-3), df
    with pytest.raises(ValueError, match="df >= 1"):
        t_quantile(0)


def test_paired_ci_takes_the_seeds_both_have():
    a = {0: 5.0, 1: 7.0, 2: 9.0, 3: 100.0}
    b = {0: 4.0, 1: 5.0, 2: 6.0, 9: -1.0}
    d = paired_ci(a, b)
    assert d["values"] == [1.0, 2.0, 3.0] and d == mean_ci([1.0, 2.0, 3.0])
    assert paired_ci({0: 1.0}, {1: 1.0}) is None


def test_verdicts_follow_the_metric_direction():
    assert verdict(-3.0, -1.0, higher_is_better=False) == "supported"  # FVD fell
    assert verdict(1.0, 3.0, higher_is_better=False) == "contradicted"
    assert verdict(1.0, 3.0, higher_is_better=True) == "supported"
    assert verdict(-1.0, 3.0, higher_is_better=True) == "inconclusive"
    assert verdict(float("nan"), float("nan"), higher_is_better=True) == "inconclusive"


def test_compared_values_and_their_text():
    assert compared(1.6, 1.0) == pytest.approx(0.6) and compared(1.6, None) == 1.6
    assert compared_name("boundary_jump", 1.0) == "|BOUNDARY_JUMP - 1|" and compared_name("fvd", None) == "FVD"
    assert ci_text(mean_ci([1.0, 2.0, 3.0])) == "+2 [-0.4841, 4.484]"
    assert ci_text(mean_ci([2.0]), signed=False) == "2 (n=1)" and ci_text(None) == "-"


def test_benchmarks_and_suites_take_statistics_from_fvdm_bench_stats():
    """No script or suite keeps its own t table or imports the statistics from a suite's module."""
    root = Path(__file__).resolve().parents[1]
    files = [*root.glob("benchmarks/*.py"), *root.glob("fvdm/bench/suites/**/*.py")]
    assert len(files) > 10
    own = re.compile(r"12\.706|ppf\(0\.975|from fvdm\.bench\.suites\.\S+ import .*\b(mean_ci|verdict|t_quantile)\b")
    offenders = [str(f.relative_to(root)) for f in files if own.search(f.read_text())]
    assert offenders == []
