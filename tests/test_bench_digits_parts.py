"""The digits suite's parts on their own: analysis versus baselines, paired sampling noise, scoring, workers."""

from __future__ import annotations

import pytest
import torch

from fvdm.bench.suites.digits_zero_shot import DigitsZeroShotSuite, analysis, scoring, workers
from fvdm.core import load_plugins

def test_versus_baselines_applies_only_where_the_ground_truth_beats_the_baseline():
    """Verdicts against a baseline's one value, from the seeds' CI; a baseline that outscores the data is n/a."""
    cfg = DigitsZeroShotSuite.Config(arms=[
        {"name": "a", "vtv": {"name": "synchronized"}, "sampling": "replacement"},
        {"name": "b", "vtv": {"name": "ptss", "p": 0.2}, "sampling": "native"}], baseline="a", criteria=[])
    info = {"digit_identity": {"higher_is_better": True, "target": None},
            "fvd": {"higher_is_better": False, "target": None},
            "boundary_jump": {"higher_is_better": False, "target": 1.0}}
    per_seed = {s: {"a": {"extension": {"digit_identity": 0.2 + d, "fvd": 40 + d, "boundary_jump": 1.6 + d}},
                    "b": {"extension": {"digit_identity": 0.5 + d, "fvd": 30 + 10 * d, "boundary_jump": 1.1 + d}}}
                for s, d in zip(range(5), (0.0, 0.01, -0.01, 0.02, -0.02))}
    baselines = {"extension": {"ground truth": {"digit_identity": 0.95, "fvd": 5.0, "boundary_jump": 1.0},
                               "copy": {"digit_identity": 0.97, "fvd": 45.0, "boundary_jump": 0.0},
                               "noise": {"digit_identity": 0.3, "fvd": 30.0, "boundary_jump": 1.7}}}
    v = analysis.versus_baselines(cfg, per_seed, baselines, info)["extension"]
    assert v["digit_identity"]["copy"]["applies"] is False  # copying beats the data itself: no bar
    assert v["digit_identity"]["noise"]["applies"] is True
    assert v["digit_identity"]["noise"]["arms"]["b"]["verdict"] == "beats"
    assert v["digit_identity"]["noise"]["arms"]["a"]["verdict"] == "loses"
    assert v["fvd"]["copy"]["arms"]["a"]["verdict"] == "beats" and v["fvd"]["copy"]["arms"]["b"]["verdict"] == "beats"
    assert v["fvd"]["noise"]["arms"]["b"]["verdict"] == "tie"  # 30 +- 10 per seed straddles 30
    # boundary jump compares |value - 1|: copy (jump 0) is 1 away, arm b (1.1) 0.1 away
    jump = v["boundary_jump"]
    assert jump["copy"]["baseline"] == 1.0 and jump["copy"]["arms"]["b"]["verdict"] == "beats"
    assert v["boundary_jump"]["noise"]["arms"]["a"]["verdict"] == "beats"  # |1.6 - 1| = 0.6 < |1.7 - 1|
    counts = analysis.versus_counts(cfg, analysis.versus_baselines(cfg, per_seed, baselines, info))
    assert counts[1].startswith("b beats") and "of 5 applicable" in counts[1]


def test_digits_sampling_noise_is_paired_per_clip_batch(tmp_path):
    cfg = DigitsZeroShotSuite.Config(eval_batch=3)
    ctx = type("Ctx", (), {"batch_size": 0, "generator": None})()
    lm = type("LM", (), {"latent_channels": 1, "channels": 1})()
    draw = lambda sl: torch.randn(sl.stop - sl.start, 2, generator=ctx.generator)  # noqa: E731
    torch.manual_seed(0)
    a = workers.batched(cfg, ctx, lm, 7, 3, "image_to_video", draw)
    torch.rand(5)  # whatever ran in between (another arm, another task) does not matter
    b = workers.batched(cfg, ctx, lm, 7, 3, "image_to_video", draw)
    assert torch.equal(a, b)
    assert not torch.equal(a, workers.batched(cfg, ctx, lm, 7, 4, "image_to_video", draw))  # seeds differ
    assert not torch.equal(a, workers.batched(cfg, ctx, lm, 7, 3, "interpolation", draw))  # tasks differ



def test_time_aware_metrics_see_real_clips_as_real():
    """The suite hands evaluators [0, 1] clips: ground truth scored as a 'generated' extension must look real."""
    from fvdm.plugins.evaluators.digits_truth import digits_truth

    plugins = load_plugins(entry_points=False)
    cfg = DigitsZeroShotSuite.Config()
    cfg.metrics = [m for m in cfg.metrics if m["name"] != "fvd"]
    ds = plugins["datasets"].build({"name": "moving_digits", "split": "test", "num_frames": 8, "num_clips": 8})
    gt = torch.stack([ds[i]["video"] for i in range(8)])  # (8, 8, 1, 32, 32) in [-1, 1]
    res = scoring.score(cfg, plugins, None, {"truth": digits_truth(ds, list(range(8)))}, "extension", gt.clone(), gt)
    assert res["digit_recognisability"] > 0.95 and res["digit_identity"] > 0.9
    assert res["trajectory_error"] < 2.0 and res["boundary_jump"] == pytest.approx(1.0)
    assert res["psnr"] == 100.0  # identical frames: the documented cap


def test_workers_exit_when_the_suite_process_dies(tmp_path):
    """A killed suite must not leave its worker processes training on (orphans)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    pid_file = tmp_path / "child.pid"
    script.write_text(
        "import multiprocessing as mp, os, sys, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from fvdm.bench.suites.digits_zero_shot.workers import exit_with_parent\n"
        "def busy(path):\n"  # a worker in the middle of a long job (training), not idle on its queue
        "    open(path, 'w').write(str(os.getpid()))\n"
        "    time.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    init = exit_with_parent if sys.argv[2] == 'watch' else None\n"
        "    pool = ProcessPoolExecutor(1, mp_context=mp.get_context('spawn'), initializer=init,\n"
        "                               initargs=(os.getpid(), 0.1) if init else ())\n"
        "    pool.submit(busy, sys.argv[1])\n"
        "    time.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    parent = subprocess.Popen([sys.executable, str(script), str(pid_file), "watch"], env=env)
    for _ in range(300):
        if pid_file.is_file() and pid_file.read_text():
            break
        time.sleep(0.1)
    child_pid = int(pid_file.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    for _ in range(100):  # the watcher polls every 0.1 s
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(child_pid, signal.SIGKILL)
        pytest.fail("the worker outlived its killed parent")



def test_digits_suite_builds_a_frechet_metric_through_the_callers_plugin_manager():
    """A metric that builds its own feature extractor (fvd_digits) gets the suite's plugin manager."""
    import warnings

    plugins = load_plugins(entry_points=False)
    cfg = DigitsZeroShotSuite.Config(metrics=[{"name": "fvd_digits", "num_frames": 8}])
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(6, 8, 1, 32, 32, generator=g) * 2 - 1  # (N, F, C, H, W) in [-1, 1]
    fake = (gt + 0.3 * torch.randn(gt.shape, generator=g)).clamp(-1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 6 clips for 64-d features: rank-deficient, only the wiring is tested
        res = scoring.score(cfg, plugins, None, {}, "extension", fake, gt)
    assert res["fvd_digits"] > 0
