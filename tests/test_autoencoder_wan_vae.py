"""``wan_vae`` against diffusers' ``AutoencoderKLWan`` called directly, the causal frame mapping, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from einops import rearrange

pytest.importorskip("diffusers")

from fvdm.core.plugins import load_plugins  # noqa: E402
from tests.vae_fixtures import make_wan_vae_dir  # noqa: E402

P = load_plugins()


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    return make_wan_vae_dir(tmp_path_factory.mktemp("wan"))


def _build(path, **kw):
    return P["autoencoders"].build({"name": "wan_vae", "path": str(path), **kw})


def _clip(frames=9, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, frames, 3, 16, 16, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def ae(vae_dir, monkeypatch_module):
    """The tiny weights read as variant wan2.1 (its z_dim patched to the tiny one's): the directory path."""
    from fvdm.plugins.autoencoders import wan_vae

    monkeypatch_module.setitem(wan_vae.VARIANTS, "wan2.1", (4, 8, "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"))
    return _build(vae_dir, chunk=1)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@torch.no_grad()
def test_encode_decode_equal_diffusers_called_directly(ae, vae_dir):
    from diffusers import AutoencoderKLWan

    ref = AutoencoderKLWan.from_pretrained(str(vae_dir), subfolder="vae").eval()
    mean = torch.tensor(ref.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(ref.config.latents_std).view(1, -1, 1, 1, 1)
    x = _clip()
    z = ae.encode(x)
    want = (ref.encode(rearrange(x, "b f c h w -> b c f h w")).latent_dist.mode() - mean) / std
    assert z.shape == (2, 3, 4, 2, 2)
    assert (z - rearrange(want, "b c f h w -> b f c h w")).abs().max() <= 1e-5
    video = ae.decode(z)
    want = ref.decode(rearrange(z, "b f c h w -> b c f h w") * std + mean).sample.clamp(-1, 1)
    assert video.shape == x.shape
    assert (video - rearrange(want, "b c f h w -> b f c h w")).abs().max() <= 1e-5


@torch.no_grad()
def test_frames_map_one_plus_four_k_and_the_first_frame_is_encoded_alone(ae):
    x = _clip(frames=17, b=1)
    z = ae.encode(x)
    assert z.shape[1] == 5 and ae.encode(x[:, :1]).shape[1] == 1
    # causality: the first frame alone gives the first latent of the whole clip (image-to-video rests on it)
    assert (ae.encode(x[:, :1])[:, 0] - z[:, 0]).abs().max() <= 1e-5
    with pytest.raises(ValueError, match=r"use 1 \+ 4k frames \(e.g. 13 or 17\)"):
        ae.encode(x[:, :16])


@torch.no_grad()
def test_chunking_does_not_change_the_latents(vae_dir, ae):
    x = _clip(b=3)
    # one clip per call or three: the causal cache is cleared per call, so only float summation order differs
    assert (ae.encode(x) - _build(vae_dir, chunk=3).encode(x)).abs().max() <= 1e-6


def test_declares_its_temporal_mapping_and_the_tiny_variant_builds(tmp_path):
    from fvdm.core.temporal import latent_positions

    tiny = P["autoencoders"].build({"name": "wan_vae", "variant": "tiny"})
    assert (tiny.temporal_downsample, tiny.causal, tiny.latent_channels) == (4, True, 4)
    assert tiny.latent_shape(3, 32) == (4, 4)
    assert latent_positions(tiny, [0], 17) == [0] and latent_positions(tiny, range(5), 17) == [0, 1]
    with pytest.raises(ValueError, match=r"give whole latents: pixel frames 1\.\.4"):
        latent_positions(tiny, [0, 1], 17)


@pytest.mark.parametrize("case,expect", [
    ("missing", "huggingface-cli download Wan-AI/Wan2.1-T2V-1.3B-Diffusers"),
    ("variant", "variant wan2.2 is AutoencoderKLWan with z_dim 48"),
    ("other_class", "is AutoencoderKL with z_dim"),
    ("no_weights", "the download is partial"),
    ("tiny_with_path", "variant tiny has random weights"),
    ("no_path", "needs path"),
])
def test_bad_directories_are_one_line_errors_naming_the_public_copy(vae_dir, tmp_path, case, expect):
    import shutil

    path = tmp_path / "copy"
    shutil.copytree(vae_dir, path)
    spec = {"name": "wan_vae", "path": str(path)}
    if case == "missing":
        spec["path"] = str(tmp_path / "nowhere")
    elif case == "variant":
        spec["variant"] = "wan2.2"
    elif case == "other_class":
        cfg = json.loads((path / "vae" / "config.json").read_text())
        (path / "vae" / "config.json").write_text(json.dumps({**cfg, "_class_name": "AutoencoderKL"}))
    elif case == "no_weights":
        for f in (path / "vae").glob("*.safetensors"):
            f.unlink()
        spec["variant"] = "wan2.1"
    elif case == "tiny_with_path":
        spec["variant"] = "tiny"
    elif case == "no_path":
        spec = {"name": "wan_vae"}
    with pytest.raises(Exception) as info:
        P["autoencoders"].build(spec)
    assert expect in str(info.value)  # the CLI prints it as one `field: problem` line (tests/test_cli_errors.py)
