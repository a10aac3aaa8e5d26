"""Plugin manager: every kind through hooks, entry points, broken plugins, env switches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fvdm.core import KINDS, PluginConfig, hookimpl, load_plugins
from fvdm.core.errors import PluginLoadError, UnknownPluginError
from fvdm.core.plugins import new_plugin_manager

from .plugin_fixtures import make_dist, on_sys_path

REPO = Path(__file__).resolve().parents[1]


class _Obj:
    class Config(PluginConfig):
        k: int = 1

    def __init__(self, cfg):
        self.cfg = cfg


def _all_kinds_plugin(prefix: str):
    """A plugin object with one hookimpl per kind, registering ``<prefix>_<kind>``."""

    class P:
        pass

    for kind in KINDS:
        def impl(registry, _kind=kind):
            registry.add(f"{prefix}_{_kind}", _Obj)

        impl.__name__ = f"fvdm_register_{kind}"
        setattr(P, impl.__name__, staticmethod(hookimpl(impl)))
    return P


def test_fresh_manager_every_call_and_every_kind_registers():
    a = load_plugins(builtins=False, entry_points=False, extra_plugins=[("testplug", _all_kinds_plugin("t"))])
    b = load_plugins(builtins=False, entry_points=False)
    assert a.pm is not b.pm
    for kind in KINDS:
        entry = a[kind].get(f"t_{kind}")
        assert entry.plugin == "testplug" and entry.origin == "local"
        assert a[kind].build({"name": f"t_{kind}", "k": 4}).cfg.k == 4
        assert f"t_{kind}" not in b[kind]


def test_builtins_register_and_report_loaded():
    plugins = load_plugins(entry_points=False)
    from fvdm.core.plugins import BUILTIN_PLUGINS

    recs = {r.name: r for r in plugins.records}
    assert set(BUILTIN_PLUGINS) <= set(recs)
    assert [r for r in plugins.records if r.status == "failed"] == []


def test_duplicate_across_plugins_names_both():
    with pytest.raises(Exception) as exc:
        load_plugins(builtins=False, entry_points=False, strict=True,
                     extra_plugins=[("one", _all_kinds_plugin("x")), ("two", _all_kinds_plugin("x"))])
    assert "one" in str(exc.value) and "two" in str(exc.value)
    # non-strict: recorded, the first registration survives, the second plugin's items are rolled back
    plugins = load_plugins(builtins=False, entry_points=False,
                           extra_plugins=[("one", _all_kinds_plugin("x")), ("two", _all_kinds_plugin("x"))])
    failed = {r.name: r for r in plugins.failed}
    assert "two" in failed and "registered twice" in failed["two"].error
    assert plugins["samplers"].get("x_samplers").plugin == "one"


class _Misspelled:
    @staticmethod
    @hookimpl
    def fvdm_register_backbone(registry):  # missing 's'
        registry.add("never", _Obj)


def test_misspelled_hook_is_reported_not_ignored():
    plugins = load_plugins(builtins=False, entry_points=False,
                           extra_plugins=[("typo", _Misspelled), ("good", _all_kinds_plugin("g"))])
    rec = {r.name: r for r in plugins.records}["typo"]
    assert rec.status == "failed" and rec.stage == "check_pending"
    assert "fvdm_register_backbone" in rec.error and "fvdm_register_<kind>" in rec.error
    assert "g_backbones" in plugins["backbones"]  # the others still load
    with pytest.raises(PluginLoadError, match="typo"):
        load_plugins(builtins=False, entry_points=False, strict=True, extra_plugins=[("typo", _Misspelled)])


class _RaisesInHook:
    @staticmethod
    @hookimpl
    def fvdm_register_samplers(registry):
        registry.add("half", _Obj)
        raise RuntimeError("plugin bug")


def test_hook_that_raises_is_recorded_and_rolled_back():
    plugins = load_plugins(builtins=False, entry_points=False, extra_plugins=[("buggy", _RaisesInHook)])
    rec = plugins.failed[0]
    assert (rec.name, rec.stage) == ("buggy", "hook:fvdm_register_samplers")
    assert "RuntimeError: plugin bug" in rec.error
    assert "half" not in plugins["samplers"]


def test_block_list(monkeypatch):
    plugins = load_plugins(builtins=False, entry_points=False, block=["p"],
                           extra_plugins=[("p", _all_kinds_plugin("p"))])
    assert "p_samplers" not in plugins["samplers"]
    assert {r.name: r.status for r in plugins.records}["p"] == "blocked"
    monkeypatch.setenv("FVDM_BLOCK_PLUGINS", "q, p")
    plugins = load_plugins(builtins=False, entry_points=False, extra_plugins=[("p", _all_kinds_plugin("p"))])
    assert "p_samplers" not in plugins["samplers"]


GOOD_PLUGIN = """
from fvdm.core import hookimpl, PluginConfig

class Walk:
    '''Per-frame timesteps from a random walk.'''
    class Config(PluginConfig):
        step: float = 0.1

    def __init__(self, cfg):
        self.cfg = cfg

@hookimpl
def fvdm_register_vtv_strategies(registry):
    registry.add("walk", Walk)
"""


def test_entry_point_distribution_is_listed_and_usable(tmp_path, monkeypatch):
    root = make_dist(tmp_path / "site", "fvdm-walk", "1.2.3", "fvdm_walk_plugin", GOOD_PLUGIN)
    make_dist(root, "fvdm-broken", "0.1", "fvdm_broken_plugin", "raise ImportError('needs libfoo')\n")
    on_sys_path(monkeypatch, root)
    plugins = load_plugins()
    entry = plugins["vtv_strategies"].get("walk")
    assert entry.origin == "fvdm-walk 1.2.3" and entry.plugin == "fvdm-walk"
    assert plugins["vtv_strategies"].build({"name": "walk", "step": 0.5}).cfg.step == 0.5
    broken = {r.name: r for r in plugins.records}["fvdm-broken"]
    assert broken.status == "failed" and broken.stage == "import"
    assert broken.origin == "fvdm-broken 0.1" and "needs libfoo" in broken.error

    monkeypatch.setenv("FVDM_STRICT_PLUGINS", "1")
    with pytest.raises(PluginLoadError, match="fvdm-broken.*needs libfoo"):
        load_plugins()
    monkeypatch.delenv("FVDM_STRICT_PLUGINS")
    monkeypatch.setenv("FVDM_DISABLE_PLUGIN_AUTOLOAD", "1")
    plugins = load_plugins()
    assert "walk" not in plugins["vtv_strategies"]
    with pytest.raises(UnknownPluginError):
        plugins["vtv_strategies"].get("walk")


def test_cli_plugins_json_lists_entry_point_and_failure(tmp_path):
    root = make_dist(tmp_path / "site", "fvdm-walk", "1.2.3", "fvdm_walk_plugin", GOOD_PLUGIN)
    make_dist(root, "fvdm-broken", "0.1", "fvdm_broken_plugin", "raise ImportError('needs libfoo')\n")
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{REPO}"}
    out = subprocess.run([sys.executable, "-m", "fvdm", "plugins", "--json"], env=env,
                         capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    assert report["format"] == 1
    assert set(report["kinds"]) == set(KINDS)
    walk = [e for e in report["kinds"]["vtv_strategies"] if e["name"] == "walk"]
    assert walk and walk[0]["origin"] == "fvdm-walk 1.2.3" and walk[0]["available"] is True
    failed = [p for p in report["plugins"] if p["status"] == "failed"]
    assert [p["name"] for p in failed] == ["fvdm-broken"]
    text = subprocess.run([sys.executable, "-m", "fvdm", "plugins"], env=env,
                          capture_output=True, text=True, check=True).stdout
    assert "fvdm-broken" in text and "needs libfoo" in text and "walk" in text


def test_new_plugin_manager_has_all_hookspecs():
    pm = new_plugin_manager()
    names = {h for h in dir(pm.hook) if h.startswith("fvdm_")}
    assert {f"fvdm_register_{k}" for k in KINDS} | {"fvdm_choose_attention_kernel"} == names


def test_plugin_calling_sys_exit_on_import_is_reported_not_fatal(tmp_path):
    root = make_dist(tmp_path / "site", "fvdm-quitter", "0.2", "fvdm_quitter_plugin", "import sys\nsys.exit(3)\n")
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{REPO}"}
    out = subprocess.run([sys.executable, "-m", "fvdm", "plugins", "--json"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    failed = [p for p in json.loads(out.stdout)["plugins"] if p["status"] == "failed"]
    assert [p["name"] for p in failed] == ["fvdm-quitter"] and "SystemExit" in failed[0]["error"]


class _TrylastImpostor:
    """Adds a built-in's name with trylast=True, which pluggy would otherwise run before the built-ins."""

    @hookimpl(trylast=True)
    def fvdm_register_vtv_strategies(registry):
        registry.add("ptss", object, description="not the real ptss")


def test_builtins_win_a_name_clash_whatever_the_hook_ordering():
    plugins = load_plugins(entry_points=False, extra_plugins=[("impostor", _TrylastImpostor)])
    entry = plugins["vtv_strategies"].get("ptss")
    assert entry.origin == "builtin" and entry.obj is not object
    assert {"synchronized", "independent", "ptss", "diffusion_forcing"} <= set(plugins["vtv_strategies"].names())
    failed = {r.name: r for r in plugins.failed}
    assert set(failed) == {"impostor"} and "ptss" in failed["impostor"].error


class _SingularHook:
    @staticmethod
    @hookimpl
    def fvdm_register_task(registry):  # the spec's hook is fvdm_register_tasks
        registry.add("keyframes", _Obj)


def test_unknown_hook_names_the_hook_meant_and_unknown_names_point_at_the_failed_plugin():
    plugins = load_plugins(entry_points=False, extra_plugins=[("keyframes-plugin", _SingularHook)])
    rec = {r.name: r for r in plugins.records}["keyframes-plugin"]
    assert rec.status == "failed" and rec.stage == "check_pending"
    assert "unknown hook 'fvdm_register_task': did you mean fvdm_register_tasks?" in rec.error
    with pytest.raises(UnknownPluginError) as exc:
        plugins["tasks"].get("keyframes")
    msg = str(exc.value)
    assert msg.startswith("unknown tasks 'keyframes'.")
    assert ("; plugins that failed to load: keyframes-plugin (local): unknown hook 'fvdm_register_task': "
            "did you mean fvdm_register_tasks?") in msg
    assert "\n" not in msg
    with pytest.raises(UnknownPluginError, match="plugins that failed to load: keyframes-plugin"):
        plugins["samplers"].get("nope")  # a plugin refused whole may have held any kind


def test_a_hook_failure_is_named_only_for_its_own_kind():
    plugins = load_plugins(builtins=False, entry_points=False, extra_plugins=[("buggy", _RaisesInHook)])
    with pytest.raises(UnknownPluginError, match="plugins that failed to load: buggy \\(local\\): RuntimeError"):
        plugins["samplers"].get("half")
    with pytest.raises(UnknownPluginError) as exc:
        plugins["tasks"].get("half")
    assert "failed to load" not in str(exc.value) and str(exc.value).endswith("with its origin.")


def test_origin_of_a_name_is_builtin_local_or_the_distribution(tmp_path, monkeypatch):
    root = make_dist(tmp_path / "site", "fvdm-walk", "1.2.3", "fvdm_walk_origin_plugin", GOOD_PLUGIN)
    on_sys_path(monkeypatch, root)
    plugins = load_plugins(extra_plugins=[("testplug", _all_kinds_plugin("t"))])
    assert plugins.origin("vtv_strategies", "walk") == "fvdm-walk 1.2.3"
    assert plugins.origin("tasks", "prediction") == "builtin"  # an alias resolves to its entry
    assert plugins["samplers"].origin("t_samplers") == "local"
    with pytest.raises(UnknownPluginError, match="Did you mean 'walk'"):
        plugins.origin("vtv_strategies", "wlak")
