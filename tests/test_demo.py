"""End to end: `fvdm demo --quick` trains, samples every task, writes the report; `fvdm sample` on its checkpoint."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from fvdm.cli import main


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """`fvdm demo --quick` with its output sent to files (not a terminal), as `make demo > log` does."""
    out = tmp_path_factory.mktemp("demo")
    args = ["demo", "--out", str(out), "--quick", "--threads", "1", "--baseline-minutes", "1"]
    stdout, stderr = io.StringIO(), io.StringIO()  # isatty() is False, whatever pytest's capture mode
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        assert main(args) == 0
    return out, stdout.getvalue() + stderr.getvalue()


@pytest.fixture(scope="module")
def demo_dir(demo_run):
    return demo_run[0]


def test_demo_logs_lines_not_progress_bars_when_not_on_a_terminal(demo_run):
    _, log = demo_run
    assert "\r" not in log  # tqdm redraws its bar with carriage returns
    assert "step 2/2 | loss" in log  # the engine's log line instead


def test_demo_writes_report_for_every_task(demo_dir):
    res = json.loads((demo_dir / "results.json").read_text())
    tasks = {r["task"] for r in res["rows"]}
    assert {"unconditional", "image_to_video", "interpolation", "infill", "extension", "long_video",
            "df_rollout"} <= tasks
    for r in res["rows"]:
        assert (demo_dir / f"{r['task']}.gif").stat().st_size > 0 and (demo_dir / f"{r['task']}.png").is_file()
        if "given_exact" in r:
            assert r["given_exact"] is True  # both FVDM and the baseline put the given frames back exactly
    assert any(r["mode"] == "synchronized model + vanilla_replacement" for r in res["rows"])
    assert res["baseline_train"]["step"] == 2
    report = (demo_dir / "report.md").read_text()
    assert "| long_video | fvdm |" in report and "vanilla_replacement" in report
    assert not list(demo_dir.glob(".fvdm-tmp-*"))


def test_demo_samples_and_scores_the_committed_model(demo_dir):
    from fvdm.commands.demo_committed import COMMITTED_DIR, read_provenance

    prov = read_provenance(COMMITTED_DIR)  # the committed weights match their recorded hash
    res = json.loads((demo_dir / "results.json").read_text())
    committed = [r for r in res["rows"] if r["file"].startswith("committed_")]
    assert {r["task"] for r in committed} >= {"unconditional", "image_to_video", "extension", "long_video"}
    assert all((demo_dir / f"{r['file']}.png").is_file() for r in committed)
    assert all(r["given_exact"] for r in committed if "given_exact" in r)
    assert committed[0]["frames"] == 8  # the committed model samples its own clip shape, not the quick demo's
    models = res["models"]
    assert models["committed"]["sha256"] == prov["sha256"]
    for key in ("demo", "committed"):
        ident = models[key]["identity"]
        assert set(ident) == {"image_to_video", "extension", "interpolation"}
        assert all(0.0 <= v["identity_f1"] <= 1.0 for v in ident.values())
    # real clips kept against their own given frames: the ceiling (the detector's error keeps it below 1)
    assert all(v > 0.8 for v in models["committed"]["real_identity"].values())
    report = (demo_dir / "report.md").read_text()
    assert "| committed fine-tuned FVDM model |" in report and "| real clips (val split) |" in report
    assert f"fine-tuned {prov['step']} steps" in report


def test_demo_refuses_a_tampered_or_missing_model_before_training(tmp_path, capsys):
    import shutil

    from fvdm.commands.demo_committed import COMMITTED_DIR

    bad = tmp_path / "model"
    shutil.copytree(COMMITTED_DIR, bad)
    blob = bytearray((bad / "model.safetensors").read_bytes())
    blob[-1] ^= 1  # one flipped bit in the last weight
    (bad / "model.safetensors").write_bytes(bytes(blob))
    out = tmp_path / "out"
    assert main(["demo", "--quick", "--out", str(out), "--model", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "model.safetensors has sha256" in err[0] and "git checkout" in err[0]
    assert err[1:] == ["(set FVDM_DEBUG=1 for a traceback)"]  # the message itself is one line
    assert main(["demo", "--quick", "--out", str(out), "--model", str(tmp_path / "nowhere")]) == 2
    assert "provenance.json is missing" in capsys.readouterr().err
    assert not out.exists()  # refused before any training: nothing written


def test_sample_cli_and_batch_jobs(demo_dir, tmp_path):
    ckpt = str(demo_dir / "run" / "checkpoints" / "last.pt")
    out = tmp_path / "s"
    pytest.importorskip("av", reason="mp4 output needs the video extra (PyAV)")
    assert main(["sample", "--checkpoint", ckpt, "--task", "image_to_video", "--image", str(demo_dir / "infill.png"),
                 "--steps", "2", "--seed", "1", "--out", str(out), "--no-progress"]) == 0  # resized with a warning
    want = {"image_to_video.gif", "image_to_video.png", "image_to_video.mp4", "image_to_video.json"}
    assert {p.name for p in out.iterdir()} == want
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(f"- {{task: long_video, frames: 10, overlap: 2}}\n"
                    f"- {{task: extension, video: {demo_dir / 'long_video.gif'}, context_frames: 2, frames: 6}}\n")
    assert main(["sample", "--checkpoint", ckpt, "--jobs", str(jobs), "--steps", "2", "--formats", "gif",
                 "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    meta = json.loads((tmp_path / "b" / "00_long_video.json").read_text())
    assert meta["frames"] == 10
    assert json.loads((tmp_path / "b" / "01_extension.json").read_text())["frames"] == 6


def test_sample_cli_errors_leave_no_files(demo_dir, tmp_path, capsys):
    ckpt = str(demo_dir / "run" / "checkpoints" / "last.pt")
    out = tmp_path / "e"
    assert main(["sample", "--checkpoint", ckpt, "--task", "interpolate", "--out", str(out)]) == 2
    assert "Did you mean 'interpolation'" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", ckpt, "--task", "long_video", "--window", "64", "--out", str(out)]) == 2
    assert "exceeds the checkpoint's frame count" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", ckpt, "--task", "extension", "--video", str(demo_dir / "infill.gif"),
                 "--context-frames", "40", "--out", str(out), "--no-progress"]) == 2
    assert "needs at least 40" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", ckpt, "--task", "image_to_video", "--image", str(demo_dir / "infill.png"),
                 "--on-mismatch", "error", "--out", str(out), "--no-progress"]) == 2
    assert "--on-mismatch resize" in capsys.readouterr().err
    assert not out.exists() or not any(p for p in out.rglob("*") if p.is_file())
