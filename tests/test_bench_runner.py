"""`fvdm bench`: the runner (provenance, plugin origins, failures, Markdown), listing, third-party suites, speed."""

from __future__ import annotations

import json

import pytest
import torch

from fvdm.bench.runner import BenchmarkError, markdown_table, render_markdown, run_suite
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
                                    "has_plugins": "echo" in ctx["plugins"]["benchmarks"]}}

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
    assert data["plugins"] == {"benchmarks": {"echo": "fvdm-echo-bench 1.2"}}  # where the numbers came from
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



def test_speed_suite_names_the_checkout_when_its_scripts_are_not_importable(tmp_path):
    from fvdm.bench.suites.speed import SpeedSuite

    suite = SpeedSuite(SpeedSuite.Config(modules=["attention"], package="no_such_scripts_package"))
    res = suite.run(tmp_path, quick=True)
    reason = res["metrics"]["attention"]["reason"]
    assert res["metrics"]["attention"]["status"] == "missing" and "source checkout" in reason



class ReportingSuite:
    """Reports the plugins it used, one of them from outside fvdm."""

    def run(self, out_dir, *, quick=False, seed=0):
        return {"metrics": {"x": 1.0}, "plugins": {"vtv_strategies": {"ptss": "builtin", "theirs": "their-dist 0.3"}}}


class ReportingPlugin:
    @staticmethod
    @hookimpl
    def fvdm_register_benchmarks(registry):
        registry.add("reporting", ReportingSuite(), config=None)
        registry.add("bad_report", BadReportSuite(), config=None)


class BadReportSuite:
    def run(self, out_dir, *, quick=False, seed=0):
        return {"plugins": {"vtv_strategies": ["ptss"]}}  # a list, not name -> origin


def test_results_name_every_plugin_the_run_used_with_its_origin(tmp_path):
    plugins = load_plugins(entry_points=False, extra_plugins=[("reporting", ReportingPlugin)])
    doc = run_suite("reporting", tmp_path, plugins=plugins)
    assert doc["plugins"] == {"benchmarks": {"reporting": "local"},
                              "vtv_strategies": {"ptss": "builtin", "theirs": "their-dist 0.3"}}
    md = (tmp_path / "results.md").read_text()
    assert "- plugins from outside fvdm: benchmarks reporting (local), vtv_strategies theirs (their-dist 0.3)" in md
    # a suite that reports them wrongly fails, with its results (and the suite's own origin) still written
    with pytest.raises(TypeError, match=r"plugins\['vtv_strategies'\] = \['ptss'\]; it must map name -> origin"):
        run_suite("bad_report", tmp_path / "bad", plugins=plugins)
    data = json.loads((tmp_path / "bad" / "results.json").read_text())
    assert data["status"] == "failed" and data["plugins"] == {"benchmarks": {"bad_report": "local"}}


def test_markdown_of_builtin_only_plugins_adds_no_line():
    doc = {"suite": "s", "status": "ok", "quick": False, "seeds": [0], "elapsed_s": 1.0, "tables": [],
           "provenance": {"cpu_model": "c", "nproc": 1, "torch_threads": 1, "torch_version": "t", "python": "p",
                          "fvdm_version": "f", "git": {}},
           "plugins": {"benchmarks": {"s": "builtin"}}}
    assert "outside fvdm" not in render_markdown(doc)
