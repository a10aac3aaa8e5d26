"""Extension / prediction: the first k frames are given, the rest generated.

Within one window the k frames are context at positions 0..k-1; asking for more
frames than the window continues with sliding windows (overlap ``overlap``).
"""

from __future__ import annotations

from pydantic import Field, FilePath

from fvdm.tasks.base import Task, TaskConfig, as_frames, batch_of, rollout
from fvdm.tasks.inputs import TaskInputs


class ExtensionConfig(TaskConfig):
    num_frames: int | None = Field(None, ge=2, description="total output frames incl. the given ones; "
                                   "default the window")
    overlap: int | None = Field(None, ge=0, description="overlap of later windows; default half the window")


class ExtensionInputs(TaskInputs):
    video: FilePath | None = Field(None, description="the clip to continue (mp4/webm/gif)")
    context_frames: int | None = Field(None, ge=1, description="its first k (pixel) frames are the context "
                                                               "(default: half the window); 1 + 4j with a causal "
                                                               "video VAE (wan_vae)")


class Extension(Task):
    """Continue a clip: inputs ``video`` (k, C, H, W) or (B, k, C, H, W) with k < window."""

    Config = ExtensionConfig
    Inputs = ExtensionInputs
    needs = ("video",)

    def read_inputs(self, given, reader):
        inputs = super().read_inputs(given, reader)
        if given.video is None:
            raise ValueError("extension/prediction needs --video context.mp4 (its first --context-frames frames)")
        # --context-frames counts pixel frames (fewer latents under a temporal VAE: 1 + 4k -> 1 + k)
        k = given.context_frames or reader.pixel_frames(max(1, self.window_size(reader.num_frames) // 2))
        reader.check_pixel_frames(k, "--context-frames")
        inputs["video"] = reader.video(given.video, min_frames=k, max_frames=k,
                                       fix="give a longer video or fewer --context-frames")
        return inputs

    def run(self, sampling, inputs):
        self.require(inputs)
        first = as_frames(inputs["video"], sampling.shape, "video")
        W = self.window(sampling)
        total = int(inputs.get("num_frames") or self.cfg.num_frames or W)
        overlap = self.cfg.overlap if self.cfg.overlap is not None else W // 2
        batch = batch_of(inputs, sampling, first)
        video, _ = rollout(self, sampling, total=total, overlap=overlap, batch=batch,
                           first=first.expand(batch, *first.shape[1:]), y=self.labels(sampling, inputs, batch))
        return video
