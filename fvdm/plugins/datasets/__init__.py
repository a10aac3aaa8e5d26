"""Built-in datasets: ``moving_digits`` (default), ``webdataset``, ``video_folder``, ``shape_only`` (no data:
a clip shape for sampling a pretrained model).

Every dataset yields ``{"video": (F, C, H, W) float32 in [-1, 1], "key": str,
"label"?: int}`` and has attributes ``num_frames, channels, resolution,
num_classes``. Optional dependencies are imported lazily (inside functions).
"""

from __future__ import annotations

from fvdm.core.hookspecs import hookimpl


@hookimpl
def fvdm_register_datasets(registry):
    from fvdm.plugins.datasets import moving_digits, video_folder, video_io, webdataset_reader

    registry.add("moving_digits", moving_digits.MovingDigits, available=moving_digits.available)
    # mp4/avi decoding needs PyAV (extra "video"); npy/npz/image shards do not, so the reader stays
    # available without it and names the extra when it meets a video.
    registry.add("webdataset", webdataset_reader.WebDatasetVideos, extra="data",
                 available=webdataset_reader.available)
    registry.add("video_folder", video_folder.VideoFolder, extra="video", available=video_io.av_available)

    from fvdm.plugins.datasets.shape_only import ShapeOnly

    registry.add("shape_only", ShapeOnly, description="no clips: declares frames, channels and resolution for "
                                                      "sampling a pretrained model without a run")
