"""Any-frame infill: any subset of frames given (their columns of S are 0)."""

from __future__ import annotations

import torch
from pydantic import Field, FilePath, field_validator

from fvdm.core.temporal import pixel_span
from fvdm.tasks.base import Task, as_frames, batch_of, expand_batch, sample_window
from fvdm.tasks.inputs import TaskInputs, index_list


class InfillInputs(TaskInputs):
    video: FilePath | None = Field(None, description="a clip of at least window frames; the unknown ones may hold "
                                                     "anything")
    given: list[int] | None = Field(None, description="indices of the given frames, e.g. 0,2,4 (default: even "
                                                      "frames)")

    _given = field_validator("given", mode="before")(index_list)


class Infill(Task):
    """Generate the unknown frames: inputs ``video`` (B, F, C, H, W) and ``mask`` (F,) bool, True = given."""

    Inputs = InfillInputs
    needs = ("video", "mask")

    def read_inputs(self, given, reader):
        inputs = super().read_inputs(given, reader)
        W = self.window_size(reader.num_frames)  # model frames
        P = reader.pixel_frames(W)  # the pixel frames they encode (W unless the autoencoder compresses time)
        if given.video is None:
            raise ValueError(f"infill needs --video with at least {P} frames and --given indices")
        if given.given is None:  # default: every other model frame, as the pixel frames that make it
            idx = [p for j in range(0, W, 2) for p in pixel_span(reader.autoencoder, j)]
        else:
            idx = given.given
        if not idx or min(idx) < 0 or max(idx) >= P:
            raise ValueError(f"--given must list frame indices in [0, {P - 1}], got {given.given!r}")
        mask = torch.zeros(W, dtype=torch.bool)
        mask[reader.model_positions(idx, P, "--given")] = True
        inputs["video"], inputs["mask"] = reader.video(given.video, min_frames=P, max_frames=P), mask
        return inputs

    def run(self, sampling, inputs):
        self.require(inputs)
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
        return sample_window(self, sampling, num_frames=W, batch=batch, ctx_x0=expand_batch(video, batch, "video"),
                             ctx=mask,
                             y=self.labels(sampling, inputs, batch), multipliers=inputs.get("multipliers"))
