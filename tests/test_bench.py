"""`fvdm bench`: runner provenance, listing, third-party suites, reproducibility, protocol suites."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.runner import BenchmarkError, markdown_table, run_suite
from fvdm.cli import main
from fvdm.core import PluginConfig, hookimpl, load_plugins

from .plugin_fixtures import make_dist, on_sys_path


class ToySuite:
    """Deterministic toy suite: 'quality' numbers drawn from the seeded global RNG."""

    class Config(PluginConfig):
        n: int = 64

    def __init__(self, cfg):
        self.cfg = cfg

    def run(self, out_dir, *, quick=False, seed=0):
        x = torch.randn(self.cfg.n if not quick else 8, generator=torch.Generator().manual_seed(seed))
        y = torch.rand(4)  # global RNG: the runner seeds it
        return {
            "metrics": {"mean": float(x.mean()), "draw": y.tolist(), "nested": {"n": self.cfg.n}},
            "plots": [{"name": "toy", "x": [1, 2, 3], "series": {"a": [1.0, 2.0, 3.0]}}],
        }


class FailingSuite:
    """Fails like a suite whose dependency is missing."""

    def run(self, out_dir, *, quick=False, seed=0):
        raise BenchmarkError("needs fvdm.core.engine: land the engine issue first")


class ToyPlugin:
    @staticmethod
    @hookimpl
    def fvdm_register_benchmarks(registry):
        registry.add("toy", ToySuite)
        registry.add("toy_fail", FailingSuite(), config=None)  # an instance: no Config


def _plugins():
    return load_plugins(entry_points=False, extra_plugins=[("toybench", ToyPlugin)])


def test_runner_writes_results_with_provenance(tmp_path):
    doc = run_suite("toy", tmp_path, seed=3, threads=1, plugins=_plugins(), params={"n": 32})
    data = json.loads((tmp_path / "results.json").read_text())
    assert data == doc and data["status"] == "ok" and data["suite"] == "toy"
    assert data["config"] == {"n": 32} and data["seeds"] == [3] and data["threads"] == 1
    prov = data["provenance"]
    for key in ("fvdm_version", "torch_version", "python", "platform", "cpu_model", "nproc", "torch_threads", "git"):
        assert key in prov, key
    assert prov["torch_version"] == torch.__version__ and prov["torch_threads"] == 1
    assert data["origin"] == "local"
    md = (tmp_path / "results.md").read_text()
    assert "| nested.n | 32 |" in md and "1 torch threads" in md
    pytest.importorskip("matplotlib")
    assert data["plots"] == ["toy.png"] and (tmp_path / "toy.png").stat().st_size > 1000


def test_same_seed_reproduces_numbers(tmp_path):
    plugins = _plugins()
    a = run_suite("toy", tmp_path / "a", seed=7, plugins=plugins)["metrics"]
    b = run_suite("toy", tmp_path / "b", seed=7, plugins=plugins)["metrics"]
    c = run_suite("toy", tmp_path / "c", seed=8, plugins=plugins)["metrics"]
    assert a == b
    assert a["mean"] != c["mean"] and a["draw"] != c["draw"]


def test_failed_suite_leaves_results_and_raises(tmp_path):
    with pytest.raises(BenchmarkError, match="needs fvdm.core.engine"):
        run_suite("toy_fail", tmp_path, plugins=_plugins())
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["status"] == "failed" and "needs fvdm.core.engine" in data["error"]
    assert "needs fvdm.core.engine" in (tmp_path / "results.md").read_text()


def test_markdown_table_formats():
    out = markdown_table(["a", "b"], [["x|y", 0.123456], ["z", 12345678.0]])
    assert out.splitlines() == ["| a | b |", "|---|---|", "| x\\|y | 0.1235 |", "| z | 1.235e+07 |"]


def test_bench_list_shows_builtin_suites(capsys):
    assert main(["bench", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("speed", "digits_zero_shot", "ucf101", "sky_timelapse", "faceforensics", "taichi_hd"):
        assert name in out
    assert main(["bench", "list", "--json"]) == 0
    names = {it["name"] for it in json.loads(capsys.readouterr().out)}
    assert {"speed", "digits_zero_shot"} <= names


def test_third_party_suite_via_entry_point_runs_by_name(tmp_path, monkeypatch, capsys):
    src = '''
        from fvdm.core import PluginConfig, hookimpl

        class Echo:
            """Echoes its config."""
            class Config(PluginConfig):
                word: str = "hi"
            def __init__(self, cfg):
                self.cfg = cfg
            def run(self, out_dir, *, quick=False, seed=0, **ctx):
                return {"metrics": {"word": self.cfg.word, "quick": quick, "threads": ctx["threads"],
                                    "has_plugins": "benchmarks" in ctx["plugins"].registries._by_kind}}

        @hookimpl
        def fvdm_register_benchmarks(registry):
            registry.add("echo", Echo)
    '''
    on_sys_path(monkeypatch, make_dist(tmp_path / "site", "fvdm-echo-bench", "1.2", "fvdm_echo_bench", src))
    assert main(["bench", "list"]) == 0
    assert "echo" in capsys.readouterr().out
    out = tmp_path / "echo"
    assert main(["bench", "run", "echo", "--out", str(out), "--quick", "--threads", "1", "--set", "word=yo"]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["metrics"] == {"word": "yo", "quick": True, "threads": 1, "has_plugins": True}
    assert data["origin"] == "fvdm-echo-bench 1.2"
    # unknown suite names fail with a suggestion; --data on a suite without that field is refused
    assert main(["bench", "run", "echoo", "--out", str(out)]) == 2
    assert "Did you mean 'echo'" in capsys.readouterr().err
    assert main(["bench", "run", "echo", "--out", str(out), "--data", "x"]) == 2
    assert "takes no --data" in capsys.readouterr().err


def test_speed_suite_records_missing_and_broken_modules(tmp_path, monkeypatch):
    pkg = tmp_path / "fakebench"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "good.py").write_text(
        "def run(quick, threads):\n"
        "    return {'ratio': 1.01, 'frames': [16, 32, 64], 'seconds': [1.0, 2.0, 4.0], 'threads': threads}\n")
    (pkg / "bad.py").write_text("def run(quick, threads):\n    raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    doc = run_suite("speed", tmp_path / "out", quick=True, threads=1,
                    params={"package": "fakebench", "modules": ["good", "bad", "absent"]})
    m = doc["metrics"]
    assert m["good"]["ratio"] == 1.01 and m["good"]["threads"] == 1 and m["good"]["status"] == "ok"
    assert m["bad"]["status"] == "error" and "boom" in m["bad"]["reason"]
    assert m["absent"]["status"] == "missing" and "fakebench.absent" in m["absent"]["reason"]
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| good | ratio | 1.01 |" in md


# -- protocol suites on tiny fixtures -----------------------------------------------------------
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
    short = run_suite("sky_timelapse", tmp_path / "c", seed=1, plugins=plugins, params={**params, "fake": str(short_fake)})
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


# -- digits_zero_shot at micro scale ------------------------------------------------------------
class RandomDigitsExtractorPlugin:
    @staticmethod
    @hookimpl
    def fvdm_register_feature_extractors(registry):
        from fvdm.plugins.evaluators.digits_net import DigitsExtractor, DigitsNet

        class RandomDigits(DigitsExtractor):
            """Digits network with seeded random weights (the real weights are not needed here)."""

            class Config(PluginConfig):
                seed: int = 0

            def __init__(self, cfg):
                torch.manual_seed(cfg.seed)
                super().__init__(DigitsExtractor.Config(), model=DigitsNet(), weights_sha256=f"random-{cfg.seed}")

        registry.add("digits_random", RandomDigits)


MICRO = {"seeds": 1, "train_steps": 2, "sample_steps": 2, "num_uncond": 8, "num_task": 4, "num_long": 2}


def test_digits_zero_shot_micro_run_is_reproducible(tmp_path):
    """The whole pipeline (train both models, every task, FVD/PSNR/SSIM, table) at micro scale."""
    plugins = load_plugins(entry_points=False, extra_plugins=[("randdigits", RandomDigitsExtractorPlugin)])
    params = {"quick": MICRO, "train_clips": 32, "batch_size": 4, "extractor": {"name": "digits_random"}, "workers": 1,
              "min_fvd_clips": 4, "eval_batch": 4, "long_frames": 32,
              "backbone": {"name": "latte_tiny", "patch_size": 4, "hidden_size": 32, "depth": 2, "num_heads": 2}}
    a = run_suite("digits_zero_shot", tmp_path / "a", quick=True, seed=5, plugins=plugins, params=params)
    s = a["metrics"]["summary"]
    assert set(s) == {"unconditional", "image_to_video", "interpolation", "extension", "long_video"}
    for task in ("image_to_video", "interpolation", "extension"):
        assert set(s[task]) == {"fvd", "psnr", "ssim"}
        for model in ("vanilla", "fvdm"):
            assert a["metrics"]["per_seed"]["5"][model][task]["context_max_abs_err"] == 0.0
    assert a["metrics"]["per_seed"]["5"]["fvdm"]["long_video"]["frames"] == 32
    assert a["seeds"] == [5]
    b = run_suite("digits_zero_shot", tmp_path / "b", quick=True, seed=5, plugins=plugins, params=params)
    assert a["metrics"]["summary"] == b["metrics"]["summary"]
    md = (tmp_path / "a" / "results.md").read_text()
    assert "| interpolation | PSNR (higher is better) |" in md


def test_digits_zero_shot_refuses_small_fvd_sets(tmp_path):
    with pytest.raises(ValueError, match="min_fvd_clips"):
        run_suite("digits_zero_shot", tmp_path, quick=True, plugins=load_plugins(entry_points=False),
                  params={"quick": {**MICRO}})


def test_cli_dotted_set_keeps_other_nested_defaults():
    import argparse

    from fvdm.commands.bench import _params

    entry = load_plugins(entry_points=False)["benchmarks"].get("digits_zero_shot")
    args = argparse.Namespace(data=None, weights=None, overrides=["quick.seeds=2", "workers=1"])
    params = _params(args, entry)
    cfg = entry.config.model_validate(params)
    assert cfg.quick.seeds == 2 and cfg.quick.train_steps == entry.config().quick.train_steps
    assert cfg.workers == 1 and cfg.full == entry.config().full
