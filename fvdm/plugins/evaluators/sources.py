"""Video sources for evaluation: a sorted listing of keys, per-video lengths, and clip loading.

Every source returns uint8 clips (F, C, H, W). Sources: in-memory tensors/arrays,
fvdm datasets (items in [-1, 1], converted to uint8 as stored frames would be), and
directories of ``.mp4``/``.gif``/``.npy`` videos or of frame folders (StyleGAN-V layout:
one sub-folder of sorted ``.png``/``.jpg`` frames per video).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from fvdm.plugins.evaluators.common import to_uint8_video

VIDEO_SUFFIXES = (".mp4", ".gif", ".npy", ".avi", ".webm", ".mov", ".mkv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class VideoSource:
    """Base: ``keys`` (one per video), ``length(i)`` frames, ``load(i, frames) -> uint8 (F, C, H, W)``."""

    keys: list[str]

    def __len__(self) -> int:
        return len(self.keys)

    def length(self, i: int) -> int:
        raise NotImplementedError

    def load(self, i: int, frames: Sequence[int]) -> torch.Tensor:
        raise NotImplementedError

    def listing_hash(self) -> str:
        """sha256 of the full listing (sorted key and length per video): names the data behind cached stats."""
        h = hashlib.sha256()
        for i in sorted(range(len(self)), key=lambda j: self.keys[j]):
            h.update(f"{self.keys[i]}\t{self.length(i)}\n".encode())
        return h.hexdigest()

    def describe(self) -> str:
        return type(self).__name__


class TensorSource(VideoSource):
    """Videos (N, F, C, H, W) as uint8, or float declared in [0, 1] (``value_range="-1_1"`` converts)."""

    def __init__(self, videos: Any, keys: Sequence[str] | None = None, *, value_range: str = "auto"):
        if isinstance(videos, np.ndarray):
            videos = torch.from_numpy(np.ascontiguousarray(videos))
        if not isinstance(videos, torch.Tensor) or videos.ndim != 5:
            shape = tuple(videos.shape) if hasattr(videos, "shape") else type(videos).__name__
            raise ValueError(f"videos must be (N, F, C, H, W), got {shape}")
        self.videos = to_uint8_video(videos, value_range=value_range)
        self.keys = list(keys) if keys is not None else [f"{i:08d}" for i in range(videos.shape[0])]
        if len(self.keys) != videos.shape[0]:
            raise ValueError(f"{len(self.keys)} keys for {videos.shape[0]} videos")

    def length(self, i: int) -> int:
        return int(self.videos.shape[1])

    def load(self, i: int, frames: Sequence[int]) -> torch.Tensor:
        return self.videos[i, list(frames)]

    def describe(self) -> str:
        return f"tensor{tuple(self.videos.shape)}"


class ListSource(VideoSource):
    """A list of videos (F_i, C, H, W) of possibly different lengths (uint8 or float in [0, 1])."""

    def __init__(self, videos: Sequence[Any], keys: Sequence[str] | None = None):
        self.videos = [to_uint8_video(v if isinstance(v, torch.Tensor) else torch.as_tensor(v)) for v in videos]
        self.keys = list(keys) if keys is not None else [f"{i:08d}" for i in range(len(self.videos))]

    def length(self, i: int) -> int:
        return int(self.videos[i].shape[0])

    def load(self, i: int, frames: Sequence[int]) -> torch.Tensor:
        return self.videos[i][list(frames)]


class DatasetSource(VideoSource):
    """An fvdm dataset (map-style): items {"video": (F, C, H, W) in [-1, 1], "key": str}.

    Keys come from ``dataset.keys`` when the dataset exposes them, else ``%08d`` of the index
    (so listing never decodes every item); lengths from ``dataset.num_frames``.
    """

    def __init__(self, dataset: Any, name: str = "dataset"):
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError(f"{name}: evaluation needs a map-style dataset (finite, indexable); "
                            f"{type(dataset).__name__} is not. Write its clips to a directory first.")
        self.dataset, self.name = dataset, name
        keys = getattr(dataset, "keys", None)
        keys = keys() if callable(keys) else keys
        if keys is None and callable(getattr(dataset, "key", None)):
            keys = [dataset.key(i) for i in range(len(dataset))]  # cheap per-index key, no decoding
        self.keys = list(keys) if keys is not None else [f"{i:08d}" for i in range(len(dataset))]
        self._len = getattr(dataset, "num_frames", None)

    def length(self, i: int) -> int:
        if self._len is not None:
            return int(self._len)
        return int(self.dataset[i]["video"].shape[0])

    def load(self, i: int, frames: Sequence[int]) -> torch.Tensor:
        video = self.dataset[i]["video"]
        return to_uint8_video(torch.as_tensor(video)[list(frames)], self.name, value_range="-1_1")

    def describe(self) -> str:
        return self.name


def _read_mp4(path: Path) -> np.ndarray:
    try:
        import av
    except ImportError as exc:  # pragma: no cover
        raise ImportError(f"decoding {path.name} needs PyAV: pip install 'fvdm[video]'") from exc
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise ValueError(f"{path}: no video frames decoded")
    return np.stack(frames)  # (F, H, W, 3)


def _read_gif(path: Path) -> np.ndarray:
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)])


def _channels_first(a: np.ndarray, path: Path) -> torch.Tensor:
    """(F, H, W, C) or (F, C, H, W) with C in {1, 3} -> uint8 tensor (F, C, H, W)."""
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4:
        raise ValueError(f"{path}: expected a video array (F, H, W, C) or (F, C, H, W), got shape {a.shape}")
    if a.shape[-1] in (1, 3):
        a = a.transpose(0, 3, 1, 2)
    elif a.shape[1] not in (1, 3):
        raise ValueError(f"{path}: cannot find a 1- or 3-channel axis in shape {a.shape}")
    return to_uint8_video(torch.from_numpy(np.ascontiguousarray(a)), str(path))


class DirectorySource(VideoSource):
    """Videos in a directory, sorted lexicographically by file or sub-folder name."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"video directory not found: {self.root}")
        entries = []
        for p in sorted(self.root.iterdir()):
            if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
                entries.append(p)
            elif p.is_dir() and any(q.suffix.lower() in IMAGE_SUFFIXES for q in p.iterdir()):
                entries.append(p)
        if not entries:
            raise FileNotFoundError(
                f"{self.root} holds no videos ({', '.join(VIDEO_SUFFIXES)}) or frame folders ({', '.join(IMAGE_SUFFIXES)})"
            )
        self.paths = entries
        self.keys = [p.name for p in entries]
        self._lengths: dict[int, int] = {}

    def _frames_of(self, p: Path) -> list[Path]:
        return sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)

    def length(self, i: int) -> int:
        if i not in self._lengths:
            p = self.paths[i]
            if p.is_dir():
                n = len(self._frames_of(p))
            elif p.suffix.lower() == ".npy":
                n = int(np.load(p, mmap_mode="r").shape[0])
            elif p.suffix.lower() == ".gif":
                from PIL import Image

                with Image.open(p) as im:
                    n = int(getattr(im, "n_frames", 1))
            else:
                n = int(self._read(i).shape[0])
            self._lengths[i] = n
        return self._lengths[i]

    def _read(self, i: int, frames: Sequence[int] | None = None) -> torch.Tensor:
        p = self.paths[i]
        if p.is_dir():
            from PIL import Image

            files = self._frames_of(p)
            files = [files[j] for j in frames] if frames is not None else files
            arr = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
            return _channels_first(arr, p)
        suffix = p.suffix.lower()
        if suffix == ".npy":
            arr = np.load(p, mmap_mode="r")
            arr = np.asarray(arr[list(frames)] if frames is not None else arr)
        elif suffix == ".gif":
            arr = _read_gif(p)
        else:
            arr = _read_mp4(p)
        video = _channels_first(arr, p)
        return video[list(frames)] if frames is not None and suffix != ".npy" else video

    def load(self, i: int, frames: Sequence[int]) -> torch.Tensor:
        return self._read(i, frames)

    def describe(self) -> str:
        return str(self.root)
