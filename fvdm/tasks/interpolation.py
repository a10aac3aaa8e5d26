"""Interpolation: first and last frames given (or any keyframes at given positions)."""

from __future__ import annotations

import torch
from pydantic import Field, FilePath

from fvdm.tasks.base import Task, as_frames, batch_of, expand_batch, place, sample_window
from fvdm.tasks.inputs import TaskInputs


class InterpolationInputs(TaskInputs):
    image: FilePath | None = Field(None, description="the first frame (PNG/JPEG); with last")
    last: FilePath | None = Field(None, description="the last frame (PNG/JPEG); with image")
    video: FilePath | None = Field(None, description="or a video whose first and last frames are taken")


class Interpolation(Task):
    """Fill the frames between keyframes: inputs ``first`` + ``last``, or ``keyframes`` (+ ``positions``)."""

    Inputs = InterpolationInputs

    def read_inputs(self, given, reader):
        inputs = super().read_inputs(given, reader)
        if given.image is not None and given.last is not None:
            inputs["first"], inputs["last"] = reader.image(given.image), reader.image(given.last)
        elif given.image is None and given.last is None and given.video is not None:
            pair = reader.video(given.video, min_frames=2, frames=[0, -1])  # (1, 2, C, H, W)
            inputs["first"], inputs["last"] = pair[:, 0], pair[:, 1]
        else:
            raise ValueError("interpolation needs --image first.png and --last last.png (or --video with >= 2 "
                             "frames)")
        return inputs

    def run(self, sampling, inputs):
        W = self.window(sampling)
        if inputs.get("keyframes") is not None:
            keys = as_frames(inputs["keyframes"], sampling.shape, "keyframes")
            n = keys.shape[1]
            positions = inputs.get("positions")
            if positions is None:  # evenly spaced, first and last included
                positions = torch.linspace(0, W - 1, n).round().long().tolist() if n > 1 else [0]
            positions = [int(p) for p in positions]
        else:
            self.require(inputs, "first", "last")
            first = as_frames(inputs["first"], sampling.shape, "first", single=True)
            last = as_frames(inputs["last"], sampling.shape, "last", single=True)
            b = max(first.shape[0], last.shape[0])
            keys = torch.cat([expand_batch(first, b, "first"), expand_batch(last, b, "last")], dim=1)
            positions = [0, W - 1]
        if len(positions) >= W:
            raise ValueError(f"{len(positions)} keyframes fill the whole {W}-frame window: nothing to interpolate")
        batch = batch_of(inputs, sampling, keys)
        ctx_x0, ctx = place(expand_batch(keys, batch, "keyframes"), positions, W)
        return sample_window(self, sampling, num_frames=W, batch=batch, ctx_x0=ctx_x0, ctx=ctx,
                             y=self.labels(sampling, inputs, batch), multipliers=inputs.get("multipliers"))
