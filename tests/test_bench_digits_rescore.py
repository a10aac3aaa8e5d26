"""The committed digits results, re-scored: this code turns their per-seed values into the committed numbers.

A regression oracle for the suite's analysis and report: summaries, paired differences, verdicts,
criteria, the versus-baselines cells, the tables and notes, and results.md byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fvdm.bench.runner import build_suite, render_markdown, to_jsonable
from fvdm.core import load_plugins

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
RUNS = ["digits_zero_shot", "digits_samplers/hg_off", "digits_samplers/hg_on"]


@pytest.mark.parametrize("run", RUNS)
def test_committed_digits_results_rescore_identically(run):
    folder = RESULTS / run
    if not (folder / "results.json").is_file():
        pytest.skip(f"{folder} is not in this checkout")
    doc = json.loads((folder / "results.json").read_text())
    plugins = load_plugins(entry_points=False)
    suite = build_suite(plugins, "digits_zero_shot", doc["config"])
    new = to_jsonable(suite.rescore(doc, plugins))
    for key in ("summary", "paired", "criteria", "versus_baselines"):
        assert new[key] == doc["metrics"][key], key
    assert new["tables"] == doc["tables"]
    assert new["notes"] == doc["notes"][:len(new["notes"])]
    md = render_markdown({**doc, "tables": new["tables"], "notes": new["notes"] + doc["notes"][len(new["notes"]):]})
    assert md == (folder / "results.md").read_text()
