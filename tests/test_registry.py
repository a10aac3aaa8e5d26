"""Registry rules: duplicates, unknown names, wildcards, availability, two-pass build."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fvdm.core import DuplicatePluginError, PluginConfig, PluginUnavailableError, Registry, UnknownPluginError
from fvdm.core.registry import Availability, Registries


class Thing:
    """A thing for tests."""

    class Config(PluginConfig):
        width: int = 3
        mode: str = "a"

    def __init__(self, cfg: "Thing.Config"):
        self.cfg = cfg


def _reg(kind: str = "samplers") -> Registry:
    reg = Registry(kind)
    reg.current_plugin, reg.current_origin = "first_plugin", "builtin"
    return reg


def test_duplicate_names_both_origins():
    reg = _reg()
    reg.add("ddim", Thing)
    reg.current_plugin, reg.current_origin = "other_plugin", "other-dist 1.0"
    with pytest.raises(DuplicatePluginError) as exc:
        reg.add("ddim", Thing)
    msg = str(exc.value)
    assert "first_plugin (builtin)" in msg and "other_plugin (other-dist 1.0)" in msg
    assert "FVDM_BLOCK_PLUGINS" in msg


def test_unknown_name_lists_choices_and_close_match():
    reg = _reg("vtv_strategies")
    for n in ("ptss", "synchronized", "independent"):
        reg.add(n, Thing)
    with pytest.raises(UnknownPluginError) as exc:
        reg.get("ptts")
    msg = str(exc.value)
    assert "Did you mean 'ptss'?" in msg
    assert "independent, ptss, synchronized" in msg
    with pytest.raises(UnknownPluginError) as exc:
        reg.get("correlated_frames")
    assert "plugins --kind vtv_strategies" in str(exc.value)  # core names no third-party package
    assert isinstance(exc.value, KeyError)  # still a KeyError for callers that catch that


def test_wildcard_listing():
    reg = _reg("backbones")
    for n in ("latte_s_2", "latte_b_2", "dit_s_2", "latte_tiny"):
        reg.add(n, Thing)
    assert [e.name for e in reg.list("latte_*")] == ["latte_b_2", "latte_s_2", "latte_tiny"]
    assert [e.name for e in reg.list("*_2")] == ["dit_s_2", "latte_b_2", "latte_s_2"]
    assert [e.name for e in reg.list("?it_s_?")] == ["dit_s_2"]
    assert len(reg.list()) == 4


def test_availability_is_decided_per_call_with_context():
    calls = []

    def needs_cuda(device=None, dtype=None):
        calls.append(device)
        return (device == "cuda", "installed, no CPU operator; needs CUDA")

    reg = _reg("attention_kernels")
    reg.add("fast", Thing, extra="xformers", available=needs_cuda)
    entry = reg.get("fast")
    assert not entry.availability(device="cpu")
    assert entry.availability(device="cpu").reason.startswith("installed, no CPU operator")
    assert entry.availability(device="cuda").ok
    assert calls == ["cpu", "cpu", "cuda"]
    with pytest.raises(PluginUnavailableError, match=r"pip install 'fvdm\[xformers\]'"):
        reg.build("fast", device="cpu")
    assert reg.get("fast").to_json(device="cpu")["available"] is False


def test_availability_probe_that_raises_is_reported_not_raised():
    def boom():
        raise ImportError("libfoo.so missing")

    reg = _reg()
    reg.add("x", Thing, available=boom)
    av = reg.get("x").availability()
    assert av == Availability(False, "availability check raised ImportError: libfoo.so missing")


def test_build_validates_params_with_plugin_config():
    reg = _reg()
    reg.add("thing", Thing)
    obj = reg.build({"name": "thing", "width": 5})
    assert isinstance(obj, Thing) and obj.cfg.width == 5 and obj.cfg.mode == "a"
    with pytest.raises(ValidationError, match="widht"):
        reg.build({"name": "thing", "widht": 5})
    with pytest.raises(ValidationError, match="width"):
        reg.build({"name": "thing", "width": "wide"})


def test_plugin_without_config_rejects_params_and_returns_obj():
    def fn():
        """A plain function."""

    reg = _reg()
    reg.add("fn", fn)
    assert reg.build("fn") is fn
    assert reg.get("fn").description == "A plain function."
    with pytest.raises(ValueError, match="takes no parameters"):
        reg.build({"name": "fn", "p": 1})


@pytest.mark.parametrize("bad", ["", "a b", "lat*", None])
def test_invalid_names_rejected(bad):
    with pytest.raises(ValueError, match="invalid plugin name"):
        _reg().add(bad, Thing)


def test_bad_config_type_rejected():
    with pytest.raises(TypeError, match="pydantic BaseModel"):
        _reg().add("x", Thing, config=dict)


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown plugin kind"):
        Registry("backbone")
    with pytest.raises(UnknownPluginError, match="Did you mean 'backbones'"):
        Registries()["backbone"]


def test_aliases_look_up_the_same_entry_and_cannot_shadow():
    reg = _reg("evaluators")
    reg.add("fvd2048_16f", Thing, aliases=("stylegan_v_fvd2048_16f",))
    entry = reg.get("stylegan_v_fvd2048_16f")
    assert entry is reg.get("fvd2048_16f") and "stylegan_v_fvd2048_16f" in reg
    assert reg.names() == ["fvd2048_16f"] and reg.get("fvd2048_16f").to_json()["aliases"] == ["stylegan_v_fvd2048_16f"]
    assert reg.build({"name": "stylegan_v_fvd2048_16f", "width": 3}).cfg.width == 3
    with pytest.raises(DuplicatePluginError, match="stylegan_v_fvd2048_16f"):
        reg.add("stylegan_v_fvd2048_16f", Thing)
    with pytest.raises(DuplicatePluginError, match="fvd2048_16f"):
        reg.add("other", Thing, aliases=("fvd2048_16f",))
    reg.remove_plugin("first_plugin")
    assert "stylegan_v_fvd2048_16f" not in reg


class NeedsPlugins:
    """Builds another plugin by name: takes the plugin manager from build()."""

    class Config(PluginConfig):
        inner: str = "thing"

    def __init__(self, cfg, *, plugins):
        self.cfg, self.inner = cfg, plugins["samplers"].build(cfg.inner)


class MayUsePlugins(Thing):
    def __init__(self, cfg, *, plugins=None):
        super().__init__(cfg)
        self.plugins = plugins


def test_build_passes_the_plugin_manager_to_constructors_that_declare_it():
    reg = _reg()
    reg.add("thing", Thing)
    reg.add("needs", NeedsPlugins)
    reg.add("may", MayUsePlugins)
    plugins = {"samplers": reg}
    assert isinstance(reg.build("needs", plugins=plugins).inner, Thing)
    assert reg.build("may", plugins=plugins).plugins is plugins
    assert reg.build("may").plugins is None  # optional: built without one
    assert isinstance(reg.build("thing", plugins=plugins), Thing)  # not declared: not passed
    with pytest.raises(TypeError, match=r"'needs' builds other plugins and needs the plugin manager"):
        reg.build("needs")
