"""Tiny synthetic video fixtures for tests and the data-loading benchmark.

Clips are smooth, distinct gradients (so lossy codecs keep them recognisable):
``synthetic_clip(seed, T, H, W, C)`` is a pure function of its arguments.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Iterable

import numpy as np

from fvdm.plugins.datasets import video_io as vio
from fvdm.plugins.datasets.pack import encode_sample


def synthetic_clip(seed: int, frames: int = 12, height: int = 16, width: int = 16, channels: int = 3) -> np.ndarray:
    """uint8 (T, H, W, C): a moving bright square on a per-seed colour gradient."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(30, 200, size=(channels,))
    yy, xx = np.mgrid[0:height, 0:width]
    out = np.empty((frames, height, width, channels), np.uint8)
    s = max(2, height // 4)
    for t in range(frames):
        img = base[None, None, :] + 40 * np.sin((yy[..., None] + 2 * t) / 5.0) * np.cos(xx[..., None] / 7.0)
        y0, x0 = (t * 2 + seed) % (height - s), (t + 3 * seed) % (width - s)
        img[y0:y0 + s, x0:x0 + s] = 250
        out[t] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def write_tar(path: "str | Path", members: Iterable[tuple[str, bytes]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    return path


def write_clip_shards(dst: "str | Path", num_shards: int, clips_per_shard: int, *, storage: str = "npy",
                      frames: int = 12, size: int = 16, channels: int = 3, num_classes: int = 0,
                      prefix: str = "shard") -> list[Path]:
    """Shards of synthetic clips; key ``s{shard}_c{clip}``, label = global index % num_classes."""
    paths = []
    for s in range(num_shards):
        members: list[tuple[str, bytes]] = []
        for c in range(clips_per_shard):
            g = s * clips_per_shard + c
            clip = synthetic_clip(g, frames, size, size, channels)
            label = g % num_classes if num_classes else None
            members += list(encode_sample(f"s{s:03d}_c{c:03d}", clip, storage, label, {"g": g}).items())
        paths.append(write_tar(Path(dst) / f"{prefix}-{s:03d}.tar", members))
    return paths


def write_video_folder(root: "str | Path", classes: dict[str, int], *, frames: int = 12, size: int = 16,
                       as_frames: bool = False, ext: str = "png", pad: bool = True) -> list[Path]:
    """UCF101-style tree ``root/<class>/<video>``: mp4 files, or frame folders when ``as_frames``."""
    out = []
    g = 0
    for cls, n in classes.items():
        for v in range(n):
            clip = synthetic_clip(g, frames, size, size, 3)
            g += 1
            if as_frames:
                d = Path(root) / cls / f"v_{cls}_{v:02d}"
                d.mkdir(parents=True, exist_ok=True)
                for i, f in enumerate(clip):
                    name = f"{i:04d}.{ext}" if pad else f"{i}.{ext}"
                    (d / name).write_bytes(vio.encode_image(f, ext))
                out.append(d)
            else:
                p = Path(root) / cls / f"v_{cls}_{v:02d}.mp4"
                p.parent.mkdir(parents=True, exist_ok=True)
                vio.encode_video(clip, p)
                out.append(p)
    return out
