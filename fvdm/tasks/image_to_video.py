"""Image-to-video: frame 0 is given (S[:, 0] = 0), the other F-1 frames are generated."""

from __future__ import annotations

from pydantic import Field, FilePath

from fvdm.tasks.base import Task, as_frames, batch_of, place, sample_window
from fvdm.tasks.inputs import TaskInputs


class ImageToVideoInputs(TaskInputs):
    image: FilePath | None = Field(None, description="the first frame (PNG/JPEG)")
    video: FilePath | None = Field(None, description="or a video whose first frame is taken")


class ImageToVideo(Task):
    """Animate a first frame: inputs ``image`` (C,H,W) or (B,C,H,W)."""

    Inputs = ImageToVideoInputs
    needs = ("image",)

    def read_inputs(self, given, reader):
        inputs = super().read_inputs(given, reader)
        if given.image is not None:
            inputs["image"] = reader.image(given.image)
        elif given.video is not None:
            inputs["image"] = reader.video(given.video, max_frames=1)[:, 0]
        else:
            raise ValueError("image_to_video needs --image first.png (or --video to take its first frame)")
        return inputs

    def run(self, sampling, inputs):
        self.require(inputs)
        first = as_frames(inputs["image"], sampling.shape, "image", single=True)
        W = self.window(sampling)
        if W < 2:
            raise ValueError("image_to_video needs a window of at least 2 frames")
        batch = batch_of(inputs, sampling, first)
        ctx_x0, ctx = place(first.expand(batch, *first.shape[1:]), [0], W)
        return sample_window(self, sampling, num_frames=W, batch=batch, ctx_x0=ctx_x0, ctx=ctx,
                             y=self.labels(sampling, inputs, batch), multipliers=inputs.get("multipliers"))
