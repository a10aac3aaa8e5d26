"""Moving digits: deterministic bouncing-digit clips from scikit-learn's bundled digits.

The 1797 real handwritten 8x8 digits of ``sklearn.datasets.load_digits`` (shipped
inside the scikit-learn wheel, no download) are split once, by digit image, into
train/val/test (80/10/10, a fixed permutation independent of ``seed``), upscaled to
``digit_size`` pixels with bicubic interpolation (PIL, float mode, clipped to
[0, 1]) and moved with constant velocity on a square canvas, bouncing off the
walls. Overlapping digits combine by ``max`` (as Moving MNIST does).

Clip ``i`` of a split is a pure function of ``(seed, split, i)`` and the config:
its random draws come from ``numpy.random.Generator(PCG64(SeedSequence([seed,
split_id, i])))``, so the same index always gives the same video, in any worker,
on any machine, regardless of worker count or access order.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from fvdm.core.interfaces import PluginConfig

SPLITS = ("train", "val", "test")
_SPLIT_ID = {"train": 0, "val": 1, "test": 2}
_SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
_SPLIT_PERMUTATION_SEED = 20240611  # fixed: the test digits never change with the run seed
DEFAULT_NUM_CLIPS = {"train": 10000, "val": 512, "test": 512}


def available() -> tuple[bool, str]:
    try:
        import sklearn.datasets  # noqa: F401
    except Exception as exc:  # pragma: no cover - depends on the environment
        return False, f"scikit-learn is not importable ({type(exc).__name__}: {exc})"
    return True, ""


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) float32 in [0, 1], labels (1797,) int64)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError(
            "moving_digits needs scikit-learn's bundled digits (a core dependency): pip install 'scikit-learn>=1.3'"
        ) from exc
    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


@functools.lru_cache(maxsize=4)
def split_indices(split: str) -> np.ndarray:
    """Indices into the 1797 sklearn digits that belong to ``split`` (disjoint, fixed)."""
    if split not in _SPLIT_ID:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    n = len(_load_digits()[1])
    perm = np.random.default_rng(_SPLIT_PERMUTATION_SEED).permutation(n)
    n_train = int(round(_SPLIT_FRACTIONS[0] * n))
    n_val = int(round(_SPLIT_FRACTIONS[1] * n))
    parts = {"train": perm[:n_train], "val": perm[n_train:n_train + n_val], "test": perm[n_train + n_val:]}
    return np.sort(parts[split])


@functools.lru_cache(maxsize=8)
def upscaled_digits(size: int) -> np.ndarray:
    """All 1797 digits resized to (size, size) with bicubic interpolation, clipped to [0, 1]."""
    from PIL import Image

    images, _ = _load_digits()
    if size == 8:
        return images.copy()
    out = np.empty((len(images), size, size), np.float32)
    for k, img in enumerate(images):
        out[k] = np.asarray(Image.fromarray(img, mode="F").resize((size, size), Image.BICUBIC))
    return np.clip(out, 0.0, 1.0)


def _bounce(p0: np.ndarray, v: np.ndarray, steps: np.ndarray, span: int) -> np.ndarray:
    """Positions of a point moving at constant velocity reflecting in [0, span].

    p0, v: (D,); steps: (F,) -> (F, D) integer pixel offsets (triangle wave).
    """
    if span <= 0:
        return np.zeros((len(steps), len(p0)), np.int64)
    p = np.mod(p0[None, :] + v[None, :] * steps[:, None], 2 * span)  # (F, D)
    p = np.where(p > span, 2 * span - p, p)
    return np.clip(np.rint(p), 0, span).astype(np.int64)


class MovingDigits(torch.utils.data.Dataset):
    """Map-style dataset of bouncing sklearn digits: item ``i`` is a fixed function of (seed, split, i).

    Items: ``{"video": (F, C, H, W) float32 in [-1, 1], "key": str, "label": int}``
    (``label`` = class of the first digit, present when ``class_conditional``).
    """

    class Config(PluginConfig):
        num_frames: int = Field(16, ge=1, le=1024)
        resolution: int = Field(32, ge=8, le=512, description="canvas side; 32 or 64 are the standard sizes")
        channels: Literal[1, 3] = Field(1, description="3 replicates the grayscale canvas to RGB")
        split: Literal["train", "val", "test"] = "train"
        num_clips: int | None = Field(None, ge=1, description="default 10000 train / 512 val and test")
        min_digits: int = Field(1, ge=1, le=8)
        max_digits: int = Field(3, ge=1, le=8)
        num_digits: int | None = Field(None, ge=1, le=8, description="shortcut: min_digits = max_digits = this")
        digit_size: int | None = Field(None, ge=4, description="upscaled digit side; default 3/8 of resolution, at least 8")
        speed_min: float = Field(1.0, ge=0, description="pixels per frame at resolution 32 (scaled with resolution)")
        speed_max: float = Field(2.5, ge=0)
        seed: int = Field(0, ge=0)
        class_conditional: bool = Field(False, description="add 'label' = class of the first digit; num_classes=10")

        @model_validator(mode="after")
        def _check(self) -> "MovingDigits.Config":
            lo, hi = self.digit_range()
            if lo > hi:
                raise ValueError(f"min_digits ({lo}) > max_digits ({hi}); set min_digits <= max_digits")
            if self.speed_min > self.speed_max:
                raise ValueError(f"speed_min ({self.speed_min}) > speed_max ({self.speed_max})")
            if self.digit_size is not None and self.digit_size > self.resolution:
                raise ValueError(f"digit_size {self.digit_size} exceeds resolution {self.resolution}")
            return self

        def digit_range(self) -> tuple[int, int]:
            if self.num_digits is not None:
                return self.num_digits, self.num_digits
            return self.min_digits, self.max_digits

    def __init__(self, cfg: "MovingDigits.Config"):
        self.cfg = cfg
        self.num_frames = cfg.num_frames
        self.channels = cfg.channels
        self.resolution = cfg.resolution
        self.num_classes = 10 if cfg.class_conditional else 0
        self.split = cfg.split
        self.num_clips = cfg.num_clips if cfg.num_clips is not None else DEFAULT_NUM_CLIPS[cfg.split]
        self.digit_size = cfg.digit_size or min(cfg.resolution, max(8, round(cfg.resolution * 3 / 8)))
        self._digits = upscaled_digits(self.digit_size)
        self._labels = _load_digits()[1]
        self._pool = split_indices(cfg.split)  # digit images this split may use
        self._scale = cfg.resolution / 32.0

    def __len__(self) -> int:
        return self.num_clips

    # -- generation -----------------------------------------------------------------
    def _rng(self, index: int) -> np.random.Generator:
        ss = np.random.SeedSequence([self.cfg.seed, _SPLIT_ID[self.split], int(index)])
        return np.random.Generator(np.random.PCG64(ss))

    def metadata(self, index: int) -> dict[str, Any]:
        """The random draws of clip ``index``: digit image ids, labels, start positions, velocities."""
        index = self._check_index(index)
        rng = self._rng(index)
        lo, hi = self.cfg.digit_range()
        n = int(rng.integers(lo, hi + 1))
        ids = self._pool[rng.integers(0, len(self._pool), size=n)]
        span = self.resolution - self.digit_size
        start = rng.uniform(0, max(span, 0), size=(n, 2))  # (n, [y, x])
        speed = rng.uniform(self.cfg.speed_min, self.cfg.speed_max, size=n) * self._scale
        angle = rng.uniform(0, 2 * np.pi, size=n)
        velocity = np.stack([speed * np.sin(angle), speed * np.cos(angle)], axis=1)  # (n, [vy, vx])
        return {
            "digit_ids": ids,
            "labels": self._labels[ids],
            "start": start,
            "velocity": velocity,
        }

    def trajectories(self, index: int) -> np.ndarray:
        """Top-left pixel of each digit per frame: (num_digits, F, 2) as [y, x]."""
        meta = self.metadata(index)
        return self._positions(meta)

    def _positions(self, meta: dict[str, Any]) -> np.ndarray:
        span = self.resolution - self.digit_size
        steps = np.arange(self.num_frames, dtype=np.float64)
        pos = _bounce(meta["start"].reshape(-1), meta["velocity"].reshape(-1), steps, span)  # (F, n*2)
        return pos.reshape(self.num_frames, -1, 2).transpose(1, 0, 2)  # (n, F, 2)

    def render(self, index: int, meta: dict[str, Any] | None = None) -> np.ndarray:
        """Clip ``index`` as a float32 canvas (F, H, W) in [0, 1]."""
        meta = self.metadata(index) if meta is None else meta
        pos = self._positions(meta)
        s, r = self.digit_size, self.resolution
        canvas = np.zeros((self.num_frames, r, r), np.float32)  # (F, H, W)
        for d, img in zip(pos, self._digits[meta["digit_ids"]]):
            for f, (y, x) in enumerate(d.tolist()):
                patch = canvas[f, y:y + s, x:x + s]  # a view: max-composite in place
                np.maximum(patch, img, out=patch)
        return canvas

    def ground_truth(self, index: int, meta: dict[str, Any] | None = None) -> torch.Tensor:
        """The clip as (F, C, H, W) float32 in [-1, 1]; the same index always gives the same video."""
        canvas = torch.from_numpy(self.render(index, meta))  # (F, H, W)
        video = canvas.mul_(2.0).sub_(1.0).unsqueeze(1)  # (F, 1, H, W)
        if self.channels == 3:
            video = video.expand(-1, 3, -1, -1).contiguous()  # (F, 3, H, W)
        return video

    def get_batch(self, indices: "list[int] | range | np.ndarray") -> torch.Tensor:
        """Stacked clips (B, F, C, H, W)."""
        return torch.stack([self.ground_truth(int(i)) for i in indices])

    def label(self, index: int) -> int:
        return int(self.metadata(index)["labels"][0])

    def key(self, index: int) -> str:
        return f"moving_digits/{self.split}/s{self.cfg.seed}/{int(index):06d}"

    def _check_index(self, index: int) -> int:
        index = int(index)
        if index < 0:
            index += self.num_clips
        if not 0 <= index < self.num_clips:
            raise IndexError(f"clip index {index} out of range for {self.num_clips} clips ({self.split} split)")
        return index

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = self._check_index(index)
        meta = self.metadata(index)
        item: dict[str, Any] = {"video": self.ground_truth(index, meta), "key": self.key(index)}
        if self.cfg.class_conditional:
            item["label"] = int(meta["labels"][0])
        return item

    def __repr__(self) -> str:
        return (f"MovingDigits(split={self.split}, clips={self.num_clips}, frames={self.num_frames}, "
                f"res={self.resolution}, channels={self.channels}, seed={self.cfg.seed})")
