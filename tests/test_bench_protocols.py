"""The StyleGAN-V protocol suites (ucf101, sky_timelapse, ...) end to end on tiny fixture videos."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fvdm.bench.runner import BenchmarkError, run_suite
from fvdm.cli import main
from fvdm.core import PluginConfig, hookimpl, load_plugins


class StatsExtractor:
    """Deterministic test extractor: a user-supplied projection (the 'weights' file) of
    per-clip pixel statistics. Stands in for I3D in the protocol pipeline."""

    class Config(PluginConfig):
        weights: str | None = None
        device: str = "cpu"

    dim = 6
    min_frames = 9
    per_frame = False

    def __init__(self, cfg):
        from fvdm.plugins.evaluators.weights import sha256_file

        if cfg.weights is None:
            raise FileNotFoundError("stats extractor needs weights=PATH")
        self.proj = torch.load(cfg.weights, weights_only=True).double()  # (4, dim)
        self.weights_sha256 = sha256_file(cfg.weights)
        self.extractor_id = "test_stats:v1"
        self.calls = 0

    def __call__(self, videos):
        v = videos.double() / 255.0  # uint8 (B, F, C, H, W)
        diff = (v[:, 1:] - v[:, :-1]).abs()
        stats = torch.stack([v.mean((1, 2, 3, 4)), v.std((1, 2, 3, 4)), diff.mean((1, 2, 3, 4)),
                             v[:, :, :, :2].mean((1, 2, 3, 4))], dim=1)  # (B, 4)
        return (stats @ self.proj).float()


class StatsExtractorPlugin:
    @staticmethod
    @hookimpl
    def fvdm_register_feature_extractors(registry):
        registry.add("test_stats", StatsExtractor)


def _write_videos(root: Path, n: int, frames: int, seed: int, brightness: float) -> Path:
    import numpy as np

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    for i in range(n):
        base = rng.uniform(0, brightness, size=(1, 8, 8, 3))
        drift = rng.uniform(0, 1, size=(frames, 1, 1, 1)).cumsum(0) / frames * 40
        video = np.clip(base * 255 + drift + rng.normal(0, 5, size=(frames, 8, 8, 3)), 0, 255).astype(np.uint8)
        np.save(root / f"video_{i:03d}.npy", video)  # (T, H, W, C)
    return root


def test_protocol_suite_end_to_end_on_fixtures(tmp_path):
    real = _write_videos(tmp_path / "real", 10, 130, 0, 0.5)
    fake = _write_videos(tmp_path / "fake", 10, 130, 1, 0.8)
    short_fake = _write_videos(tmp_path / "short", 10, 20, 2, 0.8)
    weights = tmp_path / "proj.pt"
    torch.save(torch.randn(4, StatsExtractor.dim, generator=torch.Generator().manual_seed(0)), weights)
    plugins = load_plugins(entry_points=False, extra_plugins=[("statsext", StatsExtractorPlugin)])
    params = {"data": str(real), "fake": str(fake), "weights": str(weights), "extractor": {"name": "test_stats"},
              "num_videos": 8}
    a = run_suite("sky_timelapse", tmp_path / "a", seed=1, plugins=plugins, params=params)
    b = run_suite("sky_timelapse", tmp_path / "b", seed=1, plugins=plugins, params=params)
    res = a["metrics"]["results"]
    assert set(res) == {"fvd2048_16f", "fvd2048_128f"}
    for name, r in res.items():
        assert r["status"] == "ok" and r["n_real"] == 8 and r["n_fake"] == 8, (name, r)
        assert r["value"] > 0 and r["extractor_id"] == "test_stats:v1"
    assert {k: v["value"] for k, v in res.items()} == {k: v["value"] for k, v in b["metrics"]["results"].items()}
    # the independent oracle: the same clips through scipy's sqrtm-based Fréchet distance
    from fvdm.plugins.evaluators.fvd import FVD

    oracle = FVD(FVD.Config(extractor={"name": "test_stats"}, weights=str(weights), num_real=8, num_fake=8,
                            seed=1, method="sqrtm"), plugins=plugins).evaluate(str(fake), str(real))
    assert res["fvd2048_16f"]["value"] == pytest.approx(oracle["value"], rel=1e-6)
    md = (tmp_path / "a" / "results.md").read_text()
    assert "fvd2048_128f" in md and "StyleGAN-V" in md and "106.1" in md
    # 20-frame fakes: FVD16 works, FVD128 is reported as an error with the reason
    short = run_suite("sky_timelapse", tmp_path / "c", seed=1, plugins=plugins,
                      params={**params, "fake": str(short_fake)})
    assert short["metrics"]["results"]["fvd2048_16f"]["status"] == "ok"
    assert short["metrics"]["results"]["fvd2048_128f"]["status"] == "error"
    # --quick: the 16-frame metric only; real statistics cached and reused on the next run
    cache = tmp_path / "cache"
    q1 = run_suite("sky_timelapse", tmp_path / "q1", quick=True, seed=1, plugins=plugins,
                   params={**params, "stats_cache_dir": str(cache)})
    q2 = run_suite("sky_timelapse", tmp_path / "q2", quick=True, seed=1, plugins=plugins,
                   params={**params, "stats_cache_dir": str(cache)})
    assert set(q1["metrics"]["results"]) == {"fvd2048_16f"} and len(list(cache.glob("*.npz"))) == 1
    assert q1["metrics"]["results"]["fvd2048_16f"]["value"] == pytest.approx(res["fvd2048_16f"]["value"], rel=1e-9)
    assert q2["metrics"]["results"]["fvd2048_16f"]["value"] == pytest.approx(res["fvd2048_16f"]["value"], rel=1e-9)


def test_protocol_suite_names_missing_inputs(tmp_path):
    with pytest.raises(BenchmarkError, match=r"needs --data PATH .*fake=PATH"):
        run_suite("ucf101", tmp_path, plugins=load_plugins(entry_points=False))
    assert main(["bench", "run", "taichi_hd", "--out", str(tmp_path / "t"), "--data", str(tmp_path / "nope")]) == 2

