"""Interpolation: first and last frames given (or any keyframes at given positions)."""

from __future__ import annotations

import torch

from fvdm.tasks.base import Task, as_frames, batch_of, expand_batch, place, sample_window


class Interpolation(Task):
    """Fill the frames between keyframes: inputs ``first`` + ``last``, or ``keyframes`` (+ ``positions``)."""

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
