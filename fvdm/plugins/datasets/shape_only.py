"""``shape_only``: declares a clip shape and holds no data, for sampling a pretrained model without a run.

The build sizes a backbone from its data (frames, channels, resolution), so a config that samples a
downloaded model (``backbone: {name: wan, pretrained: DIR}``) still needs those numbers; this dataset
gives them and nothing else. Training on it is refused when the first batch is asked for: there is
nothing to learn from.
"""

from __future__ import annotations

from typing import Any, Iterator

from pydantic import Field

from fvdm.core.interfaces import PluginConfig


class ShapeOnly:
    """Clip shape (pixel space) for sampling; iterating is an error naming what to use instead."""

    class Config(PluginConfig):
        num_frames: int = Field(17, ge=1, description="pixel frames per clip (1 + 4k for Wan's causal VAE)")
        channels: int = Field(3, ge=1)
        resolution: int = Field(256, ge=1, description="pixel height = width")

    num_classes = 0

    def __init__(self, cfg: "ShapeOnly.Config"):
        self.num_frames, self.channels, self.resolution = cfg.num_frames, cfg.channels, cfg.resolution

    def __iter__(self) -> Iterator[dict[str, Any]]:
        raise ValueError("dataset shape_only holds no clips (it only declares a shape for sampling a pretrained "
                         "model); to train or fine-tune, use webdataset shards from `fvdm data pack` or video_folder")
