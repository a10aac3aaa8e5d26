"""The example plugin's own tests: run with `pytest examples/fvdm-plugin-example/tests`."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from fvdm.core import load_plugins


def _plugins():
    from fvdm_plugin_example import plugin

    # A fresh manager with built-ins off: tests see only this plugin, however it is installed.
    return load_plugins(builtins=False, entry_points=False, extra_plugins=[("example", plugin)])


def test_correlated_frames_shape_range_determinism():
    strat = _plugins()["vtv_strategies"].build({"name": "correlated_frames", "step_std": 0.2})
    a = strat(64, 16, generator=torch.Generator().manual_seed(1))
    b = strat(64, 16, generator=torch.Generator().manual_seed(1))
    assert a.shape == (64, 16) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_neighbours_are_more_alike_than_distant_frames():
    strat = _plugins()["vtv_strategies"].build({"name": "correlated_frames", "step_std": 0.05})
    u = strat(4000, 16, generator=torch.Generator().manual_seed(0))
    near = (u[:, 1:] - u[:, :-1]).abs().mean()
    far = (u[:, -1] - u[:, 0]).abs().mean()
    assert near < 0.05 < far  # E|N(0, 0.05)| = 0.04; 15 steps apart spreads ~sqrt(15) wider
    # marginal of the first frame is uniform on [0, 1]
    assert abs(float(u[:, 0].mean()) - 0.5) < 0.02


def test_config_validation_message():
    with pytest.raises(ValidationError, match="step_std"):
        _plugins()["vtv_strategies"].build({"name": "correlated_frames", "step_std": 0})


def test_keyframes_first_closed_form():
    sched = _plugins()["sampling_schedules"].build({"name": "keyframes_first", "stride": 3, "lag": 0.5})
    k, f = 4, 7
    s = sched(k, f)
    assert s.shape == (k + 2 + 1, f)
    key = [0, 3, 6]
    # keyframes: 1, .75, .5, .25, 0, 0, 0 ; others: 1, 1, 1, .75, .5, .25, 0
    expect_key = torch.tensor([1, 0.75, 0.5, 0.25, 0, 0, 0])
    expect_mid = torch.tensor([1, 1, 1, 0.75, 0.5, 0.25, 0])
    for j in range(f):
        torch.testing.assert_close(s[:, j], expect_key if j in key else expect_mid)
    assert bool((s[1:] <= s[:-1]).all())  # columns non-increasing


def test_keyframes_first_keeps_context_clean():
    sched = _plugins()["sampling_schedules"].build({"name": "keyframes_first"})
    ctx = torch.zeros(8, dtype=torch.bool)
    ctx[0] = True
    s = sched(10, 8, context=ctx)
    assert bool((s[:, 0] == 0).all()) and float(s[0, 1:].min()) == 1.0 and float(s[-1].max()) == 0.0


def test_frame_correlation_suite_brackets_correlated_frames(tmp_path):
    from fvdm.core import load_plugins
    from fvdm_plugin_example import plugin

    plugins = load_plugins(entry_points=False, extra_plugins=[("example", plugin)])  # built-ins for the brackets
    suite = plugins["benchmarks"].build({"name": "frame_correlation", "step_stds": [0.05, 0.5]})
    res = suite.run(tmp_path, quick=True, seed=0, plugins=plugins)
    m = res["metrics"]
    assert m["synchronized"]["neighbour_gap"] == 0.0
    assert abs(m["independent"]["neighbour_gap"] - 1 / 3) < 0.01  # E|U - V| for i.i.d. uniforms
    assert abs(m["independent"]["neighbour_corr"]) < 0.03
    assert m["correlated_frames(step_std=0.05)"]["neighbour_corr"] > m["correlated_frames(step_std=0.5)"]["neighbour_corr"] > 0.1
