"""A per-frame digit detector for moving-digits clips: which digits are in a frame, and where.

Fully convolutional, frame by frame: (N, 1, 32, 32) in [-1, 1] -> an 8x8 map of 11-way
class logits (background + digits 0-9) and a 2-channel sub-cell offset map. It is trained
by ``benchmarks/train_digits_frame_net.py`` from the generator's own truth: a digit's
centre cell carries its class, every other cell is background, and the 3x3 cells around
a centre regress the centre's offset from themselves. Weights ship in
``weights/digits_frame_net.pt`` with their sha256 and a ``.json`` (held-out accuracy, recipe).

:func:`detect` turns the maps into detections: per frame and class, 3x3 local maxima of
the class probability whose 3x3 probability mass (the confidence) reaches ``threshold``;
the position is the probability-weighted mean of (cell + offset) over that window, in
pixels of the 32x32 canvas (a digit's centre = its top-left + digit_size / 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import Field
from torch import nn

from fvdm.core.interfaces import PluginConfig
from fvdm.plugins.evaluators.common import load_extractor_net, to_uint8_video
from fvdm.plugins.evaluators.weights import pinned_sha256 as weights_pinned_sha256

WEIGHTS_FILE = "digits_frame_net.pt"
RESOLUTION = 32
GRID = 8  # class-map side: one cell = 4x4 pixels
CELL = RESOLUTION // GRID
NUM_CLASSES = 11  # 0 = background, 1 + d = digit d
DIGIT_SIZE = 12  # moving_digits' digit side at resolution 32 (3/8 of the canvas)


class DigitsFrameNet(nn.Module):
    """(N, 1, 32, 32) in [-1, 1] -> class logits (N, 11, 8, 8), centre offsets (N, 2, 8, 8) in cells."""

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2),  # 16x16
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(), nn.MaxPool2d(2),  # 8x8
            # two 3x3 convs at 8x8: receptive field 26 px, enough to see a whole 12 px digit and its neighbours
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(),
            nn.Conv2d(4 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(),
        )
        self.classes = nn.Conv2d(4 * w, NUM_CLASSES, 1)
        self.offsets = nn.Conv2d(4 * w, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)  # (N, 4w, 8, 8)
        return self.classes(h), self.offsets(h)


def frames_to_net_input(videos: torch.Tensor) -> torch.Tensor:
    """uint8 (B, F, C, H, W) -> (B*F, 1, 32, 32) float in [-1, 1] (grey = channel mean)."""
    x = rearrange(videos.float().mean(dim=2, keepdim=True), "b f c h w -> (b f) c h w") / 127.5 - 1.0
    if x.shape[-2:] != (RESOLUTION, RESOLUTION):
        x = F.interpolate(x, size=(RESOLUTION, RESOLUTION), mode="bilinear", align_corners=False, antialias=True)
    return x


def centre_targets(centres: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training targets from the generator's truth.

    centres: (N, D, 2) [y, x] digit centres in 32x32 pixels; labels: (N, D) digit class, -1 = no digit.
    Returns class map (N, 8, 8) long (0 = background), offsets (N, 2, 8, 8) = centre / CELL - cell,
    and the offset mask (N, 8, 8) bool (the 3x3 cells around every centre).
    """
    n = centres.shape[0]
    cls = torch.zeros(n, GRID, GRID, dtype=torch.long)
    off = torch.zeros(n, 2, GRID, GRID)
    omask = torch.zeros(n, GRID, GRID, dtype=torch.bool)
    cells = (centres / CELL).floor().long().clamp(0, GRID - 1)  # (N, D, 2)
    for d in range(centres.shape[1]):  # D <= 3: later digits win a shared cell, as they win the max-composite
        ok = labels[:, d] >= 0
        rows = torch.nonzero(ok).squeeze(1)
        cy, cx = cells[rows, d, 0], cells[rows, d, 1]
        cls[rows, cy, cx] = labels[rows, d] + 1
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                y, x = (cy + dy).clamp(0, GRID - 1), (cx + dx).clamp(0, GRID - 1)
                off[rows, 0, y, x] = centres[rows, d, 0] / CELL - y.float()
                off[rows, 1, y, x] = centres[rows, d, 1] / CELL - x.float()
                omask[rows, y, x] = True
    return cls, off, omask


@dataclass
class Detections:
    """Per frame (N) and digit class (10) and cell (8x8): kept peaks, their confidence and centre.

    keep (N, 10, 8, 8) bool; conf (N, 10, 8, 8) in [0, 1]; pos (N, 10, 8, 8, 2) [y, x] centre in
    32x32 pixels; frame_conf (N,) = the largest 3x3 digit-class mass anywhere in the frame.
    """

    keep: torch.Tensor
    conf: torch.Tensor
    pos: torch.Tensor
    frame_conf: torch.Tensor

    @property
    def present(self) -> torch.Tensor:
        """(N, 10) bool: digit class d is detected somewhere in the frame."""
        return self.keep.flatten(2).any(dim=2)


def detect(logits: torch.Tensor, offsets: torch.Tensor, threshold: float = 0.5) -> Detections:
    """Class logits (N, 11, 8, 8) + offsets (N, 2, 8, 8) -> :class:`Detections`."""
    p = logits.float().softmax(dim=1)[:, 1:]  # (N, 10, 8, 8) digit-class probabilities
    # 3x3 sums (zero padding): a centre on a cell border splits its mass between two cells
    mass = F.avg_pool2d(p, 3, stride=1, padding=1, count_include_pad=True) * 9  # (N, 10, 8, 8)
    conf = mass.clamp(max=1.0)
    peak = p >= F.max_pool2d(p, 3, stride=1, padding=1)  # 3x3 non-maximum suppression per class
    keep = peak & (conf >= threshold)
    grid = torch.arange(GRID, dtype=p.dtype)
    gy = rearrange(grid, "h -> 1 1 h 1") + offsets[:, 0:1].float()  # (N, 1, 8, 8) centre estimate in cells
    gx = rearrange(grid, "w -> 1 1 1 w") + offsets[:, 1:2].float()
    wy = F.avg_pool2d(p * gy, 3, stride=1, padding=1, count_include_pad=True) * 9
    wx = F.avg_pool2d(p * gx, 3, stride=1, padding=1, count_include_pad=True) * 9
    pos = torch.stack([wy, wx], dim=-1) / mass.clamp(min=1e-8).unsqueeze(-1) * CELL  # (N, 10, 8, 8, 2) pixels
    return Detections(keep=keep, conf=conf, pos=pos, frame_conf=conf.flatten(1).amax(dim=1))


def pinned_sha256() -> str | None:
    """The committed sha256 of the bundled weights."""
    return weights_pinned_sha256(WEIGHTS_FILE)


class DigitsFrameDetector:
    """Runs :class:`DigitsFrameNet` on videos and returns per-frame :class:`Detections`."""

    class Config(PluginConfig):
        weights: str | None = None  # default: the bundled weights/digits_frame_net.pt
        sha256: str | None = None
        batch_size: int = 1024  # frames per forward pass
        device: str = "cpu"

    def __init__(self, cfg: "DigitsFrameDetector.Config", *, model: nn.Module | None = None):
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        expected = cfg.sha256 or (pinned_sha256() if cfg.weights is None and model is None else None)
        net, self.weights_sha256 = load_extractor_net(DigitsFrameNet, WEIGHTS_FILE, cfg.weights, sha256=expected,
                                                      what="digits frame net", model=model)
        self.model = net.to(self.device)
        self.detector_id = "digits_frame:v1:grey32"

    @torch.inference_mode()
    def __call__(self, videos: torch.Tensor, threshold: float = 0.5) -> Detections:
        """uint8 videos (B, F, C, H, W) -> Detections over the B*F frames (frame index = b * F + f);
        positions are scaled back to the input's pixels."""
        if videos.ndim != 5 or videos.dtype != torch.uint8:
            raise ValueError(f"digits frame net expects uint8 videos (B, F, C, H, W), got {videos.dtype} "
                             f"{tuple(videos.shape)}; convert with to_uint8_video")
        x = frames_to_net_input(videos)  # (B*F, 1, 32, 32)
        outs = [self.model(x[i:i + self.cfg.batch_size].to(self.device)) for i in range(0, len(x), self.cfg.batch_size)]
        logits = torch.cat([o[0].float().cpu() for o in outs])
        offsets = torch.cat([o[1].float().cpu() for o in outs])
        det = detect(logits, offsets, threshold)
        scale = videos.shape[-2] / RESOLUTION, videos.shape[-1] / RESOLUTION
        det.pos = det.pos * torch.tensor(scale, dtype=det.pos.dtype)
        return det


def as_uint8(x: object, name: str, value_range: str = "-1_1") -> torch.Tensor:
    """Videos (B, F, C, H, W) or a directory of videos (``fvdm eval --fake DIR``): uint8 as is, float in
    ``value_range`` ("-1_1" or "0_1") -> uint8."""
    from fvdm.plugins.evaluators.recon import load_videos

    x = load_videos(x)
    if value_range not in ("-1_1", "0_1"):
        raise ValueError(f"value_range must be '-1_1' or '0_1', got {value_range!r}")
    x = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x
    if x.is_floating_point() and value_range == "-1_1" and x.numel():
        lo, hi = float(x.min()), float(x.max())
        if not (lo >= -1 - 1e-6 and hi <= 1 + 1e-6) or x.isnan().any():
            raise ValueError(f"{name}: float pixels must lie in [-1, 1]; observed [{lo:.4g}, {hi:.4g}]. "
                             "Pass uint8 frames, clamp to [-1, 1], or set value_range='0_1' for [0, 1] floats")
        x = x.clamp(-1, 1)
    x = to_uint8_video(x, name, value_range=value_range)
    if x.ndim != 5:
        raise ValueError(f"{name} must be videos (B, F, C, H, W), got {tuple(x.shape)}")
    return x


class FrameDigitsConfig(PluginConfig):
    """Shared by the per-frame digit metrics (digit_recognisability, digit_identity, trajectory_error)."""

    value_range: Literal["-1_1", "0_1"] = Field("-1_1", description="float videos are in '-1_1' (the dataset "
                                                                      "contract) or '0_1'; "
                                                 "uint8 is always accepted")
    threshold: float = Field(0.5, gt=0, le=1, description="a digit is found where its 3x3 class mass >= this")
    weights: str | None = Field(None, description="detector weights (default: the bundled digits_frame_net.pt)")
    device: str = "cpu"


class FrameDigitsMetric:
    """Base of the per-frame digit metrics: input boundary checks and one lazily built detector."""

    Config = FrameDigitsConfig

    def __init__(self, cfg: FrameDigitsConfig, *, detector: DigitsFrameDetector | None = None):
        self.cfg = cfg
        self._detector = detector

    @property
    def detector(self) -> DigitsFrameDetector:
        if self._detector is None:
            self._detector = DigitsFrameDetector(DigitsFrameDetector.Config(weights=self.cfg.weights,
                                                                            device=self.cfg.device))
        return self._detector

    def videos(self, x: object, name: str) -> torch.Tensor:
        return as_uint8(x, name, self.cfg.value_range)

    def detections(self, videos: torch.Tensor) -> Detections:
        """uint8 (B, F, C, H, W) -> Detections over B*F frames (frame b * F + f)."""
        return self.detector(videos, self.cfg.threshold)

    def provenance(self) -> dict[str, object]:
        return {"detector_id": self.detector.detector_id, "weights_sha256": self.detector.weights_sha256,
                "threshold": self.cfg.threshold}


def frame_mask(mask: object, shape: tuple[int, int], default: torch.Tensor | None = None) -> torch.Tensor:
    """(B, F) bool of the frames to score: ``mask`` as given, else ``default``, else all; refuses empty or misshaped."""
    if mask is None:
        m = default if default is not None else torch.ones(shape, dtype=torch.bool)
    else:
        m = torch.as_tensor(mask, dtype=torch.bool)
        if m.ndim == 1:
            m = m.expand(shape[0], -1)
    if tuple(m.shape) != tuple(shape):
        raise ValueError(f"mask must be (B, F) = {tuple(shape)} or (F,), got {tuple(m.shape)}")
    if not m.any():
        raise ValueError("mask selects no frames to score; pass mask=None to score every frame")
    return m


def context_frames(context: object, num_frames: int) -> torch.Tensor:
    """Given-frame indices (list of ints) or an (F,) bool mask -> (F,) bool."""
    c = torch.as_tensor(context)
    if c.dtype == torch.bool:
        if c.shape != (num_frames,):
            raise ValueError(f"context mask must be (F,) = ({num_frames},), got {tuple(c.shape)}")
        return c
    idx = c.long().reshape(-1)
    if idx.numel() and (idx.min() < -num_frames or idx.max() >= num_frames):
        raise ValueError(f"context indices {idx.tolist()} out of range for {num_frames} frames")
    out = torch.zeros(num_frames, dtype=torch.bool)
    out[idx] = True
    return out


def oracle_detections(centres: torch.Tensor, labels: torch.Tensor, resolution: int = RESOLUTION) -> Detections:
    """What a perfect detector would return: one confident peak per true digit at its exact centre.

    centres (N, D, 2) [y, x] px on a ``resolution`` canvas, labels (N, D) (-1 = none). Used to check the
    metrics in closed form (tests) and as their upper bound.
    """
    n = centres.shape[0]
    cell = resolution / GRID
    keep = torch.zeros(n, 10, GRID, GRID, dtype=torch.bool)
    pos = torch.zeros(n, 10, GRID, GRID, 2)
    cells = (centres / cell).floor().long().clamp(0, GRID - 1)
    for d in range(centres.shape[1]):
        rows = torch.nonzero(labels[:, d] >= 0).squeeze(1)
        lab, cy, cx = labels[rows, d], cells[rows, d, 0], cells[rows, d, 1]
        keep[rows, lab, cy, cx] = True
        pos[rows, lab, cy, cx] = centres[rows, d].float()
    conf = keep.float()
    return Detections(keep=keep, conf=conf, pos=pos, frame_conf=conf.flatten(1).amax(dim=1))
