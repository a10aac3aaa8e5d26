"""Loading a pretrained Wan-family directory builds the transformer empty and reads the shards into it.

Before, the diffusers model was built with its random initialisation (half of a 1.3B load) and every weight
was then overwritten. Now ``build_model(..., load_pretrained=True)`` constructs it on the meta device and
``load_pretrained`` assigns the tensors read. The oracle for "nothing changed" is the old way itself: a
random-init backbone whose ``load_pretrained`` copies the same directory in; weights, buffers and outputs
must be bit-identical. benchmarks/wan_load_time.py times the two ways side by side.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")

from fvdm.core.build import build_model  # noqa: E402
from fvdm.core.plugins import load_plugins  # noqa: E402
from fvdm.plugins.backbones.wan_tiny import make_tiny_wan_dir  # noqa: E402

INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
                  "xavier_normal_", "zeros_", "ones_", "constant_")


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    return make_tiny_wan_dir(tmp_path_factory.mktemp("wan"), channels=4, vae=False, text=False)


def _spec(wan_dir, **kw):
    return {"name": "wan", "size": "tiny", "in_channels": 4, "pretrained": str(wan_dir), **kw}


def _count_real_inits(monkeypatch) -> list[str]:
    """Calls of torch.nn.init's fill functions on real (non-meta) tensors, recorded by name."""
    calls: list[str] = []
    for name in INIT_FUNCTIONS:
        original = getattr(torch.nn.init, name)

        def spy(tensor, *args, _name=name, _original=original, **kwargs):
            if not tensor.is_meta:
                calls.append(_name)
            return _original(tensor, *args, **kwargs)

        monkeypatch.setattr(torch.nn.init, name, spy)
    return calls


def _old_way(plugins, spec):
    """Random-init backbone, then the directory copied over it (what every load did before)."""
    model = plugins["backbones"].build({k: v for k, v in spec.items()})
    model.pretrained_info = model.load_pretrained(spec["pretrained"])
    return model


@torch.no_grad()
def test_pretrained_load_draws_no_random_weights_and_equals_the_old_load_bit_for_bit(wan_dir, monkeypatch):
    plugins = load_plugins()
    old = _old_way(plugins, _spec(wan_dir)).eval()
    calls = _count_real_inits(monkeypatch)
    rng = torch.get_rng_state()
    new = build_model(plugins, _spec(wan_dir), load_pretrained=True).eval()
    assert calls == [], f"random initialisation ran on real tensors during a pretrained load: {sorted(set(calls))}"
    assert torch.equal(torch.get_rng_state(), rng), "a pretrained load drew random numbers (random init ran)"
    assert not any(t.is_meta for t in [*new.parameters(), *new.buffers()])
    ours, theirs = new.transformer.state_dict(), old.transformer.state_dict()
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert ours[k].dtype == theirs[k].dtype and torch.equal(ours[k], theirs[k]), k
    # rope's tables are no checkpoint's: computed on the CPU as the random-init model computes them
    for (k, a), (_, b) in zip(new.transformer.named_buffers(), old.transformer.named_buffers()):
        assert a.device.type == "cpu" and a.dtype == b.dtype and torch.equal(a, b), k
    assert new.pretrained_info == old.pretrained_info
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 3, 4, 8, 6, generator=g), torch.rand(2, 3, generator=g) * 1000
    ctx = torch.randn(2, 5, 16, generator=g)
    assert torch.equal(new(x, t, encoder_hidden_states=ctx), old(x, t, encoder_hidden_states=ctx))
    # parameters stay trainable (assign keeps the model's requires_grad) and own their memory: no weight is a
    # view of a memory-mapped shard (safetensors maps files copy-on-write; a shard rewritten later would show)
    assert all(p.requires_grad for p in new.parameters())
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert str(wan_dir) not in maps.read_text(), "weights still map the shard files"
    p = next(new.transformer.parameters())
    p.add_(1.0)  # a fresh tensor, not a view of a memory-mapped shard
    assert torch.equal(build_model(plugins, _spec(wan_dir), load_pretrained=True).transformer.state_dict()[
        next(iter(ours))], theirs[next(iter(ours))])


def test_a_checkpoints_build_still_gets_real_random_weights(wan_dir, monkeypatch):
    """Resuming or sampling a checkpoint builds with ``pretrained`` set but never reads it: real weights."""
    calls = _count_real_inits(monkeypatch)
    m = build_model(load_plugins(), _spec(wan_dir), load_pretrained=False)
    assert calls and not any(t.is_meta for t in m.parameters())
    assert not hasattr(m, "pretrained_info")


def test_a_failed_load_is_the_same_one_line_error(wan_dir, tmp_path):
    """Checks before any weight is copied still run, with their one-line message (nothing half-built escapes)."""
    import shutil

    from fvdm.core.pretrained import PretrainedError

    broken = tmp_path / "broken"
    shutil.copytree(wan_dir, broken)
    shard = sorted((broken / "transformer").glob("*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(PretrainedError, match="shards that are absent") as info:
        build_model(load_plugins(), _spec(broken), load_pretrained=True)
    assert "\n" not in str(info.value) and shard.name in str(info.value)


@torch.no_grad()
def test_skyreels_loads_empty_too(tmp_path):
    from diffusers import SkyReelsV2Transformer3DModel

    from fvdm.plugins.backbones.skyreels_v2 import SKYREELS_V2_DF_SIZES
    from fvdm.plugins.backbones.wan_common import diffusers_kwargs

    row, fps = SKYREELS_V2_DF_SIZES["tiny"]
    torch.manual_seed(0)
    SkyReelsV2Transformer3DModel(**diffusers_kwargs(row, 4), inject_sample_info=fps).save_pretrained(
        tmp_path / "transformer", max_shard_size="20KB")
    plugins = load_plugins()
    spec = {"name": "skyreels_v2_df", "size": "tiny", "in_channels": 4, "pretrained": str(tmp_path)}
    rng = torch.get_rng_state()
    new = build_model(plugins, spec, load_pretrained=True).eval()
    assert torch.equal(torch.get_rng_state(), rng)
    old = _old_way(plugins, spec).eval()
    g = torch.Generator().manual_seed(2)
    x, t = torch.randn(1, 2, 4, 4, 4, generator=g), torch.rand(1, 2, generator=g) * 1000
    assert torch.equal(new(x, t), old(x, t))
