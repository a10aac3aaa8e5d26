"""I3D (Kinetics-400) FVD feature extractor: 400-d logits averaged over time.

Two weight formats, one interface ``extractor(videos uint8 (B, F, C, H, W)) -> (B, 400)``:

* ``i3d_torchscript.pt`` (StyleGAN-V, the protocol Latte and FVDM report): loaded with
  ``torch.jit.load`` and called as ``detector(x, rescale=True, resize=True,
  return_features=True)`` on uint8 (B, 3, T, H, W); rescaling to [-1, 1] and the
  bilinear resize to 224 happen inside the detector.
* ``i3d_pretrained_400.pt`` (VideoGPT/TATS/cd-fvd): the state dict of the public
  PyTorch port, whose parameter names and shapes :class:`InceptionI3d` reproduces
  (``fvdm/plugins/evaluators/reference/i3d_piergiaj_state_dict_keys.tsv``); frames are resized to
  224 with torch bilinear (align_corners=False) and mapped to [-1, 1] as 2x/255 - 1.

T >= 9 frames are required: three stride-2 temporal reductions then a 2-frame average pool.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from fvdm.core.interfaces import PluginConfig
from fvdm.plugins.evaluators.common import load_state_dict_checked, to_rgb, to_uint8_video
from fvdm.plugins.evaluators.weights import WeightsError, is_torchscript_archive, resolve_weights

MIN_FRAMES = 9
NUM_CLASSES = 400


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding (front gets the smaller half)."""
    pad = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return pad // 2, pad - pad // 2


def _pad3d(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    t, h, w = x.shape[2:]
    pt, ph, pw = (_same_pad(s, k, st) for s, k, st in zip((t, h, w), kernel, stride))
    return F.pad(x, (*pw, *ph, *pt))  # zero padding, as the port does (also before max-pools)


class SamePadMaxPool3d(nn.Module):
    def __init__(self, kernel: Sequence[int], stride: Sequence[int]):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_pad3d(x, self.kernel, self.stride), self.kernel, self.stride)


class Unit3D(nn.Module):
    """Conv3d (SAME padding) + optional BatchNorm3d + optional ReLU; names ``conv3d``/``bn``."""

    def __init__(self, cin: int, cout: int, kernel: Sequence[int] = (1, 1, 1), stride: Sequence[int] = (1, 1, 1), *,
                 bn: bool = True, relu: bool = True, bias: bool = False, bn_eps: float = 1e-5):
        super().__init__()
        self.kernel, self.stride, self.relu = tuple(kernel), tuple(stride), relu
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(cout, eps=bn_eps, momentum=0.001) if bn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad3d(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class InceptionModule3D(nn.Module):
    """Four branches: 1x1 | 1x1->3x3 | 1x1->3x3 | maxpool->1x1 (branch names b0, b1a/b1b, b2a/b2b, b3b)."""

    def __init__(self, cin: int, c: Sequence[int], bn_eps: float):
        super().__init__()
        self.b0 = Unit3D(cin, c[0], bn_eps=bn_eps)
        self.b1a = Unit3D(cin, c[1], bn_eps=bn_eps)
        self.b1b = Unit3D(c[1], c[2], (3, 3, 3), bn_eps=bn_eps)
        self.b2a = Unit3D(cin, c[3], bn_eps=bn_eps)
        self.b2b = Unit3D(c[3], c[4], (3, 3, 3), bn_eps=bn_eps)
        self.b3a = SamePadMaxPool3d((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(cin, c[5], bn_eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


# (name, in_channels, branch widths) of the Inception modules
_MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


class InceptionI3d(nn.Module):
    """Inflated Inception-v1 on (B, 3, T, 224, 224) in [-1, 1]; returns logits (B, classes) averaged over time."""

    def __init__(self, num_classes: int = NUM_CLASSES, bn_eps: float = 1e-5):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2), bn_eps=bn_eps)
        self.MaxPool3d_2a_3x3 = SamePadMaxPool3d((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64, bn_eps=bn_eps)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3), bn_eps=bn_eps)
        self.MaxPool3d_3a_3x3 = SamePadMaxPool3d((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionModule3D(*_MIXED["Mixed_3b"], bn_eps)
        self.Mixed_3c = InceptionModule3D(*_MIXED["Mixed_3c"], bn_eps)
        self.MaxPool3d_4a_3x3 = SamePadMaxPool3d((3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            setattr(self, name, InceptionModule3D(*_MIXED[name], bn_eps))
        self.MaxPool3d_5a_2x2 = SamePadMaxPool3d((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionModule3D(*_MIXED["Mixed_5b"], bn_eps)
        self.Mixed_5c = InceptionModule3D(*_MIXED["Mixed_5c"], bn_eps)
        self.logits = Unit3D(1024, num_classes, bn=False, relu=False, bias=True)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, 1024, T', H', W') before the average pool."""
        for name in ("Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
                     "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
                     "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c"):
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] < MIN_FRAMES:
            raise ValueError(f"I3D needs at least {MIN_FRAMES} frames, got T={x.shape[2]} (input {tuple(x.shape)})")
        x = F.avg_pool3d(self.features(x), kernel_size=(2, 7, 7), stride=1)  # 224 input -> 7x7 maps
        x = self.logits(x)  # (B, classes, T'', 1, 1); dropout is identity at eval
        return x.squeeze(4).squeeze(3).mean(dim=2)  # (B, classes)


def resize_frames_torch(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, F, C, H, W) float -> (B, F, C, size, size), torch bilinear, align_corners=False."""
    b = x.shape[0]
    y = F.interpolate(rearrange(x, "b f c h w -> (b f) c h w"), size=(size, size), mode="bilinear",
                      align_corners=False)
    return rearrange(y, "(b f) c h w -> b f c h w", b=b)


class I3DExtractor:
    """I3D Kinetics-400 features for FVD (400-d, logits averaged over time; T >= 9)."""

    class Config(PluginConfig):
        weights: str | None = None  # path; default $FVDM_WEIGHTS_DIR/i3d_torchscript.pt, else i3d_pretrained_400.pt
        format: Literal["auto", "torchscript", "state_dict"] = "auto"
        sha256: str | None = None  # pin a hash for files whose public hash is not pinned
        bn_eps: float = 1e-5  # VideoGPT/TATS/cd-fvd copy of the port; the original port uses 1e-3
        resize: int = 224
        batch_size: int = 8
        device: str = "cpu"

    dim = NUM_CLASSES
    per_frame = False
    min_frames = MIN_FRAMES

    def __init__(self, cfg: "I3DExtractor.Config", *, model: nn.Module | None = None,
                 weights_sha256: str | None = None, fmt: str | None = None):
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        if model is not None:  # tests/benchmarks: an already-built network
            self.model, self.format = model, fmt or ("torchscript" if isinstance(model, torch.jit.ScriptModule) else "state_dict")
            self.weights_sha256 = weights_sha256 or "unverified-module"
        else:
            path, sha = self._find(cfg)
            self.weights_sha256 = sha
            fmt = cfg.format
            if fmt == "auto":
                fmt = "torchscript" if is_torchscript_archive(path) else "state_dict"
            self.format = fmt
            if fmt == "torchscript":
                with warnings.catch_warnings():  # torch >= 2.10 deprecates jit; the published detector is TorchScript
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self.model = torch.jit.load(str(path), map_location="cpu")
            else:
                self.model = InceptionI3d(bn_eps=cfg.bn_eps)
                load_state_dict_checked(self.model, torch.load(path, map_location="cpu", weights_only=True),
                                        f"I3D state dict {path}")
        self.model = self.model.eval().to(self.device)
        pre = "inside" if self.format == "torchscript" else f"torch-bilinear{cfg.resize}-bn{cfg.bn_eps:g}"
        self.extractor_id = f"i3d_k400:{self.format}:{pre}"

    @staticmethod
    def _find(cfg: "I3DExtractor.Config"):
        if cfg.weights is not None:
            return resolve_weights("i3d_pretrained_400" if cfg.format == "state_dict" else "i3d_torchscript",
                                   cfg.weights, sha256=cfg.sha256)
        errors = []
        keys = {"auto": ("i3d_torchscript", "i3d_pretrained_400"), "torchscript": ("i3d_torchscript",),
                "state_dict": ("i3d_pretrained_400",)}[cfg.format]
        for key in keys:
            try:
                return resolve_weights(key, sha256=cfg.sha256)
            except WeightsError as exc:
                errors.append(str(exc))
        raise WeightsError("no I3D weights found. " + " | ".join(errors))

    @torch.inference_mode()
    def __call__(self, videos: torch.Tensor) -> torch.Tensor:
        """uint8 (or float in [0, 1]) videos (B, F, C, H, W) -> float32 features (B, 400)."""
        if videos.ndim != 5:
            raise ValueError(f"I3D expects videos (B, F, C, H, W), got {tuple(videos.shape)}")
        if videos.shape[1] < MIN_FRAMES:
            raise ValueError(f"I3D needs at least {MIN_FRAMES} frames per clip, got F={videos.shape[1]}")
        videos = to_rgb(to_uint8_video(videos), channel_dim=2)
        out = []
        for i in range(0, videos.shape[0], self.cfg.batch_size):
            x = videos[i:i + self.cfg.batch_size].to(self.device)
            if self.format == "torchscript":
                x = rearrange(x, "b f c h w -> b c f h w").contiguous()  # StyleGAN-V feeds uint8 [B, C, T, H, W]
                feats = self.model(x, rescale=True, resize=True, return_features=True)
            else:
                x = resize_frames_torch(x.float(), self.cfg.resize) * (2.0 / 255.0) - 1.0
                feats = self.model(rearrange(x, "b f c h w -> b c f h w"))
            out.append(feats.float().cpu())
        return torch.cat(out).reshape(videos.shape[0], -1)


def init_random_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Deterministic, scale-preserving random weights with non-trivial BN statistics (tests, benchmarks)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.75)
            elif name.endswith("running_mean") or name.endswith("bias"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.05)
            elif name.endswith("bn.weight"):
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.75)
            else:  # conv / linear weights: He-normal
                fan_in = math.prod(t.shape[1:]) if t.ndim > 1 else 1
                t.copy_(torch.randn(t.shape, generator=g) * math.sqrt(2.0 / fan_in))
    return model
