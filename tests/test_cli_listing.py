"""`fvdm plugins QUERY` (wildcards and substrings, only kinds with matches) and `fvdm bench show SUITE`."""

from __future__ import annotations

import json

from fvdm.cli import main
from fvdm.commands.plugins import clip


def run(capsys, *argv):
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_substring_query_matches_names_and_descriptions_and_shows_only_kinds_with_matches(capsys):
    out = run(capsys, "plugins", "flow")
    kinds = [line.split(" (")[0] for line in out.splitlines() if not line.startswith(" ")]
    assert kinds == ["noise_schedules", "samplers"]  # rectified_flow; euler ("rectified flow's sampler")
    assert "rectified_flow" in out and "euler" in out and "(0)" not in out
    out = run(capsys, "plugins", "LATTE_S")  # case-insensitive
    assert "latte_s_2" in out and "unet_video" not in out


def test_wildcards_still_match_names_only(capsys):
    out = run(capsys, "plugins", "latte_*")
    assert out.splitlines()[0].startswith("backbones (") and "latte_tiny" in out and "samplers" not in out


def test_no_match_says_so_with_close_names(capsys):
    out = run(capsys, "plugins", "ddmi")
    assert out.startswith("no registered item matches 'ddmi'") and "ddim" in out and "(0)" not in out


def test_json_keeps_every_asked_kind(capsys):
    doc = json.loads(run(capsys, "plugins", "--json", "flow"))
    assert len(doc["kinds"]) == 13 and doc["kinds"]["backbones"] == []
    assert [e["name"] for e in doc["kinds"]["noise_schedules"]] == ["rectified_flow"]


def test_cut_descriptions_end_with_an_ellipsis(capsys):
    assert clip("short", 10) == "short" and clip("a" * 20, 10) == "a" * 9 + "…"
    lines = [line for line in run(capsys, "plugins", "--kind", "backbones").splitlines() if "latte_b_2" in line]
    assert lines[0].endswith("…")


def test_bench_show_lists_config_fields_with_nested_defaults(capsys):
    out = run(capsys, "bench", "show", "digits_zero_shot")
    assert "fvdm bench run digits_zero_shot --set KEY=VALUE" in out
    assert "    quick.seeds: int = 1" in out and "    standard.seeds: int = 5" in out
    assert "  arm_preset: primary | all = 'primary'" in out
    schema = json.loads(run(capsys, "bench", "show", "speed", "--json"))
    assert "modules" in schema["properties"]


def test_bench_show_unknown_suite_suggests(capsys):
    assert main(["bench", "show", "sped"]) == 2
    assert "Did you mean 'speed'?" in capsys.readouterr().err


def test_bench_set_typos_get_a_close_match_and_the_right_fields(capsys, tmp_path):
    assert main(["bench", "run", "digits_zero_shot", "--set", "quick.sedes=1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()[0]
    assert "quick.sedes: unknown parameter. Did you mean 'seeds'? Parameters: seeds, train_steps" in err
    assert "fvdm bench show digits_zero_shot" in err and not any(tmp_path.iterdir())
