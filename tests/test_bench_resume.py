"""Resumable benchmark runs: a suite run killed with SIGKILL at several points resumes to the numbers of a run
that was never interrupted; another budget is refused in one line; --max-minutes leaves a run that continues."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fvdm.bench.ledger import LedgerError, status
from fvdm.bench.runner import run_suite

from .bench_fixtures import MICRO_PARAMS, digits_plugins

ROOT = Path(__file__).resolve().parents[1]
# ckpt_every 1: a model killed after its first step resumes from that checkpoint
PARAMS = {**MICRO_PARAMS, "ckpt_every": 1, "tasks": ["unconditional", "image_to_video", "extension"],
          "criteria": [{"arm": "ptss", "task": "image_to_video", "metric": "fvd", "why": "the claim"}]}
TIMING = re.compile(r"(^|_)(s|seconds|sec|elapsed|wall|train_s|s_per_step|setup_s|costs)($|_)")
RUN = """
import json, sys
sys.path.insert(0, {root!r})
from tests.bench_fixtures import digits_plugins
from fvdm.bench.runner import run_suite
run_suite("digits_zero_shot", {out!r}, quick=True, seed=3, plugins=digits_plugins(), params=json.loads({params!r}))
"""


def _numbers(doc):
    """results.json without what a rerun may change: timings, provenance, notes about read-back records."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if not TIMING.search(k)}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    return strip({k: doc[k] for k in ("status", "seeds", "metrics", "tables", "config")})


def _run_child(out: Path, crash_at: str | None) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("FVDM_CRASH_AT", None)
    if crash_at:
        env["FVDM_CRASH_AT"] = crash_at
    code = RUN.format(root=str(ROOT), out=str(out), params=json.dumps(PARAMS))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=600).returncode


def test_a_run_killed_while_training_evaluating_and_recording_resumes_to_the_same_numbers(tmp_path):
    clean = run_suite("digits_zero_shot", tmp_path / "clean", quick=True, seed=3, plugins=digits_plugins(),
                      params=PARAMS)
    out = tmp_path / "killed"
    # each kill lands later in the run; each rerun first reads back what the killed one finished
    kills = ["train/checkpoint/1",                 # the first model, right after its first training step
             "eval/synchronized/s3/unconditional",  # mid-evaluation of a model whose training is recorded
             "record/eval/ptss_p0.5/s4"]            # while the last evaluation's record is being written
    for point in kills:
        assert _run_child(out, point) == -signal.SIGKILL, point
    assert list((out / "records").glob(".*.tmp")), "the record being written was left as a temp file"
    st = status(out)
    assert st["pending"] == ["eval/ptss_p0.5/s4"] and len(st["done"]) == 8
    # the killed job restarted from scratch, the others were read back
    resumed = run_suite("digits_zero_shot", out, quick=True, seed=3, plugins=digits_plugins(), params=PARAMS)
    assert _numbers(resumed) == _numbers(clean)
    assert resumed["status"] == "ok" and resumed["jobs"]["done"] == 9
    assert any("8 job(s) read back" in n for n in resumed["notes"])
    # a finished run is never redone: the third call runs no job and writes the same numbers
    again = run_suite("digits_zero_shot", out, quick=True, seed=3, plugins=digits_plugins(), params=PARAMS)
    assert _numbers(again) == _numbers(clean) and any("9 job(s) read back" in n for n in again["notes"])


def test_another_budget_is_refused_in_one_line_and_nothing_is_deleted(tmp_path):
    plugins = digits_plugins()
    out = tmp_path / "run"
    run_suite("digits_zero_shot", out, quick=True, seed=3, plugins=plugins, params=PARAMS, max_minutes=1e-9)
    before = sorted(p.name for p in (out / "records").iterdir())
    changed = {**PARAMS, "quick": {**PARAMS["quick"], "train_steps": 3}}
    with pytest.raises(LedgerError) as err:
        run_suite("digits_zero_shot", out, quick=True, seed=3, plugins=plugins, params=changed)
    msg = str(err.value)
    assert "\n" not in msg and "quick.train_steps=2" in msg and "has 3" in msg and "--fresh" in msg
    assert sorted(p.name for p in (out / "records").iterdir()) == before
    with pytest.raises(LedgerError, match="made with --seed=3; this run has 4"):
        run_suite("digits_zero_shot", out, quick=True, seed=4, plugins=plugins, params=PARAMS)
    with pytest.raises(LedgerError, match="of suite 'digits_zero_shot', not 'finetune_forgetting'"):
        run_suite("finetune_forgetting", out, quick=True, seed=3, plugins=plugins, params=PARAMS)
    # --fresh starts over with the new budget
    run_suite("digits_zero_shot", out, quick=True, seed=3, plugins=plugins, params=PARAMS, max_minutes=1e-9)
    assert (out / "runs").is_dir()  # a model trained under the old budget left its checkpoints
    doc = run_suite("digits_zero_shot", out, quick=True, seed=3, plugins=plugins, params=changed, fresh=True,
                    max_minutes=1e-9)
    assert doc["status"] == "partial (1 of 9 jobs)"
    assert not (out / "runs").exists()  # the old budget's checkpoints went too: nothing resumes from them


def test_max_minutes_stops_after_the_job_in_flight_and_the_same_call_continues(tmp_path, capsys):
    plugins = digits_plugins()
    out = tmp_path / "run"
    seen = []
    for _ in range(20):  # each call runs one job, then stops: the slowest way through a run
        doc = run_suite("digits_zero_shot", out, quick=True, seed=3, plugins=plugins, params=PARAMS,
                        max_minutes=1e-9)
        seen.append(doc["status"])
        on_disk = json.loads((out / "results.json").read_text())
        assert on_disk["status"] == doc["status"]
        if doc["status"] == "ok":
            break
        assert "Continue with the same command" in doc["resume"]
    assert seen[:3] == ["partial (1 of 9 jobs)", "partial (2 of 9 jobs)", "partial (3 of 9 jobs)"]
    assert seen[-1] == "ok" and len(seen) == 9
    clean = run_suite("digits_zero_shot", tmp_path / "clean", quick=True, seed=3, plugins=plugins, params=PARAMS)
    assert _numbers(doc) == _numbers(clean)


def test_partial_reports_give_intervals_over_complete_seeds_only(tmp_path):
    plugins = digits_plugins()
    out = tmp_path / "run"
    for _ in range(5):  # baselines, then train + eval of both models at seed 3: seed 3 complete, seed 4 not
        doc = run_suite("digits_zero_shot", out, quick=True, seed=3, plugins=plugins, params=PARAMS,
                        max_minutes=1e-9)
    assert doc["status"] == "partial (5 of 9 jobs)" and doc["seeds"] == [3]
    assert "seeds [3] complete, [4] not yet" in doc["notes"][0]
    md = (out / "results.md").read_text()
    assert "status: **partial (5 of 9 jobs)**" in md
    st = status(out)
    assert st["pending"] == ["train/synchronized/s4", "eval/synchronized/s4", "train/ptss_p0.5/s4",
                             "eval/ptss_p0.5/s4"]
    assert st["seconds_left_estimate"] is not None and st["seconds_left_estimate"] > 0


def test_a_corrupt_record_is_rerun_and_said(tmp_path, capsys):
    plugins = digits_plugins()
    out = tmp_path / "run"
    clean = run_suite("digits_zero_shot", out, quick=True, seed=3, plugins=plugins, params=PARAMS)
    rec = out / "records" / "eval__synchronized__s4.json"
    rec.write_text(rec.read_text()[:200])  # truncated
    edited = out / "records" / "eval__ptss_p0.5__s3.json"
    data = json.loads(edited.read_text())
    data["result"]["ptss"]["unconditional"]["fvd"] = 0.0  # edited by hand: the checksum no longer holds
    edited.write_text(json.dumps(data))
    capsys.readouterr()
    doc = run_suite("digits_zero_shot", out, quick=True, seed=3, plugins=plugins, params=PARAMS)
    err = capsys.readouterr().err
    assert "record of job eval/synchronized/s4 is unreadable" in err and "eval/ptss_p0.5/s3" in err
    assert _numbers(doc) == _numbers(clean)


def test_bench_status_cli_lists_done_and_pending_jobs(tmp_path, capsys):
    from fvdm.cli import main

    plugins = digits_plugins()
    out = tmp_path / "run"
    run_suite("digits_zero_shot", out, quick=True, seed=3, plugins=plugins, params=PARAMS, max_minutes=1e-9)
    capsys.readouterr()
    assert main(["bench", "status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1 of 9 jobs done" in text and "done     setup/baselines" in text and "pending  eval/ptss_p0.5/s4" in text
    assert main(["bench", "status", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "no benchmark run (no run.json)" in err[0] and err[1:] == ["(set FVDM_DEBUG=1 for a traceback)"]


def test_worker_processes_stop_after_their_jobs_in_flight_and_resume_to_the_one_process_numbers(tmp_path):
    """workers: 2 (spawned processes, plugins loaded fresh: the committed digits extractor) stopped by
    --max-minutes, then continued with one process: the numbers of a run that was never stopped."""
    plugins = digits_plugins()
    params = {**PARAMS, "extractor": {"name": "digits"}, "quick": {**PARAMS["quick"], "seeds": 1}}
    clean = run_suite("digits_zero_shot", tmp_path / "clean", quick=True, seed=3, plugins=plugins, params=params)
    out = tmp_path / "pool"
    doc = run_suite("digits_zero_shot", out, quick=True, seed=3, plugins=plugins, params={**params, "workers": 2},
                    threads=2, max_minutes=1e-9)
    assert doc["status"] == "partial (1 of 5 jobs)"  # the baselines ran in-process, then no job started
    doc = run_suite("digits_zero_shot", out, quick=True, seed=3, plugins=plugins, params={**params, "workers": 2},
                    threads=2, max_minutes=1e-9)
    assert doc["status"] == "partial (3 of 5 jobs)"  # both trainings were in flight together and finished
    doc = run_suite("digits_zero_shot", out, quick=True, seed=3, plugins=plugins, params=params)
    assert _numbers(doc)["metrics"] == _numbers(clean)["metrics"]
