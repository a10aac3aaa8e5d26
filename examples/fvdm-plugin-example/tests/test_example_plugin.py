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
