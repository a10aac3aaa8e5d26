"""``train.init_from``: a new run from another run's weights (a fine-tune, not a resume), recorded with its hash."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from fvdm.cli import main
from fvdm.core.hashing import sha256_file


def cfg_file(root, name, **train):
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "run_root": str(root / "runs"),
        "data": {"name": "moving_digits", "num_frames": 4, "resolution": 16, "num_clips": 8},
        "backbone": {"name": "unet_video", "base_channels": 8, "channel_mult": [1, 2], "temporal_levels": [1]},
        "vtv": train.pop("vtv", "synchronized"),
        "sample": {"sampler": {"name": "ddim", "clip_x0": 1.0}, "steps": 2},
        "train": {"steps": 2, "batch_size": 2, "log_every": 1, "ckpt_every": 1, "tensorboard": False,
                  "ema_decay": 0.5, **train},
    }))
    return str(path)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("base")
    assert main(["train", cfg_file(root, "base"), "--run-dir", str(root / "run"), "--no-progress"]) == 0
    return root, root / "run" / "checkpoints" / "last.pt"


def test_a_fine_tune_starts_from_the_base_ema_and_records_it(base, tmp_path):
    _, ckpt = base
    cfg = cfg_file(tmp_path, "ft", vtv="ptss", init_from=str(ckpt), lr=1e-12, steps=1)
    assert main(["train", cfg, "--run-dir", str(tmp_path / "ft"), "--no-progress"]) == 0
    ours = torch.load(tmp_path / "ft" / "checkpoints" / "last.pt", weights_only=True)
    theirs = torch.load(ckpt, weights_only=True)
    assert ours["step"] == 1 and ours["started_from"]["sha256"] == sha256_file(ckpt)
    assert ours["started_from"]["step"] == 2 and ours["started_from"]["weights"] == "ema"
    # lr 1e-12: the fine-tune's weights are the base's EMA weights after one step
    worst = max((ours["model"][k] - v).abs().max().item() for k, v in theirs["ema"].items())
    assert worst < 1e-6


def test_init_from_another_architecture_is_one_line_before_training(base, tmp_path, capsys):
    _, ckpt = base
    cfg = tmp_path / "wide.yaml"
    data = yaml.safe_load(open(cfg_file(tmp_path, "wide", init_from=str(ckpt))))
    data["backbone"]["base_channels"] = 16
    cfg.write_text(yaml.safe_dump(data))
    capsys.readouterr()
    assert main(["train", str(cfg), "--run-dir", str(tmp_path / "w"), "--no-progress"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "FVDM_DEBUG" not in line]
    # a config error: the project's `N config error(s):` header, then one line per field
    assert len(err) == 2 and "train.init_from:" in err[1] and "holds another backbone: base_channels 8 (this run 16)" \
        in err[1], err
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_init_from_and_pretrained_together_are_refused(base, tmp_path, capsys):
    _, ckpt = base
    data = yaml.safe_load(open(cfg_file(tmp_path, "both", init_from=str(ckpt))))
    data["backbone"]["pretrained"] = str(tmp_path)
    (tmp_path / "both.yaml").write_text(yaml.safe_dump(data))
    assert main(["train", str(tmp_path / "both.yaml"), "--run-dir", str(tmp_path / "b"), "--no-progress"]) == 2
    assert "not both" in capsys.readouterr().err


def test_validation_while_fine_tuning_samples_held_out_tasks_with_the_same_noise(base, tmp_path):
    import json

    _, ckpt = base
    cfg = cfg_file(tmp_path, "val", vtv="ptss", init_from=str(ckpt), steps=2, validate_every=1, validate_clips=2,
                   lr=1e-12, validate_tasks=["unconditional", "image_to_video", "extension", "interpolation"])
    assert main(["train", cfg, "--run-dir", str(tmp_path / "v"), "--no-progress"]) == 0
    grids = sorted((tmp_path / "v" / "validation").glob("step_*.png"))
    assert [g.name for g in grids] == ["step_0000001.png", "step_0000002.png"]
    from PIL import Image

    a, b = (torch.tensor(np.asarray(Image.open(g))).float() for g in grids)
    assert a.shape == b.shape and (a - b).abs().mean() < 1.0  # same noise, weights moved by lr 1e-12: same grid
    rows = [json.loads(line) for line in (tmp_path / "v" / "metrics.jsonl").read_text().splitlines()]
    names = {k for r in rows for k in r if k.startswith("eval_val_")}
    assert names == {f"eval_val_{t}_l1_to_real" for t in ("unconditional", "image_to_video", "extension",
                                                           "interpolation")}
    l1 = {k: v for r in rows for k, v in r.items() if k.startswith("eval_val_")}
    assert all(0 < v < 2 for v in l1.values())


def test_an_unknown_validation_task_is_refused_before_training(tmp_path, capsys):
    cfg = cfg_file(tmp_path, "bad", validate_every=1, validate_tasks=["infil"])
    assert main(["train", cfg, "--run-dir", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "cannot be validated from held-out clips" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_lora_fine_tune_trains_only_adapters_resumes_and_samples(base, tmp_path):
    """train.lora on the base: checkpoints hold adapters + the base's fingerprint; resume and sampling read the
    base again."""
    pytest.importorskip("peft")
    _, ckpt = base
    lora = {"rank": 4, "target_modules": ["qkv", "proj", "film"]}
    cfg = cfg_file(tmp_path, "lora", vtv="ptss", init_from=str(ckpt), steps=2, lora=lora, lr=1e-2)
    run = tmp_path / "lora"
    assert main(["train", cfg, "--run-dir", str(run), "--no-progress", "--max-steps", "1"]) == 0
    first = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert first["model"] and all(".lora_" in k for k in first["model"]) and all(".lora_" in k for k in first["ema"])
    assert first["started_from"]["lora_base_fingerprint"] and first["started_from"]["kind"] == "checkpoint"
    assert main(["train", cfg, "--run-dir", str(run), "--no-progress", "--resume"]) == 0
    second = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert second["step"] == 2 and set(second["model"]) == set(first["model"])
    assert any((second["model"][k] - first["model"][k]).abs().max() > 0 for k in first["model"])
    from fvdm.core.loaded import load_for_sampling
    from fvdm.core.plugins import load_plugins

    loaded = load_for_sampling(run / "checkpoints" / "last.pt", load_plugins())
    frozen = {k: v for k, v in loaded.model.state_dict().items() if ".lora_" not in k}
    base_ema = torch.load(ckpt, weights_only=True)["ema"]
    assert all(torch.equal(frozen[k.replace("base_layer.", "")] if k not in frozen else frozen[k],
                           base_ema[k.replace("base_layer.", "")]) for k in frozen)
    out = tmp_path / "out"
    assert main(["sample", "--checkpoint", str(run / "checkpoints" / "last.pt"), "--task", "image_to_video",
                 "--video", str(_clip(tmp_path)), "--formats", "png", "--no-progress", "--out", str(out)]) == 0


def _clip(tmp_path):
    pytest.importorskip("av")
    from fvdm.core.media import write_mp4

    path = tmp_path / "clip.mp4"
    write_mp4(torch.rand(1, 4, 1, 16, 16) * 2 - 1, path, fps=8)
    return path


def test_a_lora_checkpoint_refuses_another_base_on_resume(base, tmp_path, capsys):
    pytest.importorskip("peft")
    import shutil

    root, ckpt = base
    start = tmp_path / "base.pt"
    shutil.copy(ckpt, start)
    cfg = cfg_file(tmp_path, "lora2", vtv="ptss", init_from=str(start), steps=2,
                   lora={"rank": 4, "target_modules": ["qkv", "proj", "film"]})
    assert main(["train", cfg, "--run-dir", str(tmp_path / "r"), "--no-progress", "--max-steps", "1"]) == 0
    shutil.copy(ckpt.parent / "step-00000001.pt", start)  # the same architecture, other weights
    capsys.readouterr()
    assert main(["train", cfg, "--run-dir", str(tmp_path / "r"), "--no-progress", "--resume"]) != 0
    assert "holds LoRA adapters of base" in capsys.readouterr().err


def test_a_float64_lora_run_fingerprints_its_base_as_sampling_reads_it(base, tmp_path):
    """train.dtype float64: the base is fingerprinted in float32 at set-up, as sampling (which reads the base in
    float32) checks it, so the float64 run's adapters load for sampling and for a resume."""
    pytest.importorskip("peft")
    _, ckpt = base
    lora = {"rank": 4, "target_modules": ["qkv", "proj", "film"]}
    cfg = cfg_file(tmp_path, "lora64", vtv="ptss", init_from=str(ckpt), steps=2, lora=lora, dtype="float64")
    run = tmp_path / "lora64"
    assert main(["train", cfg, "--run-dir", str(run), "--no-progress", "--max-steps", "1"]) == 0
    assert main(["train", cfg, "--run-dir", str(run), "--no-progress", "--resume"]) == 0
    from fvdm.core.loaded import load_for_sampling
    from fvdm.core.plugins import load_plugins

    load_for_sampling(run / "checkpoints" / "last.pt", load_plugins())  # the fingerprint check passes


def test_validation_reads_its_clips_from_held_out_shards(tmp_path):
    """Training from webdataset shards: train.validate_every samples the first clips of the config's
    `validation` data (held-out shards), the same clips at every validation; before, every validation failed
    (a stream has no __getitem__)."""
    pytest.importorskip("webdataset")
    import json

    from fvdm.plugins.datasets.pack import make_digits

    for split, n in (("train", 16), ("val", 4)):
        make_digits(tmp_path / split, split=split, num_clips=n, resolution=16, num_frames=4, progress=False)
    shards = {"name": "webdataset", "num_frames": 4, "channels": 1, "offset": "start"}
    path = tmp_path / "shards.yaml"
    path.write_text(yaml.safe_dump({
        "name": "shards", "run_root": str(tmp_path / "runs"),
        "data": {**shards, "urls": str(tmp_path / "train")},
        "validation": {**shards, "urls": str(tmp_path / "val"), "shuffle_shards": False},
        "backbone": {"name": "unet_video", "base_channels": 8, "channel_mult": [1, 2], "temporal_levels": [1]},
        "sample": {"sampler": {"name": "ddim", "clip_x0": 1.0}, "steps": 2},
        "train": {"steps": 2, "batch_size": 2, "log_every": 1, "ckpt_every": 2, "tensorboard": False,
                  "validate_every": 1, "validate_clips": 2, "validate_tasks": ["image_to_video"]},
    }))
    assert main(["train", str(path), "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 0
    assert sorted(g.name for g in (tmp_path / "run" / "validation").glob("step_*.png")) == [
        "step_0000001.png", "step_0000002.png"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sum("eval_val_image_to_video_l1_to_real" in r for r in rows) == 2
