"""video_folder: a directory of video files and/or per-video frame folders (UCF101 layout).

    root/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi     video file (PyAV)
    root/Archery/v_Archery_g01_c01/0001.jpg ...           frame folder (natural order)

A *video* is a video file or a directory holding image files (and no video files).
Frames of a folder are sorted in natural order (``2.png`` before ``10.png``); a
warning says so when the names are not zero-padded. Class labels come from the
first-level subfolder names (sorted, or in the order of a UCF101 ``classInd.txt``);
``split_file`` (e.g. UCF101 ``trainlist01.txt``) keeps only the listed videos (first
token per line, matched with or without extension).

Captions (``captions: sidecar``, the default) come from a text file of the same name
beside the video, the convention of common video fine-tuning tools:

    root/Archery/v_Archery_g01_c01.avi   ->  root/Archery/v_Archery_g01_c01.txt
    root/Archery/v_Archery_g01_c01/      ->  root/Archery/v_Archery_g01_c01.txt

An item has ``"caption"`` only when its video has such a file; ``captions: none``
ignores them.

Map-style: item ``i`` is one clip of video ``i``; its offset/flip come from a hash of
``(seed, epoch, path)``, independent of workers. A bad video is skipped (counted,
the next video is returned instead) or raises, by ``on_error``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from fvdm.core.interfaces import PluginConfig
from fvdm.plugins.datasets import video_io as vio
from fvdm.core.errors import DataError


def scan_videos(root: Path) -> list[tuple[str, str, list[str] | None]]:
    """Find videos under ``root``: ``(relpath, kind "file"|"frames", frame names or None)``,
    in natural order of relpath. Frame names are natural-sorted (warning once if not padded)."""
    found: list[tuple[str, str, list[str] | None]] = []
    unpadded: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = os.path.relpath(dirpath, root)
        videos = [f for f in filenames if f.lower().endswith(vio.VIDEO_EXTS) and not f.startswith(".")]
        images = [f for f in filenames if f.lower().endswith(vio.IMAGE_EXTS) and not f.startswith(".")]
        for f in videos:
            found.append((Path(rel_dir, f).as_posix() if rel_dir != "." else f, "file", None))
        if images and not videos and rel_dir != ".":
            names = sorted(images, key=vio.natural_key)
            if names != sorted(images):
                unpadded.append(rel_dir)
            found.append((Path(rel_dir).as_posix(), "frames", names))
            dirnames[:] = []  # a frame folder is a leaf
    if unpadded:
        warnings.warn(
            f"video_folder: frame names in {len(unpadded)} folder(s) (e.g. {unpadded[0]}) are not zero-padded; "
            "using natural order (2.png before 10.png). Zero-pad the names to silence this.", stacklevel=3)
    return sorted(found, key=lambda e: vio.natural_key(e[0]))


def read_list_file(path: Path) -> list[str]:
    lines = Path(path).read_text().splitlines()
    return [ln.split()[0].replace("\\", "/") for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


class VideoFolder(torch.utils.data.Dataset):
    """Clips from a folder of videos / frame folders; labels from subfolders (UCF101 layout).

    Items: ``{"video": (F, C, H, W) float32 in [-1, 1], "key": str, "label"?: int, "caption"?: str}``.
    """

    class Config(PluginConfig):
        root: str
        split_file: str | None = Field(None, description="keep only videos listed here (UCF101 trainlist01.txt)")
        class_index_file: str | None = Field(None, description="'<n> <ClassName>' lines (UCF101 classInd.txt)")
        labels: Literal["auto", "subfolder", "none"] = Field(
            "auto", description="auto: subfolder labels when every video lies in a subfolder")
        num_frames: int = Field(16, ge=1)
        stride: int = Field(1, ge=1)
        offset: Literal["random", "start", "center"] = "random"
        resolution: int | None = Field(None, ge=4, description="shorter side resize + center crop; None: from data")
        channels: Literal[1, 3] = 3
        flip: bool = False
        on_error: Literal["skip", "raise"] = "skip"
        captions: Literal["sidecar", "none"] = Field(
            "sidecar", description="sidecar: 'caption' from the same-name .txt beside each video; none: no captions")
        max_consecutive_skips: int = Field(32, ge=1, description="then fail instead of searching forever")
        seed: int = 0

    def __init__(self, cfg: "VideoFolder.Config"):
        self.cfg = cfg
        self.root = Path(cfg.root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"video_folder: root {self.root} is not a directory; set root: to a folder of "
                                    "videos or frame folders")
        entries = scan_videos(self.root)
        if cfg.split_file is not None:
            wanted = read_list_file(Path(cfg.split_file))
            want = set(wanted) | {os.path.splitext(w)[0] for w in wanted}
            kept = [e for e in entries if e[0] in want or os.path.splitext(e[0])[0] in want]
            missing = len(wanted) - len(kept)
            if missing > 0:
                warnings.warn(f"video_folder: {missing} of {len(wanted)} videos in {cfg.split_file} are not under "
                              f"{self.root}", stacklevel=2)
            entries = kept
        if not entries:
            raise FileNotFoundError(f"video_folder: no videos ({', '.join(vio.VIDEO_EXTS)}) or frame folders found "
                                    f"under {self.root}" + (f" matching {cfg.split_file}" if cfg.split_file else ""))
        self.entries = entries
        self.classes = self._classes(entries)
        self.labels = [self.classes.index(e[0].split("/")[0]) for e in entries] if self.classes else None
        self.num_frames, self.channels = cfg.num_frames, cfg.channels
        self.num_classes = len(self.classes)
        self.epoch = 0
        self.skips = vio.SkipCounter("video_folder")
        self._bad: set[int] = set()  # per process: videos already found unusable
        self.resolution = cfg.resolution if cfg.resolution is not None else self._peek_resolution()

    def _classes(self, entries: list[tuple[str, str, list[str] | None]]) -> list[str]:
        mode = self.cfg.labels
        nested = all("/" in e[0] for e in entries)
        if mode == "none" or (mode == "auto" and not nested):
            return []
        if not nested:
            flat = next(e[0] for e in entries if "/" not in e[0])
            raise ValueError(f"video_folder: labels: subfolder but {flat} is not inside a class subfolder")
        if self.cfg.class_index_file:
            order = [ln.split()[-1] for ln in Path(self.cfg.class_index_file).read_text().splitlines() if ln.strip()]
            unknown = sorted({e[0].split("/")[0] for e in entries} - set(order))
            if unknown:
                raise ValueError(f"video_folder: classes {unknown[:5]} are not in {self.cfg.class_index_file}")
            return order
        return sorted({e[0].split("/")[0] for e in entries})

    def _peek_resolution(self) -> int:
        for i in range(min(len(self), 4)):
            try:
                frames = self.read_frames(i, np.array([0]))
            except vio.BadSampleError:
                continue
            h, w = frames.shape[1:3]
            if h != w:
                raise ValueError(f"video_folder: frames of {self.entries[i][0]} are {h}x{w}; set resolution: R "
                                 "to resize the shorter side to R and center crop")
            return int(h)
        raise ValueError("video_folder: could not read any of the first videos to infer the resolution; set resolution")

    # -- public helpers ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip_counts(self) -> dict[str, int]:
        return self.skips.counts()

    def key(self, index: int) -> str:
        rel, kind, _ = self.entries[index]
        return os.path.splitext(rel)[0] if kind == "file" else rel

    def caption_path(self, index: int) -> Path:
        """The sidecar caption file of video ``index``: ``clip.mp4`` -> ``clip.txt``, frame folder ``clip/`` ->
        ``clip.txt`` beside it."""
        return self.root / f"{self.key(index)}.txt"

    def caption(self, index: int) -> str | None:
        """The caption of video ``index`` (its sidecar's text, stripped), or None without one."""
        path = self.caption_path(index)
        if self.cfg.captions == "none" or not path.is_file():
            return None
        try:
            return path.read_text(encoding="utf-8").strip()
        except UnicodeDecodeError as exc:
            raise vio.BadSampleError(str(path), f"caption is not UTF-8 text ({exc.reason} at byte {exc.start})",
                                     "format") from None

    def num_available(self, index: int) -> int | None:
        """Frame count of a frame folder (None for video files: known after decoding)."""
        names = self.entries[index][2]
        return None if names is None else len(names)

    def read_frames(self, index: int, indices: np.ndarray | None = None) -> np.ndarray:
        """uint8 (T, H, W, C) frames of video ``index`` (all, or just ``indices``)."""
        rel, kind, names = self.entries[index]
        path = self.root / rel
        if kind == "frames":
            assert names is not None
            sel = range(len(names)) if indices is None else indices
            return vio.read_frame_folder(path, names, sel)
        limit = None if indices is None else int(np.max(indices)) + 1
        frames = vio.decode_video(path, max_frames=limit, name=str(path))
        if indices is None:
            return frames
        if len(frames) <= int(np.max(indices)):
            raise vio.BadSampleError(str(path), f"video has {len(frames)} frames, needs {int(np.max(indices)) + 1}",
                                     "short")
        return frames[indices]

    def clip_frames(self, index: int, rng: np.random.Generator | None = None,
                    offset: str | None = None) -> np.ndarray:
        """uint8 (num_frames, H, W, C) frames of one clip of video ``index``."""
        cfg = self.cfg
        offset = offset or cfg.offset
        rel, kind, names = self.entries[index]
        if kind == "frames":
            assert names is not None
            idx = vio.clip_indices(len(names), cfg.num_frames, cfg.stride, offset, rng, str(self.root / rel))
            return self.read_frames(index, idx)
        path = self.root / rel
        return vio.decode_clip(
            path, lambda n: vio.clip_indices(n, cfg.num_frames, cfg.stride, offset, rng, str(path)), name=str(path))

    def _item(self, index: int) -> dict[str, Any]:
        rng = vio.key_seed(self.cfg.seed, self.epoch, self.entries[index][0])
        frames = self.clip_frames(index, rng)
        flip = bool(self.cfg.flip and rng.random() < 0.5)
        video = vio.to_model_clip(frames, channels=self.channels, resolution=self.cfg.resolution, flip=flip)
        if video.shape[-2:] != (self.resolution, self.resolution):
            raise vio.BadSampleError(str(self.root / self.entries[index][0]),
                                     f"frames are {tuple(video.shape[-2:])}, expected {self.resolution}x"
                                     f"{self.resolution}; set resolution to resize", "format")
        item: dict[str, Any] = {"video": video, "key": self.key(index)}
        if self.labels is not None:
            item["label"] = self.labels[index]
        caption = self.caption(index)
        if caption is not None:
            item["caption"] = caption
        return item

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"video index {index} out of range for {n} videos")
        index %= n
        for attempt in range(min(n, self.cfg.max_consecutive_skips)):
            i = (index + attempt) % n
            if i in self._bad:
                continue
            try:
                return self._item(i)
            except vio.BadSampleError as err:
                self.skips.handle(err, self.cfg.on_error)  # raises in on_error: raise
                self._bad.add(i)  # counted once; later requests skip it without decoding again
        raise DataError(
            f"video_folder: {min(n, self.cfg.max_consecutive_skips)} videos in a row from index {index} were "
            f"unusable (skipped so far: {self.skip_counts()}); check {self.root} or lower num_frames")
