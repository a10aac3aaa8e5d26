"""Experiment configs: two-pass resolution, lossless YAML/JSON, hashes, CLI validate/schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fvdm.core import ConfigError, PluginConfig, hookimpl, load_plugins
from fvdm.core.config import (
    ExperimentConfig, apply_overrides, canonical_dict, config_hash, dump_config, experiment_schema, load_config,
    parse_config, resolve_config,
)

REPO = Path(__file__).resolve().parents[1]


class Strategy:
    class Config(PluginConfig):
        p: float = 0.2
        coin: str = "per_sample"

    def __init__(self, cfg):
        self.cfg = cfg


class Simple:
    class Config(PluginConfig):
        size: int = 4

    def __init__(self, cfg):
        self.cfg = cfg


class _Fake:
    """Registers one item per plugin field of ExperimentConfig under the default names."""

    @staticmethod
    @hookimpl
    def fvdm_register_vtv_strategies(registry):
        registry.add("fake_ptss", Strategy)

    @staticmethod
    @hookimpl
    def fvdm_register_backbones(registry):
        registry.add("fake_net", Simple)

    @staticmethod
    @hookimpl
    def fvdm_register_datasets(registry):
        registry.add("fake_data", Simple)

    @staticmethod
    @hookimpl
    def fvdm_register_noise_schedules(registry):
        registry.add("fake_ddpm", Simple)

    @staticmethod
    @hookimpl
    def fvdm_register_autoencoders(registry):
        registry.add("fake_id", Simple)

    @staticmethod
    @hookimpl
    def fvdm_register_samplers(registry):
        registry.add("fake_ddim", Simple)

    @staticmethod
    @hookimpl
    def fvdm_register_sampling_schedules(registry):
        registry.add("fake_standard", Simple)


BASE = {
    "name": "exp",
    "data": {"name": "fake_data"},
    "backbone": {"name": "fake_net", "size": 8},
    "noise_schedule": "fake_ddpm",
    "vtv": {"name": "fake_ptss", "p": 0.5},
    "autoencoder": "fake_id",
    "sample": {"sampler": "fake_ddim", "schedule": "fake_standard", "steps": 10},
    "train": {"steps": 7, "lr": 3e-4},
}


@pytest.fixture(scope="module")
def plugins():
    return load_plugins(builtins=False, entry_points=False, extra_plugins=[("fake", _Fake)])


def test_two_pass_resolution_uses_plugin_configs(plugins):
    cfg = parse_config(BASE)
    resolved = resolve_config(cfg, plugins)
    entry, vcfg = resolved[("vtv",)]
    assert entry.name == "fake_ptss" and vcfg.p == 0.5 and vcfg.coin == "per_sample"
    assert resolved[("backbone",)][1].size == 8
    assert resolved[("sample", "sampler")][0].name == "fake_ddim"


def test_every_error_reported_with_path(plugins):
    bad = json.loads(json.dumps(BASE))
    bad["train"]["lr"] = "fast"
    bad["train"]["stpes"] = 3
    with pytest.raises(ConfigError) as exc:
        parse_config(bad, "exp.yaml")
    paths = [p for p, _ in exc.value.errors]
    assert paths == ["train.lr", "train.stpes"] or sorted(paths) == ["train.lr", "train.stpes"]
    assert "exp.yaml" in str(exc.value) and "unknown key" in str(exc.value)

    bad = json.loads(json.dumps(BASE))
    bad["vtv"] = {"name": "fake_ptss", "pp": 0.1, "p": "high"}
    bad["backbone"] = {"name": "fake_nett"}
    with pytest.raises(ConfigError) as exc:
        resolve_config(parse_config(bad), plugins)
    errs = dict(exc.value.errors)
    assert set(errs) == {"vtv.pp", "vtv.p", "backbone.name"}
    assert "Did you mean 'fake_net'" in errs["backbone.name"]
    assert "fake_ptss" in errs["vtv.pp"] and "from local" in errs["vtv.pp"]
    assert "Did you mean 'p'?" in errs["vtv.pp"]  # key typos get a close match, as name typos do


def test_key_typos_get_a_close_match_at_every_level(plugins):
    bad = json.loads(json.dumps(BASE))
    bad["trian"] = {}
    bad["train"]["stpes"] = 3
    bad["vtv"] = {"name": "fake_ptss", "cion": "per_sample"}
    with pytest.raises(ConfigError) as exc:
        resolve_config(parse_config(bad), plugins)
    errs = dict(exc.value.errors)
    assert "Did you mean 'train'?" in errs["trian"] and "Did you mean 'steps'?" in errs["train.stpes"]
    bad = json.loads(json.dumps(BASE))
    bad["vtv"] = {"name": "fake_ptss", "cion": "per_sample", "zzz": 1}
    with pytest.raises(ConfigError) as exc:
        resolve_config(parse_config(bad), plugins)
    errs = dict(exc.value.errors)
    assert "Did you mean 'coin'?" in errs["vtv.cion"] and "Did you mean" not in errs["vtv.zzz"]


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_lossless_roundtrip(tmp_path, plugins, suffix):
    cfg = parse_config(BASE)
    path = tmp_path / f"c{suffix}"
    dump_config(cfg, path)
    again = load_config(path, plugins)
    assert again == cfg
    assert again.vtv.params == {"p": 0.5}
    assert again.model_dump() == cfg.model_dump()


def test_hash_is_canonical(plugins):
    a = parse_config(BASE)
    explicit = json.loads(json.dumps(BASE))
    explicit["vtv"]["coin"] = "per_sample"  # the default, written out
    b = parse_config(explicit)
    assert config_hash(a, plugins) == config_hash(b, plugins)
    changed = json.loads(json.dumps(BASE))
    changed["vtv"]["p"] = 0.25
    assert config_hash(parse_config(changed), plugins) != config_hash(a, plugins)
    assert len(config_hash(a, plugins)) == 10
    assert canonical_dict(a, plugins)["vtv"] == {"name": "fake_ptss", "p": 0.5, "coin": "per_sample"}


def test_overrides():
    data = apply_overrides(json.loads(json.dumps(BASE)), ["train.lr=0.001", "noise_schedule.beta=2", "vtv.p=1"])
    assert data["train"]["lr"] == 0.001 and data["noise_schedule"] == {"name": "fake_ddpm", "beta": 2}
    with pytest.raises(ConfigError):
        apply_overrides({}, ["nonsense"])


def test_schema_lists_registered_plugins(plugins):
    schema = experiment_schema(plugins)
    vtv = schema["properties"]["vtv"]["anyOf"]
    assert vtv[0]["title"] == "vtv_strategies:fake_ptss"
    assert vtv[0]["properties"]["name"] == {"const": "fake_ptss"} and "p" in vtv[0]["properties"]
    sampler = schema["$defs"]["SampleSettings"]["properties"]["sampler"]["anyOf"]
    assert sampler[0]["properties"]["name"] == {"const": "fake_ddim"}
    assert ExperimentConfig.model_json_schema()["additionalProperties"] is False


def _cli(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "fvdm", *args], env=env, capture_output=True, text=True, cwd=cwd)


def test_cli_validate_reports_every_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"train": {"lr": "fast", "stpes": 2}, "seed": "x"}))
    out = _cli("config", "validate", str(path))
    assert out.returncode == 1
    for key in ("train.lr", "train.stpes", "seed", str(path)):
        assert key in out.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    out = _cli("config", "validate", str(broken))
    assert out.returncode == 1 and "cannot parse" in out.stderr


def test_cli_schema_is_json():
    out = _cli("config", "schema", "--core-only")
    assert out.returncode == 0
    assert json.loads(out.stdout)["title"] == "ExperimentConfig"
