"""Image-to-video: frame 0 is given (S[:, 0] = 0), the other F-1 frames are generated."""

from __future__ import annotations

from fvdm.tasks.base import Task, as_frames, batch_of, place, sample_window


class ImageToVideo(Task):
    """Animate a first frame: inputs ``image`` (C,H,W) or (B,C,H,W)."""

    needs = ("image",)

    def run(self, sampling, inputs):
        self.require(inputs, "image")
        first = as_frames(inputs["image"], sampling.shape, "image", single=True)
        W = self.window(sampling)
        if W < 2:
            raise ValueError("image_to_video needs a window of at least 2 frames")
        batch = batch_of(inputs, sampling, first)
        ctx_x0, ctx = place(first.expand(batch, *first.shape[1:]), [0], W)
        return sample_window(self, sampling, num_frames=W, batch=batch, ctx_x0=ctx_x0, ctx=ctx,
                             y=self.labels(sampling, inputs, batch), multipliers=inputs.get("multipliers"))
