"""What a task reads from the user: its ``Inputs`` model and the ``InputReader`` that turns files into tensors.

A task declares its inputs as a pydantic model (``Task.Inputs``, a ``TaskInputs``
subclass) and says how to read them (``Task.read_inputs(given, reader)``). The CLI
only validates the user's values with that model, hands the task an ``InputReader``
for the checkpoint and records a sha256 of every file the inputs name, so it never
needs to know a task by name::

    class MyInputs(TaskInputs):
        mask_image: FilePath = Field(description="white = keep")

    def read_inputs(self, given, reader):
        inputs = super().read_inputs(given, reader)      # labels
        inputs["image"] = reader.image(given.mask_image)  # (1, C, H, W) in model space
        return inputs
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from pydantic import BaseModel, Field, field_validator

from fvdm.core.hashing import sha256_file
from fvdm.core.interfaces import PluginConfig
from fvdm.core.temporal import latent_frame_count, latent_positions, pixel_frame_count


class TaskInputs(PluginConfig):
    """Inputs every task accepts; subclasses add theirs (file paths are ``FilePath`` fields, so a missing file
    is an error before any sampling starts)."""

    label: list[int] | None = Field(None, description="class label(s) for class-conditional checkpoints")

    @field_validator("label", mode="before")
    @classmethod
    def _one_label(cls, v: Any) -> Any:
        return [v] if isinstance(v, int) else v


def index_list(v: Any) -> Any:
    """``"0, 2,4"`` (a command-line value) -> [0, 2, 4]; lists pass through."""
    if isinstance(v, str):
        try:
            return [int(i) for i in v.split(",") if i.strip()]
        except ValueError:
            raise ValueError(f"expected comma-separated frame indices like 0,2,4, got {v!r}") from None
    return v


@dataclass
class InputReader:
    """Reads user files at a checkpoint's frame size and returns them in the model's space.

    shape      : (C, H, W) of one frame in pixel space (files are resized to it, or refused)
    num_frames : the checkpoint's frame capacity (the largest window)
    num_classes: 0 for unconditional checkpoints
    batch_size : samples asked for (``--batch-size``)
    encode     : pixel frames (B, F, C, H, W) in [-1, 1] -> model space (the autoencoder)
    on_mismatch: ``resize`` (with a warning) or ``error`` for files of another size or channel count
    autoencoder: the autoencoder itself, for its temporal mapping (``fvdm.core.temporal``): frame counts
                 and indices the user gives are pixel frames; ``num_frames`` and windows are model frames
    """

    shape: tuple[int, int, int]
    num_frames: int
    num_classes: int
    batch_size: int
    encode: Callable[[torch.Tensor], torch.Tensor]
    on_mismatch: str = "resize"
    autoencoder: Any = None

    def pixel_frames(self, model_frames: int) -> int:
        """Pixel frames that make ``model_frames`` model frames (equal unless the autoencoder compresses time)."""
        return pixel_frame_count(self.autoencoder, model_frames)

    def check_pixel_frames(self, pixel_frames: int, flag: str) -> int:
        """``pixel_frames`` given by ``flag`` -> the model frames they encode to; a count that does not encode is a
        one-line error naming counts that do."""
        try:
            return latent_frame_count(self.autoencoder, pixel_frames)
        except ValueError as exc:
            raise ValueError(f"{flag}: {exc}") from None

    def model_positions(self, pixel_positions: Sequence[int], pixel_frames: int, flag: str) -> list[int]:
        """Given pixel frame indices -> the model frames they make up; part of a latent frame is refused."""
        try:
            return latent_positions(self.autoencoder, pixel_positions, pixel_frames)
        except ValueError as exc:
            raise ValueError(f"{flag}: {exc}") from None

    def image(self, path: str | Path) -> torch.Tensor:
        """Image file -> (1, C', H', W') in model space."""
        from fvdm.core.media import read_image

        pixels = read_image(path, self.shape, self.on_mismatch)[None, None]  # (1, 1, C, H, W)
        return self._encode(pixels)[:, 0]

    def video(self, path: str | Path, *, min_frames: int = 1, max_frames: int | None = None,
              frames: Sequence[int] | None = None, fix: str | None = None) -> torch.Tensor:
        """Video file -> (1, n, C', H', W') in model space: its first ``max_frames`` frames (at least
        ``min_frames``), or only the frames at indices ``frames`` (negative counts from the end).

        ``fix``: what the user can change when the video is too short, in the task's own terms (default:
        give a longer video), e.g. ``"give a longer video or fewer --context-frames"``."""
        from fvdm.core.media import read_video

        # the length is checked here, not by read_video: its message names a flag this task may not have;
        # a resize warning is only worth showing for a video that is then used
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pixels = read_video(path, self.shape, min_frames=1, max_frames=max_frames,
                                on_mismatch=self.on_mismatch)  # (F, C, H, W)
        if pixels.shape[0] < min_frames:
            raise ValueError(f"video {Path(path).name} has {pixels.shape[0]} frame(s) but this task needs at least "
                             f"{min_frames}; {fix or f'give a video with at least {min_frames} frames'}")
        for w in caught:
            warnings.warn(w.message, stacklevel=2)
        if frames is not None:  # chosen frames are single images: each encoded alone (a causal VAE's first frame)
            return torch.cat([self._encode(pixels[[i]][None]) for i in frames], dim=1)
        return self._encode(pixels[None])

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.encode(pixels)


def inputs_record(given: BaseModel) -> dict[str, Any]:
    """The validated inputs as JSON data, each file path as ``{"path", "sha256"}`` (what the sample was made
    from, so a result can be traced to the exact files even after they are edited or renamed)."""

    def record(v: Any) -> Any:
        if isinstance(v, Path):
            return {"path": str(v), "sha256": sha256_file(v)} if v.is_file() else str(v)
        if isinstance(v, (list, tuple)):
            return [record(x) for x in v]
        if isinstance(v, dict):
            return {k: record(x) for k, x in v.items()}
        return v

    return {k: record(getattr(given, k)) for k in type(given).model_fields if getattr(given, k) is not None}
