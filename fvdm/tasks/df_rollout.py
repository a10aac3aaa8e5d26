"""Diffusion-Forcing-style rolling generation: sliding windows sampled with a pyramid schedule.

Each window's new frames follow pyramid(u) (nearer frames settle first, farther ones
stay noisier longer), the previous ``overlap`` frames are context (optionally shown at
a small ``stabilization`` level, as Diffusion Forcing does).

The window schedule is this task's own option (``schedule``, any registered sampling
schedule with its parameters), not the sampling context's matrix: the CLI's
``--schedule``/``--schedule-param`` set it because this Config has a ``schedule`` field.
"""

from __future__ import annotations

from pydantic import Field

from fvdm.core.config import PluginRef
from fvdm.tasks.long_video import LongVideo, LongVideoConfig


class DFRolloutConfig(LongVideoConfig):
    schedule: PluginRef = Field(PluginRef(name="pyramid", u=1.0),
                                description="sampling schedule of every window: {name, **its parameters}")


class DFRollout(LongVideo):
    """Roll out N frames with pyramid-scheduled windows."""

    Config = DFRolloutConfig

    def matrix(self, sampling):
        plugins = sampling.plugins
        if plugins is None:
            raise ValueError("df_rollout builds its window schedule by name and needs the plugin manager: "
                             "create the SamplingContext with plugins=plugins")
        return plugins["sampling_schedules"].build(self.cfg.schedule.spec())
