"""Contracts every registered item of every kind keeps (built-ins; a third-party package can run
the same checks on its own items with ``load_plugins()``):

- it reports its availability, with a reason when it cannot run;
- its spec round-trips: default Config -> JSON spec -> validate -> the same entry and Config
  (also through each alias);
- it builds from its default Config (backbones on the meta device, so the XL sizes cost
  nothing), or refuses with an error naming what the user must supply (a required field,
  weights that fvdm never downloads, an uninstalled extra);
- what it builds looks like its kind's Protocol in ``fvdm.core.interfaces``.
"""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from fvdm.core.errors import FvdmError, PluginUnavailableError
from fvdm.core.interfaces import INTERFACES
from fvdm.core.plugins import load_plugins
from fvdm.core.registry import KINDS, Availability

P = load_plugins(entry_points=False)
ITEMS = [(kind, name) for kind in KINDS for name in P[kind].names()]

#: required Config fields of items that cannot have a default (the user's data)
REQUIRED_INPUTS = {
    ("datasets", "video_folder"): {"root": "/nonexistent/videos"},
    ("datasets", "webdataset"): {"urls": "/nonexistent/shard-{000000..000001}.tar"},
    ("text_encoders", "umt5"): {"path": "/nonexistent/wan"},
    ("autoencoders", "wan_vae"): {"path": "/nonexistent/wan"},
}

#: Protocols whose kinds may legitimately be satisfied differently (map-style datasets index, not iterate)
STRUCTURAL = {kind: proto for kind, proto in INTERFACES.items() if kind != "datasets"}


def _ids(items):
    return [f"{k}:{n}" for k, n in items]


def test_every_kind_has_built_in_items():
    assert {kind for kind, _ in ITEMS} == set(KINDS)


@pytest.mark.parametrize("kind,name", ITEMS, ids=_ids(ITEMS))
def test_reports_availability(kind, name):
    entry = P[kind].get(name)
    av = entry.availability()
    assert isinstance(av, Availability) and isinstance(av.reason, str)
    assert av.ok or av.reason, f"{kind} {name!r} is unavailable without saying why"
    row = json.loads(json.dumps(entry.to_json()))
    assert row["name"] == name and row["available"] == av.ok and row["origin"] == "builtin"
    assert entry.description, f"{kind} {name!r} has no description (registry.add(description=) or a docstring)"


@pytest.mark.parametrize("kind,name", ITEMS, ids=_ids(ITEMS))
def test_spec_round_trips(kind, name):
    entry = P[kind].get(name)
    if entry.config is None:  # a plain object (attention kernel function): its spec is its name
        assert P[kind].validate(name) == (entry, None)
        return
    cfg = entry.config.model_validate(REQUIRED_INPUTS.get((kind, name), {}))
    spec = json.loads(json.dumps({"name": name, **cfg.model_dump(mode="json")}))
    for alias in (name, *entry.aliases):
        again, cfg2 = P[kind].validate({**spec, "name": alias})
        assert again is entry and cfg2 == cfg
    with pytest.raises(ValidationError):  # unknown keys are errors, not silently dropped
        P[kind].validate({**spec, "no_such_key": 1})


@pytest.mark.parametrize("kind,name", ITEMS, ids=_ids(ITEMS))
def test_builds_from_its_default_config_or_says_what_it_needs(kind, name, tmp_path, monkeypatch):
    monkeypatch.setenv("FVDM_WEIGHTS_DIR", str(tmp_path))  # no weights but the bundled ones
    entry = P[kind].get(name)
    if not entry.availability():
        with pytest.raises(PluginUnavailableError, match=name):
            P[kind].build(name, plugins=P)
        return
    if (kind, name) in REQUIRED_INPUTS:
        with pytest.raises(ValidationError) as exc:
            P[kind].build(name, plugins=P)
        assert {e["loc"][0] for e in exc.value.errors()} == set(REQUIRED_INPUTS[kind, name])
        return
    try:
        with torch.device("meta") if kind == "backbones" else torch.device("cpu"):
            obj = P[kind].build(name, plugins=P)
    except (FvdmError, FileNotFoundError) as exc:  # weights fvdm never downloads: the error says what to get
        msg = str(exc)
        assert "weights" in msg.lower() or "pretrained" in msg.lower(), msg
        return
    proto = STRUCTURAL.get(kind)
    if proto is not None:
        assert isinstance(obj, proto), f"{kind} {name!r} built a {type(obj).__name__}, not a {proto.__name__}"
    if kind == "datasets":
        for attr in ("num_frames", "channels", "resolution", "num_classes"):
            assert isinstance(getattr(obj, attr), int), attr


#: kinds whose classes follow the one plugin-class convention: ``__init__(self, cfg)``, the validated
#: Config required (no fallback to defaults or keyword params), plus keyword-only ``plugins`` when they
#: build others and keyword-only ready-made parts tests inject (``model=``, ``extractor=``, ``detector=``)
CONVENTION_KINDS = ("backbones", "noise_schedules", "vtv_strategies", "samplers", "sampling_schedules",
                    "datasets", "evaluators", "feature_extractors", "autoencoders", "benchmarks", "tasks")
CLASSES = [(k, n) for k, n in ITEMS if k in CONVENTION_KINDS and isinstance(P[k].get(n).obj, type)]


@pytest.mark.parametrize("kind,name", CLASSES, ids=_ids(CLASSES))
def test_plugin_class_takes_its_validated_config_without_fallbacks(kind, name):
    import inspect

    entry = P[kind].get(name)
    params = list(inspect.signature(entry.obj).parameters.values())
    assert [p.name for p in params[:1]] == ["cfg"] and params[0].default is inspect.Parameter.empty
    assert all(p.kind is p.KEYWORD_ONLY and p.default is not inspect.Parameter.empty for p in params[1:]), params


def test_plugins_that_build_plugins_use_the_callers_manager_and_never_load_one(monkeypatch):
    import fvdm.core.plugins as core_plugins
    from fvdm.core.sampling_context import SamplingContext

    def no_loading(*a, **k):
        raise AssertionError("a plugin loaded plugins behind the caller's back")

    monkeypatch.setattr(core_plugins, "load_plugins", no_loading)
    fvd = P["evaluators"].build("fvd_digits", plugins=P)
    assert fvd.extractor.extractor_id.startswith("digits")  # built through the caller's manager
    with pytest.raises(TypeError, match="needs the plugin manager"):
        _ = P["evaluators"].build("fvd_digits").extractor
    ctx = SamplingContext(model=None, schedule=None, sampler=None, matrix=None, num_frames=4, shape=(1, 8, 8))
    with pytest.raises(ValueError, match="needs the plugin manager"):
        P["tasks"].build("df_rollout").matrix(ctx)
    assert P["tasks"].build("df_rollout").matrix(SamplingContext(**{**ctx.__dict__, "plugins": P})) is not None
