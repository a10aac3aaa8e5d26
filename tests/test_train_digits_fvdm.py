"""benchmarks/train_digits_fvdm.py: fine-tune the committed base, score a doubling curve, export what the demo loads."""

from __future__ import annotations

import json
import sys

import pytest
import torch


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from benchmarks import train_digits_fvdm

    root = tmp_path_factory.mktemp("ft")
    argv = ["train_digits_fvdm", "--out", str(root / "run"), "--steps", "2", "--first", "1", "--clips", "2",
            "--samples", "2", "--sample-steps", "1", "--export", str(root / "model")]
    old, sys.argv = sys.argv, argv
    try:
        train_digits_fvdm.main()
    finally:
        sys.argv = old
    return root


def test_curve_starts_at_the_base_and_doubles(exported):
    curve = json.loads((exported / "run" / "curve.json").read_text())
    assert [r["step"] for r in curve["curve"]] == [0, 1, 2]
    assert curve["recipe"]["vtv"]["name"] == "context_mix"
    for row in curve["curve"]:
        assert set(row["tasks"]) == {"image_to_video", "extension", "interpolation"}
        assert 0.0 <= row["identity_i2v_ext"] <= 1.0
    assert (exported / "run" / "grid_2_tasks.png").is_file()


def test_export_is_what_the_demo_loads(exported):
    from fvdm.commands.demo_committed import load_committed, read_provenance
    from fvdm.core.plugins import load_plugins

    prov = read_provenance(exported / "model")  # sha256 verified
    assert prov["config"]["train"]["init_from"].endswith("digits_sync_base")
    assert prov["step"] in (1, 2) and prov["base_sha256"].startswith("a436fb2c1e74")
    loaded, _ = load_committed(exported / "model", load_plugins())
    ckpt = torch.load(exported / "run" / f"ckpt_{prov['step']}.pt", map_location="cpu", weights_only=True)
    state = loaded.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in ckpt["ema"].items())  # the exported EMA weights, bit for bit


def test_max_minutes_slices_continue_to_the_same_curve_and_export(exported, tmp_path):
    from benchmarks import train_digits_fvdm
    from fvdm.commands.demo_committed import read_provenance

    argv = ["train_digits_fvdm", "--out", str(tmp_path / "run"), "--steps", "2", "--first", "1", "--clips", "2",
            "--samples", "2", "--sample-steps", "1", "--export", str(tmp_path / "model"), "--max-minutes", "1e-9"]
    old, sys.argv = sys.argv, argv
    try:
        train_digits_fvdm.main()  # scores the base, trains to step 1, scores it, stops: no export yet
        assert [r["step"] for r in json.loads((tmp_path / "run" / "curve.json").read_text())["curve"]] == [0, 1]
        assert not (tmp_path / "model").exists()
        train_digits_fvdm.main()  # the same command: step 2, then the export
    finally:
        sys.argv = old
    sliced = json.loads((tmp_path / "run" / "curve.json").read_text())["curve"]
    whole = json.loads((exported / "run" / "curve.json").read_text())["curve"]
    assert [r["tasks"] for r in sliced] == [r["tasks"] for r in whole]
    assert read_provenance(tmp_path / "model")["sha256"] == read_provenance(exported / "model")["sha256"]
