"""The backbone contract and the pretrained seam for fvdm's own backbones: a Config must extend BackboneConfig,
``pretrained: DIR`` fills any backbone once, strictly, and the build never reads it for a checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from fvdm.core.build import build_model, read_pretrained
from fvdm.core.errors import ConfigError, FvdmError
from fvdm.core.hookspecs import hookimpl
from fvdm.core.interfaces import PluginConfig
from fvdm.core.plugins import load_plugins

SPEC = {"name": "unet_video", "in_channels": 1, "input_size": 16, "num_frames": 4, "base_channels": 8,
        "channel_mult": [1, 2], "temporal_levels": [1], "num_heads": 2}


def export_dir(tmp_path, model, name="unet_video"):
    from safetensors.torch import save_file

    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps({"backbone": name}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    return tmp_path


def test_an_fvdm_backbone_directory_loads_strictly_once(tmp_path):
    P = load_plugins()
    torch.manual_seed(1)
    src = build_model(P, SPEC)
    folder = export_dir(tmp_path / "w", src)
    torch.manual_seed(2)
    loaded = build_model(P, {**SPEC, "pretrained": str(folder)}, load_pretrained=True)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), loaded.state_dict().values()))
    assert loaded.pretrained_info["fingerprint"]
    fresh = build_model(P, {**SPEC, "pretrained": str(folder)})  # a checkpoint's build: DIR not read
    assert not hasattr(fresh, "pretrained_info")
    (folder / "config.json").write_text(json.dumps({"backbone": "latte_tiny"}))
    with pytest.raises(FvdmError, match="another architecture or size"):
        read_pretrained(build_model(P, SPEC), {**SPEC, "pretrained": str(folder)})
    other = build_model(P, {**SPEC, "base_channels": 16})
    export_dir(tmp_path / "wide", other)
    with pytest.raises(FvdmError, match="shape"):
        read_pretrained(build_model(P, SPEC), {**SPEC, "pretrained": str(tmp_path / "wide")})


class PlainConfigNet(torch.nn.Module):
    class Config(PluginConfig):  # not a BackboneConfig: the build cannot know what it fills or feeds
        width: int = 4


class Plugin:
    @staticmethod
    @hookimpl
    def fvdm_register_backbones(registry):
        registry.add("plain_net", PlainConfigNet)


def test_a_backbone_config_that_does_not_extend_backboneconfig_is_refused_by_name():
    from fvdm.core.build import backbone_spec
    from fvdm.core.config import parse_config

    P = load_plugins(extra_plugins=[("plain", Plugin())])
    cfg = parse_config({"backbone": {"name": "plain_net"}})
    with pytest.raises(ConfigError, match="does not extend fvdm.core.interfaces.BackboneConfig"):
        backbone_spec(cfg, P, {"latent_channels": 1, "latent_resolution": 16, "num_frames": 4, "num_classes": 0},
                      P["noise_schedules"].build("ddpm"))
