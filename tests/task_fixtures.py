"""Third-party-style tasks that tests register in-process or ship in a throwaway distribution."""

from __future__ import annotations

from fvdm.tasks.base import Task, as_frames, batch_of, expand_batch, place, sample_window


class LastFrame(Task):
    """A task with context: a window that ends at the given frame."""

    def run(self, sampling, inputs):
        W = self.window(sampling)
        last = as_frames(inputs["image"], sampling.shape, "image", single=True)
        batch = batch_of(inputs, sampling, last)
        ctx_x0, ctx = place(expand_batch(last, batch, "image"), [W - 1], W)
        return sample_window(self, sampling, num_frames=W, batch=batch, ctx_x0=ctx_x0, ctx=ctx)


class NoiseOnly(Task):
    """A task without context: frames from noise."""

    uses_context = False

    def run(self, sampling, inputs):
        return sample_window(self, sampling, num_frames=self.window(sampling), batch=batch_of(inputs, sampling))
