"""The moving-digits metrics: per-frame detector, recognisability, identity, trajectory error, boundary jump."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def clips():
    """12 test-split clips (B, 16, 1, 32, 32) in [-1, 1] and their ground truth."""
    from fvdm.plugins.datasets.moving_digits import MovingDigits
    from fvdm.plugins.evaluators.digits_truth import digits_truth

    ds = MovingDigits(MovingDigits.Config(split="test", num_clips=12, num_frames=16))
    return ds.get_batch(range(12)), digits_truth(ds, range(12))


@pytest.fixture(scope="module")
def metrics():
    from fvdm.plugins.evaluators.boundary_jump import BoundaryJump
    from fvdm.plugins.evaluators.digit_identity import DigitIdentity
    from fvdm.plugins.evaluators.digit_recognisability import DigitRecognisability
    from fvdm.plugins.evaluators.trajectory_error import TrajectoryError

    rec = DigitRecognisability(DigitRecognisability.Config())
    return {"rec": rec, "ident": DigitIdentity(DigitIdentity.Config(), detector=rec.detector),
            "traj": TrajectoryError(TrajectoryError.Config(), detector=rec.detector),
            "jump": BoundaryJump(BoundaryJump.Config())}


def test_registered():
    from fvdm.core.plugins import load_plugins

    names = set(load_plugins()["evaluators"].names())
    assert {"digit_recognisability", "digit_identity", "trajectory_error", "boundary_jump"} <= names


def test_recognisability_real_near_one_noise_near_zero(clips, metrics):
    videos, _ = clips
    real = metrics["rec"].evaluate(videos)
    assert real["value"] >= 0.97 and real["n_frames"] == videos.shape[0] * videos.shape[1]
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(videos.shape, generator=g) * 2 - 1
    assert metrics["rec"].evaluate(noise)["value"] <= 0.05
    assert metrics["rec"].evaluate(torch.full_like(videos, -1.0))["value"] == 0.0
    u8 = ((videos + 1) * 127.5).round().to(torch.uint8)  # uint8 gives the same answer
    assert metrics["rec"].evaluate(u8)["value"] == pytest.approx(real["value"])


def test_position_errors_closed_form(clips):
    """Oracle detections at the true centres: error 0; shifted by (3, 4) px: exactly 5; past the cap: the cap."""
    from einops import rearrange

    from fvdm.plugins.evaluators.digits_frame_net import oracle_detections
    from fvdm.plugins.evaluators.trajectory_error import position_errors

    _, truth = clips
    f = truth.trajectories.shape[2]
    centres = rearrange(truth.centres, "b d f c -> (b f) d c")
    labels = rearrange(truth.labels[:, None, :].expand(-1, f, -1), "b f d -> (b f) d")
    # digits whose class is unique in their clip: a same-class twin may be the nearer peak once shifted
    valid = (labels >= 0) & ((labels[:, :, None] == labels[:, None, :]).sum(-1) == 1)
    assert valid.sum() > 0.7 * (labels >= 0).sum()
    err, found = position_errors(oracle_detections(centres, labels), centres, labels, cap=8.0)
    assert found[valid].all() and err[valid].abs().max() < 1e-5
    shifted = oracle_detections(centres + torch.tensor([3.0, 4.0]), labels)
    err, found = position_errors(shifted, centres, labels, cap=8.0)
    assert err[valid].sub(5.0).abs().max() < 1e-4  # |(3, 4)| = 5 for every digit in every frame
    far = oracle_detections(centres + torch.tensor([30.0, 0.0]), labels)
    err, _ = position_errors(far, centres, labels, cap=8.0)
    assert (err[valid] == 8.0).all()
    nothing = oracle_detections(centres, torch.full_like(labels, -1))  # no digit found: every true digit is a miss
    err, found = position_errors(nothing, centres, labels, cap=8.0)
    assert not found[valid].any() and (err[valid] == 8.0).all()


def test_trajectory_error_real_small_and_grows_with_shift(clips, metrics):
    videos, truth = clips
    base = metrics["traj"].evaluate(videos, truth=truth)
    assert base["matched_error_px"] < 1.2 and base["value"] < 2.0 and base["cap_px"] == 8.0
    # content moved 4 px right (the canvas has a 0 border where digits are absent, the roll wraps little)
    moved = metrics["traj"].evaluate(torch.roll(videos, shifts=4, dims=-1), truth=truth)
    assert 3.0 < moved["matched_error_px"] < 5.0 and moved["value"] > base["value"] + 2


def test_trajectory_error_refuses_missing_truth(clips, metrics):
    from fvdm.plugins.evaluators.digits_truth import digits_truth, require_truth

    videos, truth = clips
    with pytest.raises(ValueError, match="needs ground-truth digit positions: pass truth=digits_truth"):
        metrics["traj"].evaluate(videos)
    with pytest.raises(ValueError, match="needs ground-truth digit positions"):
        metrics["traj"].evaluate(videos, videos)  # real clips are not ground truth

    class Folder(torch.utils.data.Dataset):
        def __len__(self):
            return 1

    with pytest.raises(ValueError, match="evaluate on the moving_digits dataset or drop this metric"):
        require_truth(Folder())
    with pytest.raises(ValueError, match="moving_digits"):
        digits_truth(Folder(), [0])
    with pytest.raises(ValueError, match="pass the same clips"):
        metrics["traj"].evaluate(videos[:4], truth=truth)


def test_identity(clips, metrics):
    from fvdm.plugins.evaluators.digit_identity import set_f1

    a = torch.tensor([[True, True] + [False] * 8])
    b = torch.tensor([[True, False, True] + [False] * 7])
    assert set_f1(a, b).item() == pytest.approx(0.5) and set_f1(a & False, b & False).item() == 1.0
    videos, truth = clips
    by_labels = metrics["ident"].evaluate(videos, truth=truth)
    by_context = metrics["ident"].evaluate(videos, context=[0, 1, 2, 3])
    assert by_labels["value"] > 0.85 and by_context["value"] > 0.85 and by_context["n_frames"] == 12 * 12
    wrong = torch.where(truth.labels >= 0, (truth.labels + 5) % 10, truth.labels)
    assert metrics["ident"].evaluate(videos, labels=wrong)["value"] < 0.3
    with pytest.raises(ValueError, match="needs a reference: pass labels"):
        metrics["ident"].evaluate(videos)


def test_boundary_jump(clips, metrics):
    videos, _ = clips
    ext = [0, 1, 2, 3]
    same = metrics["jump"].evaluate(videos, videos, context=ext)
    assert same["value"] == pytest.approx(1.0) and same["interior_ratio"] == pytest.approx(1.0)
    frozen = videos.clone()
    frozen[:, 4:] = videos[:, 3:4]  # copy the last given frame: no change across the boundary
    res = metrics["jump"].evaluate(frozen, videos, context=ext)
    assert res["value"] == 0.0 and res["interior_ratio"] == 0.0
    black = videos.clone()
    black[:, 4:] = -1.0
    assert metrics["jump"].evaluate(black, videos, context=ext)["value"] > 1.1  # real motion changes ~as many pixels
    interp = metrics["jump"].evaluate(videos, videos, context=[0, 15])
    assert interp["n_boundaries"] == 2 and interp["value"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="needs context="):
        metrics["jump"].evaluate(videos, videos)


def test_value_range_is_checked(clips, metrics):
    videos, _ = clips
    with pytest.raises(ValueError, match=r"must lie in \[-1, 1\].*value_range='0_1'"):
        metrics["rec"].evaluate(videos * 2)
    from fvdm.plugins.evaluators.digit_recognisability import DigitRecognisability

    unit = DigitRecognisability(DigitRecognisability.Config(value_range="0_1"), detector=metrics["rec"].detector)
    assert unit.evaluate((videos + 1) / 2)["value"] == pytest.approx(metrics["rec"].evaluate(videos)["value"])


def test_cli_scores_a_directory(clips, tmp_path, capsys):
    import json

    import numpy as np
    from einops import rearrange

    from fvdm.cli import main

    videos, _ = clips
    u8 = ((videos[:3] + 1) * 127.5).round().to(torch.uint8)
    (tmp_path / "v").mkdir()
    for i, v in enumerate(u8):
        np.save(tmp_path / "v" / f"{i}.npy", rearrange(v, "f c h w -> f h w c").numpy())
    assert main(["eval", "--real", str(tmp_path / "v"), "--fake", str(tmp_path / "v"),
                 "--metric", "digit_recognisability", "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out)
    res = res[0] if isinstance(res, list) else res
    assert res["metric"] == "digit_recognisability" and res["value"] >= 0.95 and res["n_frames"] == 48


def test_write_trained_weights_records_hash_and_provenance(tmp_path):
    import hashlib
    import json

    from fvdm.plugins.evaluators.weights import write_trained_weights

    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 2, 3)
    doc = write_trained_weights(net, tmp_path, "net.pt", {"steps": 7})
    raw = (tmp_path / "net.pt").read_bytes()
    assert doc["sha256"] == hashlib.sha256(raw).hexdigest() == (tmp_path / "net.pt.sha256").read_text().split()[0]
    assert json.loads((tmp_path / "net.json").read_text()) == doc and doc["steps"] == 7 and doc["params"] == 20
    sd = torch.load(tmp_path / "net.pt", weights_only=True)
    assert all(torch.equal(sd[k], v) for k, v in net.state_dict().items())
