"""Clean first frame: the conventional way to fine-tune a video model into image-to-video.

Frame 0 is always clean (level 0: the given image) and the other frames share one level drawn per
clip, as a synchronized model's frames do. A model fine-tuned this way learns exactly one task (the
first frame given); it is the task-specific control that per-frame training (PTSS) is compared with.
By default the clean frame's loss stays in the average (the engine weights every frame alike): at
level 0 its target is nearly unobservable noise (0.19 per frame on moving digits, more than a generated
frame's), a term the model cannot reduce but still chases. ``train.clean_frame_loss: false`` leaves it
out, as image-to-video fine-tunes usually do.
"""

from __future__ import annotations

import torch

from fvdm.core.interfaces import PluginConfig
from fvdm.plugins.vtv._common import check_size, rand


class CleanFirst:
    """u (B, F): column 0 is 0, the others one draw per clip."""

    class Config(PluginConfig):
        pass

    def __init__(self, cfg: "CleanFirst.Config"):
        self.cfg = cfg

    def __call__(self, batch_size: int, num_frames: int, *, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
        check_size(batch_size, num_frames)
        u = rand(batch_size, 1, generator=generator, device=device).expand(batch_size, num_frames).clone()  # (B, F)
        u[:, 0] = 0.0
        return u
