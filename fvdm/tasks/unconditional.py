"""Unconditional generation: one standard window of F frames (or fewer)."""

from __future__ import annotations

from pydantic import Field

from fvdm.tasks.base import Task, TaskConfig, batch_of, sample_window


class UnconditionalConfig(TaskConfig):
    num_frames: int | None = Field(None, ge=1, description="frames to generate (<= window); default the window")


class Unconditional(Task):
    """Generate F frames from noise (inputs: optional ``labels``)."""

    Config = UnconditionalConfig
    default_labels = True
    uses_context = False

    def run(self, sampling, inputs):
        n = int(inputs.get("num_frames") or self.cfg.num_frames or self.window(sampling))
        W = self.window(sampling)
        if n > W:
            raise ValueError(f"unconditional makes one window (<= {W} frames), asked for {n}; use long_video")
        batch = batch_of(inputs, sampling)
        return sample_window(self, sampling, num_frames=n, batch=batch, y=self.labels(sampling, inputs, batch))
