"""Diffusion-Forcing-style rolling generation: sliding windows sampled with a pyramid schedule.

Each window's new frames follow pyramid(u) (nearer frames settle first, farther ones
stay noisier longer), the previous ``overlap`` frames are context (optionally shown at
a small ``stabilization`` level, as Diffusion Forcing does).
"""

from __future__ import annotations

from pydantic import Field

from fvdm.tasks.long_video import LongVideo, LongVideoConfig


class DFRolloutConfig(LongVideoConfig):
    u: float = Field(1.0, ge=0, description="pyramid uncertainty scale")
    schedule: str = Field("pyramid", description="sampling-schedule builder for each window")


class DFRollout(LongVideo):
    """Roll out N frames with pyramid-scheduled windows."""

    Config = DFRolloutConfig

    def matrix(self, sampling):
        plugins = sampling.plugins
        if plugins is None:
            raise ValueError("df_rollout builds its window schedule by name and needs the plugin manager: "
                             "create the SamplingContext with plugins=plugins")
        spec = {"name": self.cfg.schedule}
        if self.cfg.schedule in ("pyramid", "trapezoid"):
            spec["u"] = self.cfg.u
        return plugins["sampling_schedules"].build(spec)
