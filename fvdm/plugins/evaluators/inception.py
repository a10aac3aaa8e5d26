"""FID InceptionV3 (pool3, 2048-d) with the parameter names of the public FID weights.

The network is torchvision's InceptionV3 layout with the FID graph's differences
(average pools that exclude padding in the A/C/E blocks, a max-pool branch in the
last E block), and 1008 logits; its state dict matches
``fvdm/plugins/evaluators/reference/inception_v3_fid_state_dict_keys.tsv`` and loads
``pt_inception-2015-12-05-6726825d.pth`` strictly (with or without BN counters).

Preprocessing presets:
* ``resize="tf1"`` (default, StyleGAN2-ADA/StyleGAN-V FID): TF1 ``resize_bilinear``
  (align_corners=False, no half-pixel centres) of [0, 255] pixels to 299, then (x - 128) / 128.
* ``resize="torch"`` (pytorch-fid): torch bilinear (align_corners=False) of x/255 to 299, then 2x - 1.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from fvdm.core.interfaces import PluginConfig
from fvdm.plugins.evaluators.common import load_extractor_net, to_rgb, to_uint8_video

SIZE = 299


class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: torch.Tensor) -> torch.Tensor:
    # The FID graph averages over valid pixels only (TF 'SAME' avg pool), unlike torchvision.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg3(x)),
        ], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin: int, pool: Literal["avg", "max"]):
        super().__init__()
        self.pool = pool  # the FID graph's last block max-pools its pool branch
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        p = _avg3(x) if self.pool == "avg" else F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(p)], 1)


class FIDInceptionV3(nn.Module):
    """(N, 3, 299, 299) normalised to [-1, 1] -> pool3 features (N, 2048)."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, "avg")
        self.Mixed_7c = InceptionE(2048, "max")
        self.fc = nn.Linear(2048, 1008)  # logits (unused for FID; kept so the public file loads strictly)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                     "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)
        return x.mean(dim=(2, 3))  # (N, 2048) pool3


def _tf1_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) interpolation weights of TF1 resize_bilinear (align_corners=False, no half-pixel)."""
    scale = n_in / n_out
    src = torch.arange(n_out, dtype=torch.float64) * scale
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    frac = src - i0.double()
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    w[torch.arange(n_out), i0] += 1 - frac
    w[torch.arange(n_out), i1] += frac
    return w


def resize_tf1(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TF1 ``tf.image.resize_bilinear`` (legacy, align_corners=False) of (N, C, H, W) float."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    wy = _tf1_matrix(h, size[0]).to(x)
    wx = _tf1_matrix(w, size[1]).to(x)
    return wy @ x @ wx.T  # (N, C, out_h, out_w); separable: rows then columns


class InceptionV3FIDExtractor:
    """FID InceptionV3 pool3 features (2048-d) of images or of every frame of videos."""

    class Config(PluginConfig):
        weights: str | None = None  # path; default $FVDM_WEIGHTS_DIR/pt_inception-2015-12-05-6726825d.pth
        sha256: str | None = None
        resize: Literal["tf1", "torch"] = "tf1"
        batch_size: int = 32
        device: str = "cpu"

    dim = 2048
    per_frame = True
    min_frames = 1

    def __init__(self, cfg: "InceptionV3FIDExtractor.Config", *, model: nn.Module | None = None,
                 weights_sha256: str | None = None):
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        net, self.weights_sha256 = load_extractor_net(FIDInceptionV3, "pt_inception", cfg.weights, sha256=cfg.sha256,
                                                      what="FID InceptionV3 state dict", model=model,
                                                      weights_sha256=weights_sha256)
        self.model = net.to(self.device)
        self.extractor_id = f"inception_v3_fid:pool3:{'tf1-bilinear,(x-128)/128' if cfg.resize == 'tf1' else 'torch-bilinear,2x-1'}"

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> normalised float (N, 3, 299, 299)."""
        x = images.float()
        if self.cfg.resize == "tf1":
            return (resize_tf1(x, (SIZE, SIZE)) - 128.0) / 128.0
        x = F.interpolate(x / 255.0, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        return 2 * x - 1

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) -> (N, 2048); videos (B, F, C, H, W) -> (B*F, 2048), frames in order."""
        if x.ndim == 5:
            x = rearrange(x, "b f c h w -> (b f) c h w")
        if x.ndim != 4:
            raise ValueError(f"InceptionV3 expects images (N, C, H, W) or videos (B, F, C, H, W), got {tuple(x.shape)}")
        x = to_rgb(to_uint8_video(x, "images"), channel_dim=1)
        out = [self.model(self.preprocess(x[i:i + self.cfg.batch_size].to(self.device))).float().cpu()
               for i in range(0, x.shape[0], self.cfg.batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.dim)
