"""Issue: a third-party package registers a VTV strategy through entry points.

Builds and installs examples/fvdm-plugin-example into an isolated target directory
(pip --target), puts it on the path of a subprocess, and uses it by name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "fvdm-plugin-example"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
         "--target", str(target), str(EXAMPLE)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        pytest.fail(f"pip could not build/install the example plugin:\n{proc.stderr[-2000:]}")
    assert (target / "fvdm_plugin_example").is_dir()
    return target


def _fvdm(*args, site: Path | None, cwd: Path | None = None):
    path = [str(site)] if site else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path + [str(REPO)])}
    return subprocess.run([sys.executable, "-m", "fvdm", *args], env=env, capture_output=True, text=True, cwd=cwd)


def test_listed_with_distribution_and_version(installed):
    out = _fvdm("plugins", "--json", "--kind", "vtv_strategies", site=installed)
    assert out.returncode == 0, out.stderr
    items = {e["name"]: e for e in json.loads(out.stdout)["kinds"]["vtv_strategies"]}
    assert items["correlated_frames"]["origin"] == "fvdm-plugin-example 0.1.0"
    assert items["correlated_frames"]["plugin"] == "example"
    assert items["correlated_frames"]["available"] is True


def test_config_validates_and_bad_param_uses_plugins_message(installed, tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"vtv": {"name": "correlated_frames", "step_std": 0.2}}))
    out = _fvdm("config", "validate", str(good), site=installed)
    assert out.returncode == 0, out.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"vtv": {"name": "correlated_frames", "step_std": 5.0, "stepstd": 1}}))
    out = _fvdm("config", "validate", str(bad), site=installed)
    assert out.returncode == 1
    assert "vtv.step_std: Input should be less than or equal to 1" in out.stderr
    assert "vtv.stepstd: unknown key" in out.stderr
    assert "fvdm-plugin-example 0.1.0" in out.stderr


def test_uninstalled_name_is_unknown_with_where_to_look(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"vtv": {"name": "correlated_frames"}}))
    out = _fvdm("config", "validate", str(cfg), site=None)
    assert out.returncode == 1
    assert "unknown vtv_strategies 'correlated_frames'" in out.stderr
    assert "fvdm plugins --kind vtv_strategies" in out.stderr  # core hard-codes no third-party package names


def test_short_training_and_sampling_run_use_the_plugin(installed, tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "plugin_run",
        "run_root": str(tmp_path / "runs"),
        "data": {"name": "moving_digits", "num_frames": 4, "resolution": 16, "num_clips": 16},
        "backbone": {"name": "latte_tiny"},
        "vtv": {"name": "correlated_frames", "step_std": 0.2},
        "train": {"steps": 2, "batch_size": 2, "log_every": 1, "ckpt_every": 2, "tensorboard": False},
        "sample": {"steps": 3},
    }))
    run_dir = tmp_path / "run"
    out = _fvdm("train", str(cfg), "--run-dir", str(run_dir), "--no-progress", "--json", site=installed)
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = run_dir / "checkpoints" / "last.pt"
    assert ckpt.is_file()
    saved = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else None
    if saved is not None:
        assert saved["vtv"]["name"] == "correlated_frames"

    out = _fvdm("sample", "--checkpoint", str(ckpt), "--task", "unconditional", "--schedule", "keyframes_first",
                "--schedule-param", "stride=2", "--schedule-param", "lag=0.25",
                "--steps", "3", "--batch-size", "1", "--formats", "png", "--no-progress", "--out",
                str(tmp_path / "samples"), site=installed)
    assert out.returncode == 0, out.stderr[-3000:]
    meta = json.loads((tmp_path / "samples" / "unconditional.json").read_text())
    assert meta["schedule"] == {"name": "keyframes_first", "spacing": "uniform", "shift": 1.0, "steps_offset": 1,
                                "stride": 2, "lag": 0.25}
    assert (tmp_path / "samples" / "unconditional.png").is_file()

    # the checkpoint names the plugin; without the package the name is unknown, with where to look
    out = _fvdm("train", str(cfg), "--run-dir", str(tmp_path / "run2"), "--no-progress", site=None)
    assert out.returncode != 0
    assert "correlated_frames" in out.stderr and "fvdm plugins --kind vtv_strategies" in out.stderr


def test_benchmark_suite_runs_by_name_and_own_tests_pass(installed, tmp_path):
    out = _fvdm("bench", "run", "frame_correlation", "--quick", "--out", str(tmp_path / "b"), site=installed)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    assert res["status"] == "ok" and res["origin"].startswith("fvdm-plugin-example 0.1.0")
    assert res["metrics"]["synchronized"]["neighbour_gap"] == 0.0
    # the example package's own test suite, against the installed copy
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed), str(REPO)])}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
                          env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
