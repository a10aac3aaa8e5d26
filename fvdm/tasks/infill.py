"""Any-frame infill: any subset of frames given (their columns of S are 0)."""

from __future__ import annotations

import torch

from fvdm.tasks.base import Task, as_frames, batch_of, sample_window


class Infill(Task):
    """Generate the unknown frames: inputs ``video`` (B, F, C, H, W) and ``mask`` (F,) bool, True = given."""

    needs = ("video", "mask")

    def run(self, sampling, inputs):
        self.require(inputs, "video", "mask")
        video = as_frames(inputs["video"], sampling.shape, "video")
        W = self.window(sampling)
        if video.shape[1] != W:
            raise ValueError(f"infill video has {video.shape[1]} frames; it must have the window's {W} "
                             "(unknown frames may hold anything)")
        mask = torch.as_tensor(inputs["mask"], dtype=torch.bool).reshape(-1)
        if mask.numel() != W:
            raise ValueError(f"mask has {mask.numel()} entries but the window has {W} frames")
        if bool(mask.all()):
            raise ValueError("mask marks every frame as given: nothing to infill")
        batch = batch_of(inputs, sampling, video)
        return sample_window(self, sampling, num_frames=W, batch=batch, ctx_x0=video, ctx=mask,
                             y=self.labels(sampling, inputs, batch), multipliers=inputs.get("multipliers"))
