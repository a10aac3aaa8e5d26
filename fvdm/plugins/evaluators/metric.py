"""A Fréchet metric = an extractor + a clip protocol + float64 moments + the distance.

:class:`FrechetMetric` is shared by the FVD and FID presets (fvd.py, fid.py). It turns
whatever it is given (videos, a directory, a dataset, precomputed features, cached
statistics) into :class:`FeatureStats` under its protocol and compares them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from fvdm.core.interfaces import FeatureExtractor, PluginConfig
from fvdm.plugins.evaluators.frechet import FeatureStats, frechet_from_stats
from fvdm.plugins.evaluators.protocol import accumulate_features, select_clips
from fvdm.plugins.evaluators.sources import DatasetSource, DirectorySource, ListSource, TensorSource, VideoSource
from fvdm.plugins.evaluators.stats_cache import load_stats, save_stats


class FrechetConfig(PluginConfig):
    metric: str = "fvd"
    extractor: dict[str, Any] = Field(default_factory=lambda: {"name": "i3d"}, description="feature extractor spec")
    weights: str | None = Field(None, description="weights path, merged into the extractor spec")
    num_real: int | None = Field(2048, ge=1, description="max real videos (None = all)")
    num_fake: int | None = Field(2048, ge=1, description="fake videos used (None = all)")
    num_frames: int | None = Field(16, ge=1, description="frames per clip (None = every frame)")
    real_subsample: int = Field(1, ge=1, description="take every k-th real frame")
    fake_subsample: int = Field(1, ge=1, description="take every k-th fake frame")
    selection: Literal["sorted", "random"] = Field("sorted", description="real videos: first N sorted, or seeded random N")
    real_random_offset: bool = True
    fake_random_offset: bool = False
    drop_short: bool = True
    max_real_rows: int | None = Field(None, ge=1, description="cap on real feature rows (frames for FID)")
    max_fake_rows: int | None = Field(None, ge=1, description="cap on fake feature rows (frames for FID)")
    ddof: Literal[0, 1] = 0
    method: Literal["eigh", "cholesky", "sqrtm"] = "eigh"
    seed: int = 0
    batch_size: int = Field(8, ge=1)
    num_workers: int = Field(0, ge=0)
    device: str | None = Field(None, description="extractor device (None = the extractor's default)")
    progress: bool = False
    stats_cache: str | None = Field(None, description=".npz cache of the real statistics")
    min_fake_fraction: float = Field(0.0, ge=0, le=1, description="refuse if fewer than this fraction of num_fake")


def _is_features(x: Any) -> bool:
    return isinstance(x, (torch.Tensor, np.ndarray)) and x.ndim == 2


def _npz_kind(path: Path) -> str:
    with np.load(path, allow_pickle=False) as z:
        if "features" in z.files:
            return "features"
        if "mu" in z.files and "sigma" in z.files:
            return "stats"
        if "videos" in z.files:
            return "videos"
    raise ValueError(f"{path}: an .npz must hold 'features' (N, dim), 'mu'+'sigma' statistics, or 'videos' (N, F, C, H, W)")


class FrechetMetric:
    """Fréchet distance between real and fake feature distributions under one protocol."""

    Config = FrechetConfig

    def __init__(self, cfg: FrechetConfig, *, extractor: FeatureExtractor | None = None, plugins: Any = None):
        self.cfg = cfg
        self._extractor = extractor
        self._plugins = plugins

    # -- pieces -------------------------------------------------------------------------
    @property
    def plugins(self) -> Any:
        """The plugin manager this metric was built with (it builds the extractor and dataset sources)."""
        if self._plugins is None:
            raise TypeError(f"{type(self).__name__} {self.cfg.metric!r} needs the plugin manager to build its "
                            "feature extractor or a dataset: build it with registry.build(spec, plugins=plugins)")
        return self._plugins

    def extractor_spec(self) -> dict[str, Any]:
        spec = dict(self.cfg.extractor)
        if self.cfg.weights is not None:
            spec["weights"] = self.cfg.weights
        if self.cfg.device is not None:
            spec["device"] = self.cfg.device
        return spec

    @property
    def extractor(self) -> Any:
        if self._extractor is None:
            self._extractor = self.plugins["feature_extractors"].build(self.extractor_spec())
        return self._extractor

    def span(self, side: str) -> int | None:
        sub = self.cfg.real_subsample if side == "real" else self.cfg.fake_subsample
        return None if self.cfg.num_frames is None else (self.cfg.num_frames - 1) * sub + 1

    def protocol(self, side: str) -> dict[str, Any]:
        """Everything that decides which pixels reach the extractor for one side."""
        c = self.cfg
        real = side == "real"
        return {
            "metric": c.metric,
            "side": side,
            "num_videos": c.num_real if real else c.num_fake,
            "num_frames": c.num_frames,
            "subsample": c.real_subsample if real else c.fake_subsample,
            "selection": c.selection if real else "sorted",
            "random_offset": c.real_random_offset if real else c.fake_random_offset,
            "drop_short": c.drop_short,
            "max_rows": c.max_real_rows if real else c.max_fake_rows,
            "seed": c.seed,
        }

    def as_source(self, x: Any, side: str) -> "VideoSource | FeatureStats | torch.Tensor":
        """Turn an input into a VideoSource, precomputed features (N, dim) or FeatureStats."""
        if isinstance(x, (FeatureStats, VideoSource)) or _is_features(x):
            return x
        if isinstance(x, (torch.Tensor, np.ndarray)):
            return TensorSource(x)
        if isinstance(x, (list, tuple)):
            return ListSource(x)
        if isinstance(x, (str, os.PathLike)):
            p = Path(x)
            if p.suffix == ".npz" and p.is_file():
                kind = _npz_kind(p)
                if kind == "stats":
                    return load_stats(p)
                with np.load(p, allow_pickle=False) as z:
                    arr = z[kind]
                    if kind == "features":
                        return torch.from_numpy(np.array(arr))
                    return TensorSource(np.array(arr))
            if p.is_dir():
                return DirectorySource(p)
            if p.exists():
                raise ValueError(f"{p}: give a directory of videos, a .npz of features/statistics/videos, or a dataset name")
            if "/" in str(x) or p.suffix:
                raise FileNotFoundError(f"{side} input {str(x)!r}: no such file or directory")
            return self._dataset_source(str(x))
        if isinstance(x, dict) and "name" in x:
            return self._dataset_source(x)
        if hasattr(x, "__getitem__") and hasattr(x, "__len__"):
            return DatasetSource(x, name=type(x).__name__)
        raise TypeError(f"cannot evaluate {side} input of type {type(x).__name__}")

    def _dataset_source(self, spec: "str | dict[str, Any]") -> DatasetSource:
        reg = self.plugins["datasets"]
        spec = {"name": spec} if isinstance(spec, str) else dict(spec)
        entry = reg.get(spec["name"])  # unknown names raise with the list of choices
        fields = getattr(entry.config, "model_fields", {}) if entry.config is not None else {}
        span = self.span("real")
        if "num_frames" in fields and "num_frames" not in spec and span is not None:
            spec["num_frames"] = span  # a generator dataset renders clips exactly as long as needed
        if "split" in fields and "split" not in spec:
            spec["split"] = "test"
        ds = reg.build(spec)
        return DatasetSource(ds, name=str(spec))

    def stats_from_source(self, src: Any, side: str) -> FeatureStats:
        c = self.cfg
        if isinstance(src, FeatureStats):
            # checked against the other side (extractor, weights, dim) by frechet_from_stats
            return src.with_ddof(c.ddof)
        ext = self.extractor
        meta = {"extractor_id": ext.extractor_id, "weights_sha256": ext.weights_sha256, "protocol": self.protocol(side)}
        if _is_features(src):
            feats = torch.as_tensor(src)
            if feats.shape[1] != ext.dim:
                raise ValueError(f"{side} features have dim {feats.shape[1]}, extractor {ext.extractor_id} gives {ext.dim}")
            meta["protocol"] = {**meta["protocol"], "precomputed_features": True}
            return FeatureStats.from_features(feats, c.ddof, **meta)
        real = side == "real"
        num_frames = c.num_frames
        min_frames = getattr(ext, "min_frames", 1)
        if num_frames is not None and num_frames < min_frames:
            raise ValueError(f"{ext.extractor_id} needs clips of at least {min_frames} frames, protocol gives {num_frames}")
        clips = select_clips(
            src.keys, src.length, num_videos=c.num_real if real else c.num_fake, num_frames=num_frames,
            subsample=c.real_subsample if real else c.fake_subsample,
            selection=c.selection if real else "sorted",
            random_offset=c.real_random_offset if real else c.fake_random_offset,
            drop_short=c.drop_short, seed=c.seed,
        )
        if not clips:
            longest = max((src.length(i) for i in range(len(src))), default=0)
            raise ValueError(
                f"no {side} clips left after the protocol: {len(src)} video(s) in {src.describe()}, the longest has "
                f"{longest} frames, clips need {self.span(side)} ({c.num_frames} frames x subsample "
                f"{c.real_subsample if real else c.fake_subsample}); use longer videos or e.g. --set num_frames={longest}"
            )
        want = c.num_fake if not real else None
        if want is not None and len(clips) < c.min_fake_fraction * want:
            raise ValueError(f"only {len(clips)} fake videos for a metric that needs {want}")
        mom, _ = accumulate_features(
            ext, src, clips, batch_size=c.batch_size, num_workers=c.num_workers,
            max_rows=c.max_real_rows if real else c.max_fake_rows, progress=c.progress, desc=f"{c.metric} {side}",
        )
        meta["protocol"] = {**meta["protocol"], "videos_used": len(clips)}
        return FeatureStats.from_moments(mom, c.ddof, dataset_hash=src.listing_hash() if real else "", **meta)

    def real_stats(self, real: Any) -> FeatureStats:
        """Real statistics, from the cache when it matches, else computed (and cached)."""
        src = self.as_source(real, "real")
        cache = self.cfg.stats_cache
        if cache and Path(cache).is_file() and isinstance(src, VideoSource):
            ext = self.extractor
            stats = load_stats(cache, expect={
                "extractor_id": ext.extractor_id, "weights_sha256": ext.weights_sha256,
                "dataset_hash": src.listing_hash(), "ddof": self.cfg.ddof,
                "protocol": self.protocol("real"),
            })
            return stats.with_ddof(self.cfg.ddof)
        stats = self.stats_from_source(src, "real")
        if cache and isinstance(src, VideoSource):
            proto = dict(stats.protocol)
            proto.pop("videos_used", None)
            save_stats(cache, FeatureStats(stats.mu, stats.sigma, stats.n, stats.ddof, stats.extractor_id,
                                           stats.weights_sha256, proto, stats.dataset_hash, stats.m2))
        return stats

    def fake_stats(self, fake: Any) -> FeatureStats:
        return self.stats_from_source(self.as_source(fake, "fake"), "fake")

    # -- the metric ---------------------------------------------------------------------
    def evaluate(self, fake: Any, real: Any, **kwargs: Any) -> dict[str, Any]:
        """Fréchet distance of ``fake`` to ``real`` with full provenance (JSON-able dict)."""
        if kwargs.get("extractor") is not None:
            self._extractor = kwargs.pop("extractor")
        real_stats = self.real_stats(real)
        fake_stats = self.fake_stats(fake)
        res = frechet_from_stats(real_stats, fake_stats, method=self.cfg.method, seed=self.cfg.seed,
                                 metric=self.cfg.metric)
        return res.to_json()
