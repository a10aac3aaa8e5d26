"""Extension / prediction: the first k frames are given, the rest generated.

Within one window the k frames are context at positions 0..k-1; asking for more
frames than the window continues with sliding windows (overlap ``overlap``).
"""

from __future__ import annotations

from pydantic import Field

from fvdm.tasks.base import Task, TaskConfig, as_frames, batch_of, rollout


class ExtensionConfig(TaskConfig):
    num_frames: int | None = Field(None, ge=2, description="total output frames incl. the given ones; "
                                   "default the window")
    overlap: int | None = Field(None, ge=0, description="overlap of later windows; default half the window")


class Extension(Task):
    """Continue a clip: inputs ``video`` (k, C, H, W) or (B, k, C, H, W) with k < window."""

    Config = ExtensionConfig
    needs = ("video",)

    def run(self, sampling, inputs):
        self.require(inputs, "video")
        first = as_frames(inputs["video"], sampling.shape, "video")
        W = self.window(sampling)
        total = int(inputs.get("num_frames") or self.cfg.num_frames or W)
        overlap = self.cfg.overlap if self.cfg.overlap is not None else W // 2
        batch = batch_of(inputs, sampling, first)
        video, _ = rollout(self, sampling, total=total, overlap=overlap, batch=batch,
                           first=first.expand(batch, *first.shape[1:]), y=self.labels(sampling, inputs, batch))
        return video
