"""A diffusers-format Wan directory in fvdm: sample every task from a config with a prompt, train from it,
resume and sample the run after the directory is gone; bad input refused in one line before any compute.

The directory is laid out as a real download (transformer/, tokenizer/, text_encoder/), with tiny random
weights written by diffusers and transformers themselves.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from fvdm.cli import main  # noqa: E402
from fvdm.plugins.backbones.wan_tiny import make_text_encoder_dir  # noqa: E402

FRAMES, RES, CHANNELS = 5, 16, 1


def make_wan_dir(root, *, channels=CHANNELS, layers=2, seed=0):
    from fvdm.plugins.backbones.wan_tiny import make_tiny_wan_dir

    return make_tiny_wan_dir(root, channels=channels, layers=layers, seed=seed, vae=False)


def test_make_tiny_wan_writes_a_directory_every_part_reads(tmp_path, capsys):
    from fvdm.core.plugins import load_plugins
    from fvdm.core.build import build_model

    dst = tmp_path / "wan"
    assert main(["data", "make-tiny-wan", str(dst), "--channels", "4"]) == 0
    assert sorted(p.name for p in dst.iterdir()) == ["text_encoder", "tokenizer", "transformer", "vae"]
    assert "pretrained: " in capsys.readouterr().out
    m = build_model(load_plugins(), {"name": "wan", "size": "tiny", "in_channels": 4, "pretrained": str(dst)},
                    load_pretrained=True)
    assert m.pretrained_info["subfolder"] == "transformer"
    assert main(["data", "make-tiny-wan", str(dst)]) == 2  # not empty: refused, nothing overwritten
    assert "is not empty" in capsys.readouterr().err


def test_make_tiny_wan_default_vae_reads_with_the_printed_autoencoder_spec(tmp_path, capsys):
    # the printed hint is what a user pastes into `fvdm data pack --autoencoder wan_vae:DIR` and configs
    from fvdm.core.plugins import load_plugins

    dst = tmp_path / "wan"
    assert main(["data", "make-tiny-wan", str(dst)]) == 0
    assert f"autoencoder {{name: wan_vae, path: {dst}}}" in capsys.readouterr().out
    ae = load_plugins()["autoencoders"].build({"name": "wan_vae", "path": str(dst)})
    z = ae.encode(torch.zeros(1, 5, 3, 16, 16))
    assert tuple(z.shape) == (1, 2, 16, 2, 2)


def config(root, wan_dir, **over):
    cfg = {
        "name": "wan", "run_root": str(root / "runs"),
        "data": {"name": "shape_only", "num_frames": FRAMES, "channels": CHANNELS, "resolution": RES},
        "backbone": {"name": "wan", "size": "tiny", "pretrained": str(wan_dir)},
        "noise_schedule": "rectified_flow", "vtv": "ptss",
        "text_encoder": {"name": "umt5", "path": str(wan_dir), "max_length": 16},
        "sample": {"sampler": {"name": "unipc"}, "steps": 3},
        "train": {"steps": 2, "batch_size": 2, "log_every": 1, "ckpt_every": 1, "tensorboard": False,
                  "ema_decay": 0.5},
    }
    cfg.update(over)
    path = root / "wan.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    root = tmp_path_factory.mktemp("wan")
    wan_dir = make_wan_dir(root / "Wan-tiny")
    return root, wan_dir, config(root, wan_dir)


def sample(source, out, *args):
    flag = "--checkpoint" if str(source).endswith(".pt") else "--config"
    return main(["sample", flag, str(source), "--formats", "png,npz", "--no-progress", "--out", str(out), *args])


def frames_of(out, stem):
    with np.load(out / f"{stem}.npz") as z:
        return torch.from_numpy(z[z.files[0]])


def write_clip(path, frames=FRAMES):
    from fvdm.core.media import write_mp4

    g = torch.Generator().manual_seed(1)
    clip = torch.rand(1, frames, CHANNELS, RES, RES, generator=g) * 2 - 1
    write_mp4(clip, path, fps=8)
    return path


TASKS = [
    ("unconditional", []),
    ("image_to_video", ["--image", "IMAGE"]),
    ("interpolation", ["--image", "IMAGE", "--last", "IMAGE"]),
    ("infill", ["--video", "VIDEO"]),
    ("extension", ["--video", "VIDEO", "--context-frames", "2"]),
    ("long_video", ["--frames", "8", "--overlap", "2"]),
    ("df_rollout", ["--frames", "7"]),
    ("image_to_video", ["--image", "IMAGE", "--history-guidance", "2.0"]),
]


@pytest.mark.parametrize("task,args", TASKS, ids=[f"{t}{'-hg' if '--history-guidance' in a else ''}" for t, a in TASKS])
def test_every_task_samples_a_pretrained_wan_from_its_config_with_a_prompt(wan, tmp_path, task, args):
    pytest.importorskip("av")
    from PIL import Image

    root, _, cfg = wan
    image = tmp_path / "first.png"
    Image.fromarray(np.full((RES, RES), 200, dtype=np.uint8)).save(image)
    video = write_clip(tmp_path / "clip.mp4") if "VIDEO" in args else None
    args = [str(image) if a == "IMAGE" else str(video) if a == "VIDEO" else a for a in args]
    assert sample(cfg, tmp_path / "out", "--task", task, "--prompt", "a digit moving right", "--cfg-scale", "4",
                  "--negative-prompt", "blurry", *args) == 0
    meta = json.loads((tmp_path / "out" / f"{task}.json").read_text())
    assert meta["prompt"] == "a digit moving right" and meta["negative_prompt"] == "blurry"
    assert meta["config"] == str(cfg) and meta["checkpoint"] is None
    pre = meta["provenance"]["training"]["pretrained"]
    assert pre["directory_fingerprint"] and len(pre["base_fingerprint"]) == 64  # which download, which weights
    out = frames_of(tmp_path / "out", task)
    assert torch.isfinite(out).all()
    if task == "image_to_video":  # the given frame is kept (identity autoencoder: exactly, up to uint8 rounding)
        assert (out[0, 0].float() - 200).abs().max() <= 1


def test_prompt_changes_the_sample_and_cfg_needs_no_prompt_for_text_free_sampling(wan, tmp_path):
    root, _, cfg = wan
    for name, extra in (("a", ["--prompt", "one"]), ("b", ["--prompt", "two words here"]), ("c", [])):
        assert sample(cfg, tmp_path, "--task", "unconditional", "--name", name, "--cfg-scale", "3", *extra) == 0
    a, b, c = (frames_of(tmp_path, n).float() for n in "abc")
    assert (a - b).abs().max() > 0 and (a - c).abs().max() > 0


def test_train_from_pretrained_then_resume_and_sample_without_the_directory(tmp_path):
    wan_dir = make_wan_dir(tmp_path / "Wan-tiny")
    cfg = config(tmp_path, wan_dir, data={"name": "moving_digits", "num_frames": FRAMES, "resolution": RES,
                                          "num_clips": 8})
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--run-dir", str(run), "--no-progress", "--max-steps", "1"]) == 0
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["started_from"]["fingerprint"] and ckpt["started_from"]["subfolder"] == "transformer"
    # the first step trained the pretrained weights, not a random init
    from fvdm.core.pretrained import read_state_dict

    base = read_state_dict(wan_dir / "transformer", expected={k[len("transformer."):]: tuple(v.shape)
                                                              for k, v in ckpt["model"].items()},
                           public_copy="test", what="test")
    moved = max((ckpt["model"][f"transformer.{k}"] - v).abs().max().item() for k, v in base.items())
    assert 0 < moved < 1e-2
    text_dir = tmp_path / "text"
    text_dir.mkdir()
    for sub in ("tokenizer", "text_encoder"):
        shutil.copytree(wan_dir / sub, text_dir / sub)
    shutil.rmtree(wan_dir)  # resume and sampling never read the pretrained directory again
    assert main(["train", str(cfg), "--run-dir", str(run), "--no-progress", "--resume"]) == 0
    resumed = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert resumed["step"] == 2 and resumed["started_from"] == ckpt["started_from"]
    stored = json.loads(resumed["config"])
    assert stored["text_encoder"]["path"] == str(wan_dir)  # sampling with a prompt needs the encoder: moved here
    assert sample(run / "checkpoints" / "last.pt", tmp_path / "out", "--task", "unconditional") == 0


@pytest.mark.parametrize("case,expect", [
    ("no_text", "is not text-conditioned"),
    ("width", "gives 8-wide embeddings but the backbone reads 16"),
    ("no_encoder", "a prompt needs a text encoder"),
    ("layers", "num_layers 1 (want 2)"),
    ("missing_shard", "partial or corrupt"),
    ("no_pretrained", "names no weights"),
])
def test_bad_pretrained_inputs_are_one_line_before_any_compute(tmp_path, capsys, case, expect):
    wan_dir = make_wan_dir(tmp_path / "Wan-tiny", layers=1 if case == "layers" else 2)
    over = {}
    if case == "no_text":
        over = {"backbone": {"name": "latte_tiny", "pretrained": str(wan_dir)}, "noise_schedule": "ddpm"}
    elif case == "width":
        make_text_encoder_dir(tmp_path / "narrow", dim=8)
        over = {"text_encoder": {"name": "umt5", "path": str(tmp_path / "narrow"), "max_length": 16}}
    elif case == "no_encoder":
        over = {"text_encoder": None}
    elif case == "missing_shard":
        shards = sorted((wan_dir / "transformer").glob("*.safetensors"))
        shards[-1].unlink()
    elif case == "no_pretrained":
        over = {"backbone": {"name": "wan", "size": "tiny"}}
    cfg = config(tmp_path, wan_dir, **over)
    if case == "no_text":  # the latte backbone refuses a wan directory first; test the prompt check on its own
        from fvdm.core.loaded import LoadedModel
        from fvdm.core.config import load_config
        from fvdm.core.plugins import load_plugins

        loaded = LoadedModel(model=None, schedule=None, autoencoder=None, config=load_config(cfg, load_plugins()),
                             num_frames=FRAMES, channels=1, resolution=RES, num_classes=0, latent_channels=1,
                             latent_resolution=RES, conditioning=frozenset({"class"}))
        with pytest.raises(ValueError, match=expect):
            loaded.text_encoder(load_plugins())
        return
    capsys.readouterr()  # what writing the fixture printed
    assert sample(cfg, tmp_path / "out", "--task", "unconditional", "--prompt", "x") == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "FVDM_DEBUG" not in line]
    assert len(err) == 1 and err[0].startswith("fvdm sample: error:") and expect in err[0], err
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def wan_vae(tmp_path_factory):
    """The same setup with Wan's causal video VAE (tiny, random): 9 RGB pixel frames <-> 3 latents."""
    from fvdm.core.plugins import load_plugins

    root = tmp_path_factory.mktemp("wanvae")
    vae = load_plugins()["autoencoders"].build({"name": "wan_vae", "variant": "tiny"})
    wan_dir = make_wan_dir(root / "Wan-tiny", channels=vae.latent_channels)
    cfg = config(root, wan_dir, data={"name": "shape_only", "num_frames": 9, "channels": 3, "resolution": 32},
                 autoencoder={"name": "wan_vae", "variant": "tiny"})
    return root, cfg


@pytest.mark.parametrize("task,args,expect", [
    ("image_to_video", ["--image", "IMAGE"], None),
    ("extension", ["--video", "VIDEO", "--context-frames", "5"], None),
    ("infill", ["--video", "VIDEO", "--given", "0,5,6,7,8"], None),
    ("extension", ["--video", "VIDEO", "--context-frames", "4"], "--context-frames: 4 pixel frames do not encode"),
    ("infill", ["--video", "VIDEO", "--given", "0,1"], "--given: given pixel frames [0, 1] cover only part of latent"),
])
def test_causal_vae_maps_given_pixel_frames_to_latents_or_says_which_would(wan_vae, tmp_path, capsys, task, args,
                                                                           expect):
    pytest.importorskip("av")
    from PIL import Image

    from fvdm.core.media import write_mp4

    root, cfg = wan_vae
    image = tmp_path / "first.png"
    Image.fromarray(np.full((32, 32, 3), 200, dtype=np.uint8)).save(image)
    video = tmp_path / "clip.mp4"
    write_mp4(torch.rand(1, 9, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1, video, fps=8)
    args = [str(image) if a == "IMAGE" else str(video) if a == "VIDEO" else a for a in args]
    capsys.readouterr()
    code = sample(cfg, tmp_path / "out", "--task", task, "--prompt", "a", *args)
    if expect is None:
        assert code == 0
        assert frames_of(tmp_path / "out", task).shape[1] == 9  # 3 latents decode to 1 + 4 * 2 pixel frames
        return
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "FVDM_DEBUG" not in line]
    assert code == 2 and len(err) == 1 and expect in err[0], err


def test_non_square_clips_sample_at_their_own_height_and_width(wan, tmp_path):
    """Wan runs at 480x832: a shape_only height/width reaches the latents, the noise and the decoded frames."""
    root, wan_dir, _ = wan
    cfg = config(tmp_path, wan_dir, data={"name": "shape_only", "num_frames": FRAMES, "channels": CHANNELS,
                                          "height": 16, "width": 24})
    assert sample(cfg, tmp_path / "out", "--task", "unconditional", "--prompt", "wide") == 0
    assert frames_of(tmp_path / "out", "unconditional").shape[-2:] == (16, 24)
