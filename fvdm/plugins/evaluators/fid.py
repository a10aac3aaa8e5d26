"""FID on the frames of videos (InceptionV3 pool3).

* ``fid50k_full`` (StyleGAN2-ADA/StyleGAN-V): every frame of every real video (sorted),
  up to 50 000 fake frames; TF1 bilinear resize to 299, biased covariance.
* ``fid_pytorch``: pytorch-fid numerics: torch bilinear resize, unbiased covariance
  (np.cov), all frames; its ``.npz`` statistics import with ``--real stats.npz``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from fvdm.plugins.evaluators.metric import FrechetConfig, FrechetMetric


class FID(FrechetMetric):
    """Fréchet Inception Distance over video frames (FID InceptionV3 pool3)."""

    class Config(FrechetConfig):
        metric: str = "fid50k_full"
        extractor: dict[str, Any] = Field(default_factory=lambda: {"name": "inception_v3_fid", "resize": "tf1"})
        num_real: int | None = None
        num_fake: int | None = None
        num_frames: int | None = None  # every frame of each video
        real_random_offset: bool = False
        max_fake_rows: int | None = 50000
        batch_size: int = 4


class FIDPytorchConfig(FID.Config):
    metric: str = "fid_pytorch"
    extractor: dict[str, Any] = Field(default_factory=lambda: {"name": "inception_v3_fid", "resize": "torch"})
    max_fake_rows: int | None = None
    ddof: Literal[0, 1] = 1


PRESETS = {"fid50k_full": FID.Config, "fid_pytorch": FIDPytorchConfig}
