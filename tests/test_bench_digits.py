"""The digits_zero_shot suite end to end at micro scale: the pipeline, its refusals and its default design."""

from __future__ import annotations

import json

import pytest
import torch

from fvdm.bench.runner import BenchmarkError, run_suite
from fvdm.bench.suites.digits_zero_shot import COND_TASK_TABLE, Budget, DigitsZeroShotSuite

from .bench_fixtures import MICRO, MICRO_ARMS, MICRO_PARAMS, TrajMetricPlugin
from .bench_fixtures import digits_plugins


def test_digits_zero_shot_micro_run_is_reproducible(tmp_path):
    """The whole pipeline (arms sharing models, every task, baselines, paired CIs, criteria) at micro scale."""
    plugins = digits_plugins()
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
    # provenance: every plugin the run used, with its origin (the test's extractor is not fvdm's)
    used = a["plugins"]
    assert used["vtv_strategies"] == {"ptss": "builtin", "synchronized": "builtin"}
    assert used["feature_extractors"] == {"digits_random": "local"} and used["backbones"] == {"latte_tiny": "builtin"}
    assert set(used["tasks"]) == set(s) and set(used["evaluators"]) == {"fvd_digits", "psnr", "ssim"}
    assert used["benchmarks"] == {"digits_zero_shot": "builtin"} and used["samplers"] == {"ddim": "builtin"}
    assert "plugins from outside fvdm: feature_extractors digits_random (local)" in md


@pytest.mark.parametrize("change, match", [
    ({"arms": [*MICRO_ARMS, {"name": "x", "vtv": {"name": "nope"}}]}, "arm 'x': unknown vtv_strategies 'nope'"),
    ({"arms": [*MICRO_ARMS, {"name": "x", "vtv": {"name": "ptss", "p": 2}}]},
     r"arm 'x': vtv .* is invalid \(vtv.p: Input should be less than or equal to 1 \(got 2\) \[vtv_strategies"),
    ({"backbone": {"name": "latte_tiny", "depht": 2}}, r"training config is invalid \(backbone.depht: unknown key"),
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
    plugins = digits_plugins(("trajmetric", TrajMetricPlugin))
    with pytest.raises(BenchmarkError, match=match) as err:
        run_suite("digits_zero_shot", tmp_path, quick=True, plugins=plugins, params={**MICRO_PARAMS, **change})
    assert "\n" not in str(err.value) and "errors.pydantic.dev" not in str(err.value)  # one line, no dump
    assert not (tmp_path / "runs").exists()  # nothing trained
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "failed"


def test_digits_zero_shot_standard_budget_needs_five_seeds(tmp_path):
    params = {**MICRO_PARAMS, "standard": {**MICRO, "seeds": 3}}
    with pytest.raises(BenchmarkError, match="standard budget has seeds=3, below the floor 5"):
        run_suite("digits_zero_shot", tmp_path, quick=False, plugins=digits_plugins(), params=params)


def test_digits_zero_shot_accepts_third_party_strategy_and_time_aware_metric():
    plugins = digits_plugins(("trajmetric", TrajMetricPlugin))
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



def test_each_conditional_task_is_given_exactly_the_frames_its_inputs_hold():
    """The task table: ``given`` (scored as context) and ``inputs`` (handed to the task) name the same frames."""
    F, k = 8, 3
    g = torch.arange(F, dtype=torch.float32).view(1, F, 1, 1, 1).expand(2, F, 1, 4, 4)  # frame j holds value j
    for name, row in COND_TASK_TABLE.items():
        held = torch.cat([v.flatten() for v in row.inputs(g, F, k).values() if isinstance(v, torch.Tensor)])
        assert sorted(set(held.tolist())) == sorted(row.given(F, k)), name
    assert set(COND_TASK_TABLE) == {"image_to_video", "interpolation", "extension"}


def test_the_standard_budget_fits_the_two_core_machine():
    """plan()'s estimate of the default standard run stays within the ~90 minutes the README promises."""
    cfg = DigitsZeroShotSuite.Config()
    est = DigitsZeroShotSuite(cfg).plan(cfg.standard)
    assert est["trained_models"] == 10 and est["estimate_min_shared_machine"] <= 90
    assert cfg.standard.num_long * (cfg.long_frames // cfg.num_frames) >= cfg.min_fvd_clips  # long FVD on >= 256
