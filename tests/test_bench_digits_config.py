"""The digits suite's Config from the command line: adding arms and criteria to a preset, one-line errors, show."""

from __future__ import annotations

import json

import pytest
import torch

from fvdm.bench.suites.digits_zero_shot import PRIMARY_ARMS, DigitsZeroShotSuite
from fvdm.cli import main

NEW_ARM = {"name": "ptss_0.3", "vtv": {"name": "ptss", "p": 0.3}}


def _error_lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_extra_arms_add_to_the_preset_and_keep_its_criteria():
    base = DigitsZeroShotSuite.Config()
    cfg = DigitsZeroShotSuite.Config(extra_arms=[NEW_ARM],
                                     extra_criteria=[{"arm": "ptss_0.3", "task": "extension", "why": "mine"}])
    assert [a.name for a in cfg.arms] == [a["name"] for a in PRIMARY_ARMS] + ["ptss_0.3"]
    assert cfg.criteria[:-1] == base.criteria and len(base.criteria) == 8  # the pre-registered ones still apply
    assert (cfg.criteria[-1].arm, cfg.criteria[-1].task, cfg.criteria[-1].why) == ("ptss_0.3", "extension", "mine")
    assert sorted(DigitsZeroShotSuite(cfg).models()) == ["ptss_p0.2", "ptss_p0.3", "synchronized"]
    # the validated config is resolved: dumped and read back (worker processes, results.json) it is the same run
    assert cfg.extra_arms == [] and DigitsZeroShotSuite.Config.model_validate(cfg.model_dump()) == cfg
    cfg.workers = 1  # assignment re-validates; the extra arm is not added twice
    assert len(cfg.arms) == 6
    # added to explicit arms too
    two = DigitsZeroShotSuite.Config(arms=PRIMARY_ARMS[:2], extra_arms=[NEW_ARM])
    assert [a.name for a in two.arms] == ["vanilla", "vanilla_native", "ptss_0.3"]


def test_extra_arms_through_the_cli(capsys, tmp_path):
    assert main(["bench", "show", "digits_zero_shot", "--set",
                 "extra_arms=[{name: ptss_0.3, vtv: {name: ptss, p: 0.3}}]"]) == 0
    out = capsys.readouterr().out
    assert "arms (with these settings):" in out and '"name": "ptss_0.3"' in out and '"name": "vanilla"' in out


def test_an_extra_arm_named_like_a_preset_arm_is_refused_in_one_line(capsys, tmp_path):
    assert main(["bench", "run", "digits_zero_shot", "--quick", "--set", "extra_arms=[{name: vanilla}]",
                 "--out", str(tmp_path)]) == 2
    err = _error_lines(capsys)
    assert len(err) == 2 and "errors.pydantic.dev" not in err[0]  # the message, then the FVDM_DEBUG hint
    assert "extra_arms: " in err[0] and "arm name(s) ['vanilla'] already in the 'primary' preset; give each " \
           "extra arm a new name" in err[0]
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match=r"\['ptss_0.2'\] already in arms"):
        DigitsZeroShotSuite.Config(arms=PRIMARY_ARMS, extra_arms=[{"name": "ptss_0.2"}])


@pytest.mark.parametrize("setting, field, expected", [
    ("extension_frames=9", "extension_frames", "extension_frames=9 must be < num_frames=8"),
    ("long_overlap=8", "long_overlap", "long_overlap=8 must be < num_frames=8"),
    ("tasks=[unconditional, magic]", "tasks", "unknown task(s) ['magic']"),
])
def test_config_checks_name_their_field_in_one_short_line(setting, field, expected, capsys, tmp_path):
    """These were model-level checks: the error printed the whole Config as its input."""
    assert main(["bench", "run", "digits_zero_shot", "--quick", "--set", setting, "--out", str(tmp_path)]) == 2
    err = _error_lines(capsys)
    assert f"(builtin): {field}: " in err[0] and expected in err[0]
    assert "Config(" not in err[0] and len(err[0]) < 300


def test_a_bad_arm_parameter_is_one_line_in_trains_words(capsys, tmp_path):
    arms = json.dumps([{"name": "vanilla", "vtv": {"name": "ptss", "p": 2}}])
    assert main(["bench", "run", "digits_zero_shot", "--quick", "--set", f"arms={arms}", "--out", str(tmp_path)]) == 2
    err = _error_lines(capsys)
    assert len(err) == 2 and "errors.pydantic.dev" not in err[0]
    assert "arm 'vanilla': vtv {'name': 'ptss', 'p': 2} is invalid (vtv.p: Input should be less than or equal " \
           "to 1 (got 2) [vtv_strategies 'ptss' from builtin]); fix its params" in err[0]
    assert not list(tmp_path.glob("runs/*"))  # refused before any training


def test_bench_show_prints_the_fields_of_arms_and_criteria(capsys):
    assert main(["bench", "show", "digits_zero_shot"]) == 0
    out = capsys.readouterr().out
    assert "Arm fields (each item of arms, extra_arms):" in out
    assert "  steps_multiplier: float = 1.0  train for round(multiplier x budget.train_steps) steps" in out
    assert "  sampling: str = 'native'" in out and "  stabilization: float = 0.05" in out
    assert "Criterion fields (each item of criteria, extra_criteria):" in out and "  against: str | None" in out
    default_arms = out.split("arms (default):\n")[1].split("criteria (default):")[0].strip().splitlines()
    assert [json.loads(line.strip()[2:])["name"] for line in default_arms] == [a["name"] for a in PRIMARY_ARMS]


def test_cli_dotted_set_keeps_other_nested_defaults(capsys):
    assert main(["bench", "show", "digits_zero_shot", "--set", "quick.seeds=3", "--set", "workers=1"]) == 0
    out = capsys.readouterr().out
    assert "    quick.seeds: int = 3" in out and "    quick.train_steps: int = 400" in out
    assert "    standard.seeds: int = 5" in out and "  workers: int = 1" in out


def test_device_flag_reaches_the_suite_and_cuda_without_cuda_is_one_line(tmp_path, capsys, monkeypatch):
    import fvdm.bench.runner as runner

    seen = {}

    def fake_run_suite(name, out, **kw):
        seen.update(kw["params"])
        (tmp_path / "results.md").write_text("")
        return {"status": "ok", "elapsed_s": 0.0}

    monkeypatch.setattr(runner, "run_suite", fake_run_suite)
    assert main(["bench", "run", "digits_zero_shot", "--device", "cpu", "--out", str(tmp_path)]) == 0
    assert seen == {"device": "cpu"}
    monkeypatch.undo()
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal is for CPU-only builds")
    # through --set the suite itself refuses (the --device flag is refused earlier, by argparse)
    capsys.readouterr()
    assert main(["bench", "run", "digits_zero_shot", "--quick", "--set", "device=cuda", "--out", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "sees no CUDA device" in err and "Traceback" not in err
    assert not list(tmp_path.glob("runs/*"))  # refused before any training
