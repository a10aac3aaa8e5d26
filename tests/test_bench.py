"""`fvdm bench`: runner provenance, listing, third-party suites, reproducibility, protocol suites."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fvdm.bench.runner import BenchmarkError, markdown_table, run_suite
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
        raise BenchmarkError("needs the ucf101 videos: pass --data DIR")


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
    with pytest.raises(BenchmarkError, match="needs the ucf101 videos"):
        run_suite("toy_fail", tmp_path, plugins=_plugins())
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["status"] == "failed" and "needs the ucf101 videos" in data["error"]
    assert "needs the ucf101 videos" in (tmp_path / "results.md").read_text()


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


MICRO = {"seeds": 2, "train_steps": 2, "sample_steps": 2, "num_uncond": 8, "num_task": 4, "num_long": 2,
         "num_reference": 8}
MICRO_ARMS = [
    {"name": "vanilla", "vtv": {"name": "synchronized"}, "sampling": "replacement"},
    {"name": "vanilla_native", "vtv": {"name": "synchronized"}, "sampling": "native"},
    {"name": "ptss", "vtv": {"name": "ptss", "p": 0.5}, "sampling": "native"},
    {"name": "ptss_stab", "vtv": {"name": "ptss", "p": 0.5}, "sampling": "stabilized", "stabilization": 0.1},
]
MICRO_PARAMS = {
    "quick": MICRO, "arms": MICRO_ARMS, "train_clips": 32, "batch_size": 4, "extractor": {"name": "digits_random"},
    "workers": 1, "min_fvd_clips": 4, "min_reference": 8, "eval_batch": 4, "long_frames": 32,
    "metrics": ["fvd", "psnr", "ssim"],  # the time-aware metrics have their own tests; keep this run small
    "criteria": [{"arm": "ptss", "task": "image_to_video", "metric": "fvd", "why": "the claim"},
                 {"arm": "ptss", "against": "vanilla_native", "task": "interpolation", "metric": "psnr"}],
    "backbone": {"name": "latte_tiny", "patch_size": 4, "hidden_size": 32, "depth": 2, "num_heads": 2}}


def _digits_plugins(*extra):
    return load_plugins(entry_points=False, extra_plugins=[("randdigits", RandomDigitsExtractorPlugin), *extra])


def test_digits_zero_shot_micro_run_is_reproducible(tmp_path):
    """The whole pipeline (arms sharing models, every task, baselines, paired CIs, criteria) at micro scale."""
    plugins = _digits_plugins()
    a = run_suite("digits_zero_shot", tmp_path / "a", quick=True, seed=5, plugins=plugins, params=MICRO_PARAMS)
    m = a["metrics"]
    assert a["seeds"] == [5, 6]
    assert sorted(m["models"]) == ["ptss_p0.5", "synchronized"]  # 4 arms, 2 trainings per seed
    assert sorted(m["train"]) == ["ptss_p0.5_s5", "ptss_p0.5_s6", "synchronized_s5", "synchronized_s6"]
    s = m["summary"]
    assert set(s) == {"unconditional", "image_to_video", "interpolation", "extension", "long_video"}
    for task in ("image_to_video", "interpolation", "extension"):
        assert set(s[task]) == {"fvd", "psnr", "ssim"} and set(s[task]["fvd"]) == {a["name"] for a in MICRO_ARMS}
        for arm in MICRO_ARMS:
            assert m["per_seed"]["5"][arm["name"]][task]["context_max_abs_err"] == 0.0
        assert set(m["baselines"][task]) == {"ground truth", "all black", "mean frame", "copy nearest given frame",
                                             "real + noise 0.3"}
        assert set(m["baselines"][task]["all black"]) == {"fvd", "psnr", "ssim"}
        assert m["baselines"][task]["ground truth"]["psnr"] == 100.0  # the capped PSNR of identical frames
        assert set(m["versus_baselines"][task]["psnr"]) == {"all black", "mean frame", "copy nearest given frame",
                                                            "real + noise 0.3"}
    assert set(m["baselines"]["unconditional"]) == {"real", "real + noise 0.3"}
    assert m["per_seed"]["5"]["ptss"]["long_video"]["frames"] == 32
    # arms sharing a model share its unconditional samples: the paired difference is exactly 0
    d = m["paired"]["unconditional"]["fvd"]["vanilla_native"]
    assert d["values"] == [0.0, 0.0] and d["verdict"] == "inconclusive"
    d = m["paired"]["image_to_video"]["fvd"]["ptss"]
    assert d["n"] == 2 and d["ci_low"] <= d["mean"] <= d["ci_high"]
    assert [c["verdict"] in ("supported", "contradicted", "inconclusive") for c in m["criteria"]] == [True, True]
    assert m["criteria"][1]["against"] == "vanilla_native"
    assert m["costs"]["s_per_train_step"] > 0 and m["plan"]["trained_models"] == 4
    b = run_suite("digits_zero_shot", tmp_path / "b", quick=True, seed=5, plugins=plugins, params=MICRO_PARAMS)
    assert a["metrics"]["summary"] == b["metrics"]["summary"] and a["metrics"]["paired"] == b["metrics"]["paired"]
    md = (tmp_path / "a" / "results.md").read_text()
    assert "## success criteria" in md and "beats vanilla on image_to_video FVD" in md
    assert "| image_to_video | copy nearest given frame |" in md
    assert "## every arm versus the trivial baselines" in md and "applicable baselines" in md


def test_versus_baselines_applies_only_where_the_ground_truth_beats_the_baseline():
    """Verdicts against a baseline's one value, from the seeds' CI; a baseline that outscores the data is n/a."""
    from fvdm.bench.suites.digits_zero_shot import DigitsZeroShotSuite

    suite = DigitsZeroShotSuite(DigitsZeroShotSuite.Config(arms=[
        {"name": "a", "vtv": {"name": "synchronized"}, "sampling": "replacement"},
        {"name": "b", "vtv": {"name": "ptss", "p": 0.2}, "sampling": "native"}], baseline="a", criteria=[]))
    info = {"digit_identity": {"higher_is_better": True, "target": None},
            "fvd": {"higher_is_better": False, "target": None},
            "boundary_jump": {"higher_is_better": False, "target": 1.0}}
    per_seed = {s: {"a": {"extension": {"digit_identity": 0.2 + d, "fvd": 40 + d, "boundary_jump": 1.6 + d}},
                    "b": {"extension": {"digit_identity": 0.5 + d, "fvd": 30 + 10 * d, "boundary_jump": 1.1 + d}}}
                for s, d in zip(range(5), (0.0, 0.01, -0.01, 0.02, -0.02))}
    baselines = {"extension": {"ground truth": {"digit_identity": 0.95, "fvd": 5.0, "boundary_jump": 1.0},
                               "copy": {"digit_identity": 0.97, "fvd": 45.0, "boundary_jump": 0.0},
                               "noise": {"digit_identity": 0.3, "fvd": 30.0, "boundary_jump": 1.7}}}
    v = suite._versus_baselines(per_seed, baselines, info)["extension"]
    assert v["digit_identity"]["copy"]["applies"] is False  # copying beats the data itself: no bar
    assert v["digit_identity"]["noise"]["applies"] is True
    assert v["digit_identity"]["noise"]["arms"]["b"]["verdict"] == "beats"
    assert v["digit_identity"]["noise"]["arms"]["a"]["verdict"] == "loses"
    assert v["fvd"]["copy"]["arms"]["a"]["verdict"] == "beats" and v["fvd"]["copy"]["arms"]["b"]["verdict"] == "beats"
    assert v["fvd"]["noise"]["arms"]["b"]["verdict"] == "tie"  # 30 +- 10 per seed straddles 30
    # boundary jump compares |value - 1|: copy (jump 0) is 1 away, arm b (1.1) 0.1 away
    assert v["boundary_jump"]["copy"]["baseline"] == 1.0 and v["boundary_jump"]["copy"]["arms"]["b"]["verdict"] == "beats"
    assert v["boundary_jump"]["noise"]["arms"]["a"]["verdict"] == "beats"  # |1.6 - 1| = 0.6 < |1.7 - 1|
    counts = suite._versus_counts(suite._versus_baselines(per_seed, baselines, info))
    assert counts[1].startswith("b beats") and "of 5 applicable" in counts[1]


def test_digits_sampling_noise_is_paired_per_clip_batch(tmp_path):
    from fvdm.bench.suites.digits_zero_shot import DigitsZeroShotSuite

    suite = DigitsZeroShotSuite(DigitsZeroShotSuite.Config(eval_batch=3))
    ctx = type("Ctx", (), {"batch_size": 0, "generator": None})()
    lm = type("LM", (), {"latent_channels": 1, "channels": 1})()
    draw = lambda sl: torch.randn(sl.stop - sl.start, 2, generator=ctx.generator)  # noqa: E731
    torch.manual_seed(0)
    a = suite._batched(ctx, lm, 7, 3, "image_to_video", draw)
    torch.rand(5)  # whatever ran in between (another arm, another task) does not matter
    b = suite._batched(ctx, lm, 7, 3, "image_to_video", draw)
    assert torch.equal(a, b)
    assert not torch.equal(a, suite._batched(ctx, lm, 7, 4, "image_to_video", draw))  # seeds differ
    assert not torch.equal(a, suite._batched(ctx, lm, 7, 3, "interpolation", draw))  # tasks differ


def test_digits_paired_statistics():
    from fvdm.bench.suites import digits_zero_shot as dz

    r = dz.mean_ci([1.0, 2.0, 3.0])
    assert r["mean"] == 2.0 and r["std"] == 1.0
    assert r["ci_high"] - 2.0 == pytest.approx(4.302653 / 3 ** 0.5, rel=1e-5)
    assert dz.t_quantile(40) == pytest.approx(2.021, abs=1e-3)
    assert dz._T975[3] == pytest.approx(dz.t_quantile(4), abs=1e-3)  # the fallback table agrees with scipy
    assert dz.verdict(-3.0, -1.0, higher_is_better=False) == "supported"  # FVD fell
    assert dz.verdict(1.0, 3.0, higher_is_better=False) == "contradicted"
    assert dz.verdict(-1.0, 3.0, higher_is_better=True) == "inconclusive"
    assert dz.mean_ci([1.0])["ci_low"] != dz.mean_ci([1.0])["ci_low"]  # NaN: no interval from one seed


class TrajMetricPlugin:
    """A time-aware evaluator that needs ground-truth trajectories, and a dataset without them."""

    @staticmethod
    @hookimpl
    def fvdm_register_evaluators(registry):
        class TrajError:
            needs_trajectories = True
            higher_is_better = False

            def evaluate(self, fake, real, *, mask=None, trajectories=None, given=None, task=None):
                return {"value": 0.0}

        registry.add("traj_test", TrajError, config=None)

    @staticmethod
    @hookimpl
    def fvdm_register_datasets(registry):
        from fvdm.plugins.datasets.moving_digits import MovingDigits

        class NoTrajectories:
            """moving_digits' clips without the generator's truth."""

            Config = MovingDigits.Config

            def __init__(self, cfg):
                self._ds = MovingDigits(cfg)
                self.num_frames, self.channels = self._ds.num_frames, self._ds.channels
                self.resolution, self.num_classes = self._ds.resolution, 0

            def __len__(self):
                return len(self._ds)

            def __getitem__(self, i):
                return {"video": self._ds[i]["video"]}

        registry.add("digits_no_traj", NoTrajectories)

    @staticmethod
    @hookimpl
    def fvdm_register_vtv_strategies(registry):
        from fvdm.plugins.vtv.ptss import PTSS

        registry.add("third_party_vtv", PTSS)


@pytest.mark.parametrize("change, match", [
    ({"arms": [*MICRO_ARMS, {"name": "x", "vtv": {"name": "nope"}}]}, "arm 'x': unknown vtv_strategies 'nope'"),
    ({"arms": [*MICRO_ARMS, {"name": "x", "vtv": {"name": "ptss", "p": 2}}]}, "arm 'x': vtv .* is invalid"),
    ({"arms": [*MICRO_ARMS, {"name": "x", "sampling": "magic"}]}, "unknown sampling mode 'magic'; choose one of "
                                                                   "native, replacement, stabilized"),
    ({"arms": [*MICRO_ARMS, {"name": "vanilla"}]}, "appear twice"),
    ({"baseline": "nobody"}, "baseline 'nobody' is not an arm"),
    ({"quick": {**MICRO, "num_reference": 4}}, "num_reference=4 is below the floor 8"),
    ({"quick": {**MICRO, "num_uncond": 2}}, "below min_fvd_clips=4"),
    ({"reference_seed": 0}, "pick a different reference_seed"),
    ({"metrics": ["fvd", "nope"]}, "metric 'nope': unknown evaluators"),
    ({"metrics": ["fvd", "traj_test"], "dataset": {"name": "digits_no_traj"}},
     "metric 'traj_test' needs ground-truth trajectories"),
    ({"criteria": [{"arm": "ghost", "task": "extension"}]}, "'ghost' is not an arm"),
])
def test_digits_zero_shot_refuses_bad_input_before_training(tmp_path, change, match):
    plugins = _digits_plugins(("trajmetric", TrajMetricPlugin))
    with pytest.raises(BenchmarkError, match=match) as err:
        run_suite("digits_zero_shot", tmp_path, quick=True, plugins=plugins, params={**MICRO_PARAMS, **change})
    assert "\n" not in str(err.value)  # one line
    assert not (tmp_path / "runs").exists()  # nothing trained
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "failed"


def test_digits_zero_shot_standard_budget_needs_five_seeds(tmp_path):
    params = {**MICRO_PARAMS, "standard": {**MICRO, "seeds": 3}}
    with pytest.raises(BenchmarkError, match="standard budget has seeds=3, below the floor 5"):
        run_suite("digits_zero_shot", tmp_path, quick=False, plugins=_digits_plugins(), params=params)


def test_digits_zero_shot_accepts_third_party_strategy_and_time_aware_metric():
    from fvdm.bench.suites.digits_zero_shot import Budget, DigitsZeroShotSuite

    plugins = _digits_plugins(("trajmetric", TrajMetricPlugin))
    cfg = DigitsZeroShotSuite.Config.model_validate({
        **MICRO_PARAMS, "metrics": ["fvd", "psnr", "traj_test"],
        "arms": [*MICRO_ARMS,
                 {"name": "theirs", "vtv": {"name": "third_party_vtv", "p": 0.3}, "steps_multiplier": 1.5}]})
    suite = DigitsZeroShotSuite(cfg)
    info = suite.validate(plugins, Budget(**MICRO), quick=True)
    assert info["traj_test"] == {"higher_is_better": False, "needs_trajectories": True, "target": None}
    models = suite.models()
    assert models["third_party_vtv_p0.3_x1.5"]["arms"] == ["theirs"]
    assert models["synchronized"]["arms"] == ["vanilla", "vanilla_native"]
    assert suite.plan(Budget(**MICRO))["train_steps"] == 2 * (2 + 2 + 3)


def test_digits_zero_shot_default_design():
    from fvdm.bench.suites.digits_zero_shot import DigitsZeroShotSuite

    primary = DigitsZeroShotSuite.Config()
    assert [a.name for a in primary.arms] == ["vanilla", "vanilla_native", "ptss_0.2", "ptss_0.2_replacement",
                                              "ptss_0.2_stabilized"]
    assert len(DigitsZeroShotSuite(primary).models()) == 2  # the 2x2 (+ stabilized): 2 trainings per seed
    assert {c.arm for c in primary.criteria} <= {a.name for a in primary.arms}  # criteria follow the preset
    cfg = DigitsZeroShotSuite.Config(arm_preset="all")
    arms = {a.name: a for a in cfg.arms}
    assert cfg.standard.seeds >= 5 and cfg.standard.num_reference >= 1024 and cfg.quick.num_reference >= 1024
    assert (arms["vanilla"].vtv, arms["vanilla"].sampling) == ({"name": "synchronized"}, "replacement")
    assert {a.vtv.get("p") for a in cfg.arms if a.vtv["name"] == "ptss"} == {0.1, 0.2, 0.5}
    assert arms["ptss_0.2_x1.25"].steps_multiplier == 1.25 and arms["independent"].vtv == {"name": "independent"}
    assert {a.sampling for a in cfg.arms} == {"native", "replacement", "stabilized"}
    assert len(DigitsZeroShotSuite(cfg).models()) == 6  # 9 arms, 6 trainings per seed
    assert [m["name"] for m in cfg.metrics][:3] == ["fvd", "psnr", "ssim"]


def test_cli_dotted_set_keeps_other_nested_defaults():
    import argparse

    from fvdm.commands.bench import _params

    entry = load_plugins(entry_points=False)["benchmarks"].get("digits_zero_shot")
    args = argparse.Namespace(data=None, weights=None, overrides=["quick.seeds=3", "workers=1"])
    params = _params(args, entry)
    cfg = entry.config.model_validate(params)
    assert cfg.quick.seeds == 3 and cfg.quick.train_steps == entry.config().quick.train_steps
    assert cfg.workers == 1 and cfg.standard == entry.config().standard


def test_device_flag_reaches_the_suite_and_cuda_without_cuda_is_one_line(tmp_path, capsys):
    import argparse

    from fvdm.cli import main
    from fvdm.commands.bench import _params

    entry = load_plugins(entry_points=False)["benchmarks"].get("digits_zero_shot")
    args = argparse.Namespace(data=None, weights=None, device="cuda:0", overrides=[])
    assert _params(args, entry)["device"] == "cuda:0"
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal is for CPU-only builds")
    # through --set the suite itself refuses (the --device flag is refused earlier, by argparse)
    assert main(["bench", "run", "digits_zero_shot", "--quick", "--set", "device=cuda", "--out", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "sees no CUDA device" in err and "Traceback" not in err
    assert not list(tmp_path.glob("runs/*"))  # refused before any training


def test_time_aware_metrics_see_real_clips_as_real():
    """The suite hands evaluators [0, 1] clips: ground truth scored as a 'generated' extension must look real."""
    from fvdm.bench.suites.digits_zero_shot import DigitsZeroShotSuite
    from fvdm.plugins.evaluators.digits_truth import digits_truth

    plugins = load_plugins(entry_points=False)
    cfg = DigitsZeroShotSuite.Config()
    cfg.metrics = [m for m in cfg.metrics if m["name"] != "fvd"]
    ds = plugins["datasets"].build({"name": "moving_digits", "split": "test", "num_frames": 8, "num_clips": 8})
    gt = torch.stack([ds[i]["video"] for i in range(8)])  # (8, 8, 1, 32, 32) in [-1, 1]
    res = DigitsZeroShotSuite(cfg)._score(plugins, None, {"truth": digits_truth(ds, list(range(8)))}, "extension",
                                          gt.clone(), gt, {})
    assert res["digit_recognisability"] > 0.95 and res["digit_identity"] > 0.9
    assert res["trajectory_error"] < 2.0 and res["boundary_jump"] == pytest.approx(1.0)
    assert res["psnr"] == 100.0  # identical frames: the documented cap


def test_workers_exit_when_the_suite_process_dies(tmp_path):
    """A killed suite must not leave its worker processes training on (orphans)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    pid_file = tmp_path / "child.pid"
    script.write_text(
        "import multiprocessing as mp, os, sys, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from fvdm.bench.suites.digits_zero_shot import _exit_with_parent\n"
        "def busy(path):\n"  # a worker in the middle of a long job (training), not idle on its queue
        "    open(path, 'w').write(str(os.getpid()))\n"
        "    time.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    init = _exit_with_parent if sys.argv[2] == 'watch' else None\n"
        "    pool = ProcessPoolExecutor(1, mp_context=mp.get_context('spawn'), initializer=init,\n"
        "                               initargs=(os.getpid(), 0.1) if init else ())\n"
        "    pool.submit(busy, sys.argv[1])\n"
        "    time.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    parent = subprocess.Popen([sys.executable, str(script), str(pid_file), "watch"], env=env)
    for _ in range(300):
        if pid_file.is_file() and pid_file.read_text():
            break
        time.sleep(0.1)
    child_pid = int(pid_file.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    for _ in range(100):  # the watcher polls every 0.1 s
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(child_pid, signal.SIGKILL)
        pytest.fail("the worker outlived its killed parent")


def test_speed_suite_names_the_checkout_when_its_scripts_are_not_importable(tmp_path):
    from fvdm.bench.suites.speed import SpeedSuite

    suite = SpeedSuite(SpeedSuite.Config(modules=["attention"], package="no_such_scripts_package"))
    res = suite.run(tmp_path, quick=True)
    reason = res["metrics"]["attention"]["reason"]
    assert res["metrics"]["attention"]["status"] == "missing" and "source checkout" in reason


def test_digits_suite_builds_a_frechet_metric_through_the_callers_plugin_manager():
    """A metric that builds its own feature extractor (fvd_digits) gets the suite's plugin manager."""
    import warnings

    from fvdm.bench.suites.digits_zero_shot import DigitsZeroShotSuite

    plugins = load_plugins(entry_points=False)
    suite = DigitsZeroShotSuite(DigitsZeroShotSuite.Config(metrics=[{"name": "fvd_digits", "num_frames": 8}]))
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(6, 8, 1, 32, 32, generator=g) * 2 - 1  # (N, F, C, H, W) in [-1, 1]
    fake = (gt + 0.3 * torch.randn(gt.shape, generator=g)).clamp(-1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 6 clips for 64-d features: rank-deficient, only the wiring is tested
        res = suite._score(plugins, None, {}, "extension", fake, gt, {})
    assert res["fvd_digits"] > 0
