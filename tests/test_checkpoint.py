"""Checkpoint io: atomic writes, weights_only loads, corrupt/foreign files, load_for_sampling."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from fvdm.core.checkpoint import (
    CheckpointError, capture_rng, load_checkpoint, load_state_strict, restore_rng,
    save_checkpoint,
)
from fvdm.core.loaded import LoadedModel, load_for_sampling
from fvdm.core.config import parse_config
from fvdm.core.engine import train
from fvdm.core.plugins import load_plugins


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny class-conditional run shared by the tests below."""
    tmp = tmp_path_factory.mktemp("ck")
    cfg = parse_config({
        "name": "ck", "run_root": str(tmp / "runs"),
        "data": {"name": "moving_digits", "num_frames": 4, "resolution": 16, "num_clips": 16,
                 "class_conditional": True},
        "train": {"steps": 3, "batch_size": 2, "lr": 1e-3, "ema_decay": 0.5, "ema_warmup": False,
                  "tensorboard": False, "log_every": 3},
    })
    plugins = load_plugins()
    res = train(cfg, plugins, run_dir=tmp / "run", progress=False)
    return plugins, tmp / "run" / "checkpoints" / "last.pt", res


def test_checkpoint_loads_with_plain_weights_only(trained):
    _, path, res = trained
    raw = torch.load(path, weights_only=True)  # no allow-listed globals needed
    assert raw["format"] == "fvdm-checkpoint" and raw["step"] == 3
    assert raw["config_hash"] == res["config_hash"]
    assert set(raw["rng"]) == {"generator", "ranks"} and len(raw["rng"]["ranks"]) == 1
    assert raw["data_info"] == {"num_frames": 4, "channels": 1, "resolution": 16, "num_classes": 10,
                                "latent_channels": 1, "latent_resolution": 16, "latent_frames": 4}


def test_atomic_save_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint({"a": torch.ones(3)}, path)
    good = path.read_bytes()

    def boom(obj, f, *a, **k):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"a": torch.zeros(3)}, path)
    assert path.read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]  # no temp file left behind


def test_truncated_and_garbage_files_give_clear_errors(trained, tmp_path):
    _, path, _ = trained
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut.pt .* truncated or corrupt"):
        load_checkpoint(cut)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(junk)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_foreign_files_are_refused(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.ones(2)}, plain)
    with pytest.raises(CheckpointError, match="not an fvdm checkpoint"):
        load_checkpoint(plain)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "fvdm-checkpoint", "obj": random.Random(0)}, pickled)
    with pytest.raises(CheckpointError, match="weights_only=True refuses"):
        load_checkpoint(pickled)


def test_load_state_strict_names_mismatches(tmp_path):
    m = torch.nn.Linear(3, 2)
    with pytest.raises(CheckpointError, match=r"weight: checkpoint \(2, 4\) vs model \(2, 3\)"):
        load_state_strict(m, {"weight": torch.zeros(2, 4), "bias": torch.zeros(2)}, "model", "x.pt")
    with pytest.raises(CheckpointError, match="missing 1 keys"):
        load_state_strict(m, {"weight": torch.zeros(2, 3)}, "model", "x.pt")


def test_rng_roundtrip():
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    state = capture_rng()
    a = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5), np.random.rand(5), random.random()
    restore_rng(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_load_for_sampling(trained):
    plugins, path, _ = trained
    lm = load_for_sampling(path, plugins)
    assert isinstance(lm, LoadedModel)
    assert (lm.num_frames, lm.channels, lm.resolution, lm.num_classes) == (4, 1, 16, 10)
    assert (lm.latent_channels, lm.latent_resolution, lm.step, lm.max_frames) == (1, 16, 3, 4)
    assert not lm.model.training and lm.config.data.name == "moving_digits"
    ck = load_checkpoint(path)
    for k, v in lm.model.state_dict().items():
        assert torch.equal(v, ck["ema"][k])
    raw = load_for_sampling(path, plugins, use_ema=False)
    assert any(not torch.equal(raw.model.state_dict()[k], ck["ema"][k]) for k in ck["model"])
    x = torch.randn(2, 4, 1, 16, 16)
    t = torch.full((2, 4), 0.5)
    out = lm.model(x, lm.schedule.timestep_input(t), torch.tensor([1, 2]))
    assert out.shape == (2, 4, 2, 16, 16)  # learned sigma: 2C channels
    assert lm.autoencoder.decode(x).shape == x.shape


def test_stale_temp_files_of_dead_writers_are_cleaned_on_start(trained, tmp_path, capsys):
    """kill -9 during a save leaves `.last.pt.tmp-PID`; the next start removes those of dead PIDs only."""
    import shutil
    import subprocess
    import sys

    from fvdm.core.checkpoint import clean_stale_temps

    plugins, ckpt, _ = trained
    run_dir = tmp_path / "run"
    shutil.copytree(ckpt.parent.parent, run_dir)
    ck = run_dir / "checkpoints"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = ck / f".last.pt.tmp-{int(dead.stdout)}"  # that process has exited
    stale.write_bytes(b"\0" * 1000)
    live = ck / f".last.pt.tmp-{os.getpid()}"  # a writer in progress (this process) is left alone
    live.write_bytes(b"partial")
    assert clean_stale_temps(ck) == [stale] and live.exists() and not stale.exists()
    live.unlink()
    stale.write_bytes(b"\0" * 1000)
    cfg = parse_config({"name": "ck2", "data": {"name": "moving_digits", "num_frames": 4, "resolution": 16,
                                                "num_clips": 8},
                        "train": {"steps": 1, "batch_size": 2, "tensorboard": False, "log_every": 1}})
    train(cfg, plugins, run_dir=run_dir, overwrite=True, progress=False)
    assert not stale.exists() and f"removed {stale.name}" in capsys.readouterr().err


def test_damaged_tensor_data_is_detected_on_load(trained, tmp_path):
    """Bit flips in tensor data load silently with weights_only=True; the stored tensor hashes catch them."""
    from fvdm.core.checkpoint import tensor_digest

    _, ckpt, _ = trained
    state = torch.load(ckpt, weights_only=True)
    assert set(state["tensor_sha256"]) == {"model", "ema", "optimizer"}
    assert state["tensor_sha256"]["model"] == tensor_digest(state["model"])
    name = next(k for k, v in state["model"].items() if v.is_floating_point() and v.numel() > 1)
    flipped = state["model"][name].clone()
    flipped.view(torch.int32).view(-1)[0] ^= 1 << 20  # one bit of one float32, as a disk error would
    state["model"][name] = flipped
    bad = tmp_path / "flipped.pt"
    torch.save(state, bad)  # the stored hashes are the originals
    with pytest.raises(CheckpointError, match="damaged: the tensors of model do not match"):
        load_checkpoint(bad)


def test_non_finite_weights_are_refused_even_with_matching_hashes(trained, tmp_path):
    from fvdm.core.checkpoint import save_checkpoint

    _, ckpt, _ = trained
    state = torch.load(ckpt, weights_only=True)
    name = next(k for k, v in state["ema"].items() if v.is_floating_point())
    state["ema"][name] = torch.full_like(state["ema"][name], float("nan"))
    save_checkpoint(state, tmp_path / "nan.pt")  # hashed after the NaN went in: the hashes match
    with pytest.raises(CheckpointError, match="non-finite value.*ema weight"):
        load_checkpoint(tmp_path / "nan.pt")
