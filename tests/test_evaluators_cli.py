"""`fvdm eval` end to end on CPU-scale data (bundled digits extractor, no external weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fvdm.cli import main


def _write_videos(root, n: int, seed: int, frames: int = 16, size: int = 32) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        np.save(root / f"v{i:03d}.npy", (rng.random((frames, size, size, 1)) * 255).astype(np.uint8))


def test_eval_psnr_ssim_between_directories(tmp_path, capsys):
    _write_videos(tmp_path / "a", 3, seed=0)
    _write_videos(tmp_path / "b", 3, seed=0)
    out = tmp_path / "res.json"
    assert main(["eval", "--real", str(tmp_path / "a"), "--fake", str(tmp_path / "b"), "--metric", "psnr",
                 "--metric", "ssim", "--out", str(out), "--no-progress"]) == 0
    res = json.loads(out.read_text())
    assert [r["metric"] for r in res] == ["psnr", "ssim"]
    assert res[1]["value"] == pytest.approx(1.0) and res[0]["value"] == pytest.approx(100.0)  # identical: the cap
    assert json.loads(capsys.readouterr().out) == res
    tb = tmp_path / "tb"
    assert main(["eval", "--real", str(tmp_path / "a"), "--fake", str(tmp_path / "b"), "--metric", "ssim",
                 "--tensorboard", str(tb), "--step", "7", "--no-progress"]) == 0
    assert list(tb.glob("events.out.tfevents.*"))


def test_log_to_tensorboard_scalars():
    from fvdm.commands.eval import log_to_tensorboard

    class Writer:
        def __init__(self):
            self.calls = []

        def add_scalar(self, tag, value, step):
            self.calls.append((tag, value, step))

    w = Writer()
    log_to_tensorboard(w, [{"metric": "fvd_digits", "value": 12.5}, {"metric": "psnr", "value": 30.0}], 100)
    assert w.calls == [("eval/fvd_digits", 12.5, 100), ("eval/psnr", 30.0, 100)]


def test_eval_fvd_digits_against_dataset_with_stats_cache(tmp_path, capsys):
    _write_videos(tmp_path / "fake", 6, seed=1)
    cache = tmp_path / "real_stats.npz"
    args = ["eval", "--real", "moving_digits", "--fake", str(tmp_path / "fake"), "--metric", "fvd_digits",
            "--num-real", "12", "--num-fake", "6", "--stats-cache", str(cache), "--no-progress"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["metric"] == "fvd_digits" and first["n_real"] == 12 and first["n_fake"] == 6
    assert first["extractor_id"].startswith("digits3d") and len(first["weights_sha256"]) == 64
    assert first["value"] > 0 and np.isfinite(first["value"]) and cache.is_file()
    assert main(args) == 0  # second run reads the cache and gives the same number
    assert json.loads(capsys.readouterr().out)["value"] == pytest.approx(first["value"], rel=1e-12)
    assert main(args + ["--seed", "5"]) == 2  # another protocol: the cache is refused with the reason
    err = capsys.readouterr().err
    assert "refusing cached" in err and "seed" in err


def test_eval_missing_weights_names_the_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FVDM_WEIGHTS_DIR", str(tmp_path))
    _write_videos(tmp_path / "fake", 2, seed=1)
    assert main(["eval", "--real", str(tmp_path / "fake"), "--fake", str(tmp_path / "fake"),
                 "--metric", "fvd2048_16f", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "i3d_torchscript.pt" in err and "FVDM_WEIGHTS_DIR" in err


def test_bundled_digits_weights_match_their_sha256():
    from fvdm.plugins.evaluators.digits_net import DigitsExtractor, pinned_sha256

    ext = DigitsExtractor(DigitsExtractor.Config())
    assert ext.weights_sha256 == pinned_sha256()
    feats = ext(torch.zeros(2, 16, 1, 32, 32, dtype=torch.uint8))
    assert feats.shape == (2, 64)


@pytest.mark.slow
def test_eval_samples_a_checkpoint(tmp_path, capsys):
    """Train 2 steps of the demo config, then `fvdm eval --fake last.pt` samples and scores it."""
    from pathlib import Path

    demo = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    if not demo.is_file():
        pytest.skip("configs/demo.yaml not present")
    run = tmp_path / "run"
    assert main(["train", str(demo), "--run-dir", str(run), "-o", "train.steps=2", "-o", "train.ckpt_every=2",
                 "-o", "train.sample_every=0", "-o", "train.tensorboard=false", "--no-progress"]) == 0
    capsys.readouterr()
    ckpt = run / "checkpoints" / "last.pt"
    assert main(["eval", "--real", "moving_digits", "--fake", str(ckpt), "--metric", "fvd_digits",
                 "--num-samples", "3", "--sample-steps", "2", "--num-real", "6", "--set", "num_frames=8",
                 "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_fake"] == 3 and res["n_real"] == 6 and np.isfinite(res["value"])
    assert res["inputs"]["fake_sampling"]["num_samples"] == 3
