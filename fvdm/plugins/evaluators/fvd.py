"""FVD presets (I3D features, biased covariance, one clip per video).

* ``fvd2048_16f`` (StyleGAN-V, the protocol Latte and FVDM report): first 2048 real
  videos in sorted order, one seeded random 16-frame clip each; 2048 fake videos,
  their first 16 frames.
* ``fvd2048_128f``: the same with 128-frame clips.
* ``fvd2048_128f_subsample8f``: 16 frames taken every 8th frame (a 121-frame span).
* ``fvd2048_16f_latte``: Latte's variant: 2048 real videos drawn at random (seeded
  here) and real frames subsampled by 3.
* ``fvd_digits``: the CPU-scale quality benchmark's FVD with the digits extractor.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from fvdm.plugins.evaluators.metric import FrechetConfig, FrechetMetric


class FVD(FrechetMetric):
    """Fréchet Video Distance (I3D Kinetics-400 features, StyleGAN-V protocol)."""

    class Config(FrechetConfig):
        metric: str = "fvd2048_16f"


class FVD128Config(FrechetConfig):
    metric: str = "fvd2048_128f"
    num_frames: int | None = 128


class FVD128Sub8Config(FrechetConfig):
    metric: str = "fvd2048_128f_subsample8f"
    num_frames: int | None = 16
    real_subsample: int = 8
    fake_subsample: int = 8


class FVDLatteConfig(FrechetConfig):
    metric: str = "fvd2048_16f_latte"
    selection: Literal["sorted", "random"] = "random"
    real_subsample: int = 3


class FVDDigitsConfig(FrechetConfig):
    metric: str = "fvd_digits"
    extractor: dict[str, Any] = Field(default_factory=lambda: {"name": "digits"})
    num_real: int | None = 512
    num_fake: int | None = 512
    batch_size: int = 64


PRESETS: dict[str, type[FrechetConfig]] = {
    "fvd2048_16f": FVD.Config,
    "fvd2048_128f": FVD128Config,
    "fvd2048_128f_subsample8f": FVD128Sub8Config,
    "fvd2048_16f_latte": FVDLatteConfig,
    "fvd_digits": FVDDigitsConfig,
}
