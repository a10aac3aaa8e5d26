"""The context probe's sampler-free reading separates a context-blind model from one that reads its context."""

from __future__ import annotations

from types import SimpleNamespace

import torch


def _probe(model, gt: torch.Tensor) -> dict:
    """denoise_errors for a bare x0-predicting function (2 given frames of 4)."""
    from benchmarks.digits_context_probe import denoise_errors
    from fvdm.plugins.noise_schedules.ddpm import DDPMSchedule

    schedule = DDPMSchedule(DDPMSchedule.Config(prediction="x0", learn_sigma=False))
    return denoise_errors(SimpleNamespace(model=model, schedule=schedule), gt, given=2, seed=0)


def test_context_blind_model_scores_the_same_with_any_context():
    """x0 = the frame's own noisy input: the new frames' error cannot depend on the given frames."""
    gt = torch.rand(6, 4, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1  # (N, F, C, H, W)
    errors = _probe(lambda xt, t_in: xt, gt)
    for row in errors.values():
        assert row["true"] == row["other"] == row["none"] > 0


def test_model_that_copies_its_last_given_frame_scores_best_with_the_true_context():
    """Clips whose frames are all equal: copying the last given frame is right only with the clip's own context."""
    def copy_last_given(xt, t_in):  # x0 prediction: every new frame = frame 1 (clean when given)
        return xt[:, 1:2].expand_as(xt).clone()

    still = (torch.rand(6, 1, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1).expand(-1, 4, -1, -1, -1)
    errors = _probe(copy_last_given, still.contiguous())  # (N, F, C, H, W), every frame the same
    for row in errors.values():
        # "clean" is step 0 of the DDPM chain (abar 0.9999): the copy carries sigma 0.01 of noise, MSE 1e-4
        assert row["true"] < 1e-3 and row["other"] > 0.1 and row["none"] > 0.1
