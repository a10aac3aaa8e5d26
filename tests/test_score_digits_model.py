"""benchmarks/score_digits_model.py and the copy floor: the layout issue-level results need, and the floor's frames."""

from __future__ import annotations

import torch

from fvdm.bench.context_identity import GIVEN, copy_nearest


def test_copy_nearest_takes_the_closest_given_frame_earlier_on_ties():
    gt = torch.arange(8.0).view(1, 8, 1, 1, 1).expand(2, 8, 1, 2, 2)
    assert copy_nearest(gt, GIVEN["image_to_video"](8))[0, :, 0, 0, 0].tolist() == [0.0] * 8
    assert copy_nearest(gt, GIVEN["extension"](8))[0, :, 0, 0, 0].tolist() == [0, 1, 2, 3, 3, 3, 3, 3]
    assert copy_nearest(gt, GIVEN["interpolation"](8))[0, :, 0, 0, 0].tolist() == [0, 0, 0, 0, 7, 7, 7, 7]
    assert copy_nearest(gt, [2, 4])[0, 3, 0, 0, 0] == 2  # a tie goes to the earlier given frame


def test_scores_hold_identity_trajectory_and_unconditional_with_intervals_over_clips():
    from benchmarks.score_digits_model import markdown, score
    from fvdm.commands.demo_committed import COMMITTED_DIR, load_committed
    from fvdm.core.plugins import load_plugins

    torch.manual_seed(0)
    plugins = load_plugins(entry_points=False)
    lm, _ = load_committed(COMMITTED_DIR, plugins)
    res, videos = score(lm, plugins, clips=3, samples=2, steps=1, seed=0)
    assert set(res["identity_f1"]) == {"image_to_video", "extension", "interpolation"}
    ext = res["trajectory_error_px"]["extension"]
    assert set(ext) == {"model", "real clips", "copy nearest given frame"}
    assert ext["model"]["n"] == 3 and ext["model"]["ci_low"] <= ext["model"]["mean"] <= ext["model"]["ci_high"]
    # copying the given frame into every frame finds exactly the given frames' digits
    assert res["identity_f1"]["image_to_video"]["copy nearest given frame"]["mean"] == 1.0
    assert set(res["unconditional"]) >= {"fvd_digits", "recognisability"} and res["unconditional"]["samples"] == 2
    assert videos["extension"].shape == (3, 8, 1, 32, 32)
    given = GIVEN["extension"](8)
    assert torch.equal(videos["extension"][:, given], videos["gt"][:, given])  # the given frames, exactly
    assert "| extension | trajectory_error_px |" in markdown("x", res)
