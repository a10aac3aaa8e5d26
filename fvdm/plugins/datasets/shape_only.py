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
        resolution: int = Field(256, ge=1, description="pixel height = width (unless height/width are given)")
        height: int | None = Field(None, ge=1, description="pixel height of non-square clips (Wan: 480)")
        width: int | None = Field(None, ge=1, description="pixel width of non-square clips (Wan: 832)")

    num_classes = 0

    def __init__(self, cfg: "ShapeOnly.Config"):
        self.num_frames, self.channels = cfg.num_frames, cfg.channels
        self.height, self.width = cfg.height or cfg.resolution, cfg.width or cfg.resolution
        self.resolution = min(self.height, self.width)  # the nominal size; the build reads height and width

    def __iter__(self) -> Iterator[dict[str, Any]]:
        raise ValueError("dataset shape_only holds no clips (it only declares a shape for sampling a pretrained "
                         "model); to train or fine-tune, use webdataset shards from `fvdm data pack` or video_folder")
