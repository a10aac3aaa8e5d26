"""Long video by sliding windows: window F, overlap o, repeated until N frames.

Window 0 is standard; window c > 0 takes the previous o frames as context and keeps
its F - o new frames (with F = 16 and o = 8, 15 windows make 128 frames).
"""

from __future__ import annotations

from pydantic import Field, FilePath

from fvdm.tasks.base import Task, TaskConfig, as_frames, batch_of, rollout
from fvdm.tasks.inputs import TaskInputs


class LongVideoConfig(TaskConfig):
    num_frames: int = Field(128, ge=1, description="total frames N")
    overlap: int | None = Field(None, ge=0, description="context frames per window; default half the window")


class LongVideoInputs(TaskInputs):
    video: FilePath | None = Field(None, description="optional clip to start from (mp4/webm/gif)")
    context_frames: int | None = Field(None, ge=1, description="its first k frames start the video (default 1)")


class StartVideoTask(Task):
    """A rollout that may start from the first ``context_frames`` frames of a given ``--video``."""

    Inputs = LongVideoInputs
    default_labels = True

    def read_inputs(self, given, reader):
        inputs = super().read_inputs(given, reader)
        if given.video is not None:
            k = given.context_frames or 1
            reader.check_pixel_frames(k, "--context-frames")
            inputs["video"] = reader.video(given.video, min_frames=k, max_frames=k,
                                           fix="give a longer video or fewer --context-frames")
        elif given.context_frames is not None:
            raise ValueError("--context-frames counts frames of --video; give --video start.mp4 too")
        return inputs


class LongVideo(StartVideoTask):
    """Generate N frames (inputs: optional ``num_frames``, ``video`` first frames, ``labels``)."""

    Config = LongVideoConfig

    def overlap(self, sampling) -> int:
        return self.cfg.overlap if self.cfg.overlap is not None else self.window(sampling) // 2

    def matrix(self, sampling):
        return None  # the context's builder (standard unless configured)

    def rollout(self, sampling, inputs):
        """(video (B, N, ...), per-window outputs) — exposed for tests and benchmarks."""
        total = int(inputs.get("num_frames") or self.cfg.num_frames)
        first = inputs.get("video")
        first = None if first is None else as_frames(first, sampling.shape, "video")
        batch = batch_of(inputs, sampling, first)
        if first is not None:
            first = first.expand(batch, *first.shape[1:])
        return rollout(self, sampling, total=total, overlap=self.overlap(sampling), batch=batch, first=first,
                       y=self.labels(sampling, inputs, batch), matrix=self.matrix(sampling))

    def run(self, sampling, inputs):
        return self.rollout(sampling, inputs)[0]
