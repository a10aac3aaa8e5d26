"""`fvdm sample`: plugin specs (--schedule/--sampler + params), task-declared inputs, provenance in NAME.json."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml

from fvdm.cli import main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    cfg = root / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "tiny", "run_root": str(root / "runs"),
        "data": {"name": "moving_digits", "num_frames": 4, "resolution": 16, "num_clips": 8},
        "backbone": {"name": "latte_tiny"},
        "train": {"steps": 1, "batch_size": 2, "log_every": 1, "ckpt_every": 1, "tensorboard": False},
        "sample": {"sampler": {"name": "ddim", "clip_x0": 1.0}, "steps": 2},
    }))
    assert main(["train", str(cfg), "--run-dir", str(root / "run"), "--no-progress"]) == 0
    return str(root / "run" / "checkpoints" / "last.pt")


def sample(ckpt, out, *args):
    return main(["sample", "--checkpoint", ckpt, "--formats", "png", "--no-progress", "--out", str(out), *args])


def meta(path):
    return json.loads(path.read_text())


def test_schedule_and_sampler_specs_are_validated_and_recorded_in_full(ckpt, tmp_path):
    assert sample(ckpt, tmp_path, "--task", "unconditional", "--schedule", "pyramid", "--schedule-param", "u=0.5",
                  "--schedule-param", "spacing=leading", "--sampler-param", "eta=0.3") == 0
    m = meta(tmp_path / "unconditional.json")
    assert m["schedule"] == {"name": "pyramid", "u": 0.5, "spacing": "leading", "shift": 1.0, "steps_offset": 1}
    # parameters without a name update the checkpoint's sampler: its clip_x0 is kept
    assert m["sampler"] == {"name": "ddim", "eta": 0.3, "clip_x0": 1.0}
    assert m["task_spec"]["name"] == "unconditional" and m["task_spec"]["mode"] == "fvdm"
    # --u / --eta are shorthands for the same parameters
    assert sample(ckpt, tmp_path / "b", "--task", "unconditional", "--schedule", "pyramid", "--u", "0.5",
                  "--schedule-param", "spacing=leading", "--eta", "0.3") == 0
    b = meta(tmp_path / "b" / "unconditional.json")
    assert (b["schedule"], b["sampler"]) == (m["schedule"], m["sampler"])


@pytest.mark.parametrize("args,expect", [
    (["--task", "unconditional", "--schedule", "pyramid", "--schedule-param", "uu=1"],
     "schedule 'pyramid' (builtin): uu: unknown parameter. Did you mean 'u'?"),
    (["--task", "unconditional", "--u", "0.5"],
     "schedule 'standard' (builtin): u: unknown parameter"),
    (["--task", "unconditional", "--sampler", "ddpm", "--eta", "0.5"], "sampler 'ddpm' (builtin): eta: unknown"),
    (["--task", "unconditional", "--schedule", "pyramd"], "Did you mean 'pyramid'?"),
    (["--task", "unconditional", "--schedule-param", "u"], "--schedule-param expects KEY=VALUE"),
    (["--task", "image_to_video", "--frames", "3"], "task 'image_to_video' takes no --frames"),
    (["--task", "unconditional", "--task-param", "overlapp=2"], "task 'unconditional' (builtin): overlapp: unknown"),
    (["--task", "image_to_video", "--image", "missing.png"], "task 'image_to_video' inputs: image: Path does not "
                                                             "point to a file"),
    (["--task", "infill", "--input", "given=1,x"], "expected comma-separated frame indices"),
    (["--task", "unconditional", "--history-guidance", "2"],
     "--history-guidance 2 needs context frames and task 'unconditional' has none"),
    (["--task", "long_video", "--history-level", "1.5"], "--history-level must be in (0, 1]"),
    (["--task", "causal_rollout", "--cache"], "--cache needs a backbone with a key/value cache"),
    (["--task", "long_video", "--cache"], "task 'long_video' takes no --cache"),
])
def test_bad_specs_and_inputs_are_one_line_before_any_work(ckpt, tmp_path, capsys, args, expect):
    assert sample(ckpt, tmp_path / "o", *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert expect in err[0] and len(err) == 2
    assert not (tmp_path / "o").exists()


def test_history_guidance_and_multistep_sampler_from_the_command_line(ckpt, tmp_path):
    assert sample(ckpt, tmp_path, "--task", "long_video", "--frames", "6", "--sampler", "dpmpp_2m",
                  "--history-guidance", "2", "--history-level", "0.8") == 0
    m = meta(tmp_path / "long_video.json")
    assert (m["history_guidance"], m["history_level"]) == (2.0, 0.8)
    assert m["sampler"]["name"] == "dpmpp_2m" and m["frames"] == 6


def test_task_inputs_from_files_recorded_with_sha256(ckpt, tmp_path):
    assert sample(ckpt, tmp_path, "--task", "unconditional", "--name", "first") == 0
    first = tmp_path / "first.png"
    assert sample(ckpt, tmp_path, "--task", "interpolation", "--image", str(first), "--input", f"last={first}") == 0
    m = meta(tmp_path / "interpolation.json")
    digest = hashlib.sha256(first.read_bytes()).hexdigest()
    assert m["inputs"] == {"image": {"path": str(first), "sha256": digest},
                           "last": {"path": str(first), "sha256": digest}}


def test_jobs_file_takes_specs_as_mappings_and_task_options(ckpt, tmp_path, capsys):
    assert sample(ckpt, tmp_path, "--task", "unconditional", "--name", "seed") == 0
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(yaml.safe_dump([
        {"task": "unconditional", "schedule": {"name": "trapezoid", "u": 0.5}},
        {"task": {"name": "long_video", "overlap": 1}, "frames": 6, "schedule": {"name": "pyramid"}},
        {"task": "df_rollout", "frames": 6, "u": 0.5},
        {"task": "infill", "inputs": {"video": str(tmp_path / "seed.png"), "given": [0]}},
    ]))
    (tmp_path / "seed.png").unlink()
    # a missing input file is found before the first job samples: nothing is written
    assert main(["sample", "--checkpoint", ckpt, "--jobs", str(jobs), "--formats", "png", "--no-progress",
                 "--out", str(tmp_path / "jobs")]) == 2
    assert "job 3 (03_infill): task 'infill' inputs: video: Path does not point to a file" in capsys.readouterr().err
    assert not (tmp_path / "jobs").exists()
    jobs.write_text(yaml.safe_dump(yaml.safe_load(jobs.read_text())[:3]))
    assert main(["sample", "--checkpoint", ckpt, "--jobs", str(jobs), "--formats", "png", "--no-progress",
                 "--out", str(tmp_path / "jobs")]) == 0
    j = [meta(tmp_path / "jobs" / f"{n}.json") for n in ("00_unconditional", "01_long_video", "02_df_rollout")]
    assert j[0]["schedule"]["name"] == "trapezoid" and j[0]["schedule"]["u"] == 0.5
    assert j[1]["task_spec"]["overlap"] == 1 and j[1]["task_spec"]["num_frames"] == 6 and j[1]["frames"] == 6
    assert j[1]["schedule"]["name"] == "pyramid" and j[1]["schedule"]["u"] == 1.0
    # df_rollout samples its windows with its own schedule option: --u sets that one
    assert j[2]["task_spec"]["schedule"] == j[2]["schedule"] == {
        "name": "pyramid", "u": 0.5, "spacing": "uniform", "shift": 1.0, "steps_offset": 1}


def test_describe_lists_task_options_inputs_and_plugin_parameters(capsys):
    assert main(["sample", "--task", "infill", "--schedule", "pyramid", "--describe"]) == 0
    out = capsys.readouterr().out
    assert "given: list[int] | None = None  indices of the given frames" in out
    assert "video: file | None = None" in out
    assert "u: float = 1.0  uncertainty scale" in out


def test_progress_is_log_lines_off_a_terminal(ckpt, tmp_path, capsys):
    assert main(["sample", "--checkpoint", ckpt, "--formats", "png", "--out", str(tmp_path), "--task", "long_video",
                 "--frames", "6", "--overlap", "2"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert "long_video: window 1/2 done" in err and "long_video: window 2/2 done" in err
