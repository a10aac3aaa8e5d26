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


KEYFRAME_PLUGIN = """
from fvdm.core import hookimpl
from tests.task_fixtures import LastFrame as _LastFrame, NoiseOnly as AnyFrames


class LastFrame(_LastFrame):
    '''Generate a window that ends at the given frame.'''

    def check_sampling(self, sampling):
        super().check_sampling(sampling)
        if sampling.steps > 50:
            raise ValueError("last_frame samples at most 50 steps; lower --steps")

    def read_inputs(self, given, reader):
        raise AssertionError("inputs read although check_sampling refused the settings")


@hookimpl
def fvdm_register_tasks(registry):
    registry.add("last_frame", LastFrame)
    registry.add("any_frames", AnyFrames)
"""


def test_sample_json_names_the_distribution_of_a_third_party_task(ckpt, tmp_path, monkeypatch):
    from tests.plugin_fixtures import make_dist, on_sys_path

    on_sys_path(monkeypatch, make_dist(tmp_path / "site", "fvdm-lastframe", "0.3.1", "fvdm_lastframe_cli",
                                       KEYFRAME_PLUGIN))
    assert sample(ckpt, tmp_path, "--task", "any_frames", "--schedule", "pyramid") == 0
    p = meta(tmp_path / "any_frames.json")["provenance"]
    assert p["task"] == {"name": "any_frames", "origin": "fvdm-lastframe 0.3.1"}
    assert p["sampler"] == {"name": "ddim", "origin": "builtin"}
    assert p["schedule"] == {"name": "pyramid", "origin": "builtin"}
    # what trained the checkpoint, as the checkpoint recorded it
    assert p["training"]["backbone"]["name"] == "latte_tiny" and p["training"]["backbone"]["origin"] == "builtin"
    assert p["training"]["vtv"]["origin"] == "builtin"


def test_a_plugin_tasks_check_runs_before_its_inputs_are_read(ckpt, tmp_path, capsys, monkeypatch):
    from tests.plugin_fixtures import make_dist, on_sys_path

    on_sys_path(monkeypatch, make_dist(tmp_path / "site", "fvdm-lastframe", "0.3.1", "fvdm_lastframe_check",
                                       KEYFRAME_PLUGIN))
    assert sample(ckpt, tmp_path / "o", "--task", "last_frame", "--steps", "60") == 2
    assert "last_frame samples at most 50 steps; lower --steps" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_unknown_task_points_at_the_plugin_that_failed_to_load(ckpt, tmp_path, capsys, monkeypatch):
    """A misspelled hook drops the plugin whole; the unknown-name error says which plugin and why."""
    from tests.plugin_fixtures import make_dist, on_sys_path

    source = KEYFRAME_PLUGIN.replace("def fvdm_register_tasks(", "def fvdm_register_task(")
    on_sys_path(monkeypatch, make_dist(tmp_path / "site", "fvdm-keyframes", "0.2", "fvdm_keyframes_typo", source))
    assert sample(ckpt, tmp_path / "o", "--task", "last_frame") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("fvdm sample: error: unknown tasks 'last_frame'.") and len(err) == 2
    assert ("plugins that failed to load: fvdm-keyframes (fvdm-keyframes 0.2): unknown hook 'fvdm_register_task': "
            "did you mean fvdm_register_tasks?") in err[0]


def test_batch_size_gives_several_samples_of_the_given_frame(ckpt, tmp_path):
    import numpy as np
    from PIL import Image

    first = tmp_path / "first.png"
    Image.fromarray((np.random.default_rng(0).random((16, 16)) * 255).astype(np.uint8)).save(first)
    assert sample(ckpt, tmp_path, "--task", "image_to_video", "--image", str(first), "--batch-size", "3",
                  "--formats", "npz") == 0
    m = meta(tmp_path / "image_to_video.json")
    assert m["batch"] == 3 and m["samples_per_context"] == 3
    video = np.load(tmp_path / "image_to_video.npz")["videos"]  # uint8 (3, F, C, H, W)
    assert video.shape[0] == 3
    assert (video[:, 0] == video[:1, 0]).all()  # every sample keeps the given frame
    assert not (video[0, 1:] == video[1, 1:]).all() and not (video[1, 1:] == video[2, 1:]).all()


@pytest.mark.parametrize("args,expect,absent", [
    (["--task", "infill", "--given", "1,x"],
     "task 'infill' inputs: given: expected comma-separated frame indices like 0,2,4, got '1,x'",
     ["Value error", "(got"]),
    (["--task", "infill", "--video", "{png}"],
     "video one.png has 1 frame(s) but this task needs at least 4; give a video with at least 4 frames",
     ["--context-frames"]),
    (["--task", "extension", "--video", "{png}", "--context-frames", "2"],
     "needs at least 2; give a longer video or fewer --context-frames", []),
])
def test_task_input_messages_name_the_tasks_own_fix(ckpt, tmp_path, capsys, args, expect, absent):
    assert sample(ckpt, tmp_path, "--task", "unconditional", "--name", "one") == 0
    capsys.readouterr()
    args = [a.format(png=tmp_path / "one.png") for a in args]
    assert sample(ckpt, tmp_path / "o", *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert expect in err[0] and len(err) == 2, err
    assert not [a for a in absent if a in err[0]]


def test_warnings_print_the_message_alone(ckpt, tmp_path, capsys):
    import warnings

    assert sample(ckpt, tmp_path, "--task", "unconditional", "--name", "grid") == 0  # a 68x17 grid image
    capsys.readouterr()
    before = warnings.showwarning
    assert sample(ckpt, tmp_path, "--task", "image_to_video", "--image", str(tmp_path / "grid.png")) == 0
    err = capsys.readouterr().err
    assert "fvdm sample: warning: image grid.png: converting 68x17 -> 16x16 to fit the model\n" in err
    assert "UserWarning" not in err and ".py:" not in err
    assert warnings.showwarning is before  # library use keeps Python's display
