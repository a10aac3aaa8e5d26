"""Autoencoders: identity, and the SD VAE plugin against diffusers' AutoencoderKL called directly."""

from __future__ import annotations

import pytest
import torch

from fvdm.core.errors import PluginUnavailableError
from fvdm.core.plugins import load_plugins


@pytest.fixture(scope="module")
def plugins():
    return load_plugins(entry_points=False)


def test_identity(plugins):
    ae = plugins["autoencoders"].build("identity")
    x = torch.randn(2, 3, 1, 8, 8)
    assert ae.encode(x) is x and ae.decode(x) is x
    assert ae.downsample == 1 and ae.latent_shape(1, 8) == (1, 8)
    ae3 = plugins["autoencoders"].build({"name": "identity", "channels": 3})
    assert ae3.latent_channels == 3
    with pytest.raises(ValueError, match="channels"):
        ae3.encode(x)
    with pytest.raises(ValueError, match="B, F, C, H, W"):
        ae.encode(x[0])


@pytest.fixture(scope="module")
def tiny_vae_dir(tmp_path_factory):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8, sample_size=16,
    )
    path = tmp_path_factory.mktemp("vae") / "tiny-vae"
    vae.save_pretrained(path)
    return path, vae.eval()


def test_sd_vae_matches_diffusers(plugins, tiny_vae_dir):
    path, ref = tiny_vae_dir
    ae = plugins["autoencoders"].build({"name": "sd_vae", "pretrained_path": str(path), "chunk_size": 3})
    assert (ae.latent_channels, ae.downsample, ae.scaling_factor) == (4, 2, 0.18215)
    assert ae.latent_shape(3, 16) == (4, 8)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 4, 3, 16, 16, generator=g) * 2 - 1  # (B, F, C, H, W), 8 frames in 3 chunks
    z = ae.encode(x)
    assert z.shape == (2, 4, 4, 8, 8)
    with torch.no_grad():
        want = ref.encode(x.reshape(8, 3, 16, 16)).latent_dist.mean * 0.18215
        torch.testing.assert_close(z.reshape(8, 4, 8, 8), want, atol=1e-5, rtol=1e-5)
        dec = ae.decode(z)
        assert dec.shape == x.shape
        want_dec = ref.decode(want / 0.18215).sample
        torch.testing.assert_close(dec.reshape(8, 3, 16, 16), want_dec, atol=1e-5, rtol=1e-5)
    # frame order: frame f of clip b is row b*F + f
    torch.testing.assert_close(ae.encode(x[1:2, 2:3]), z[1:2, 2:3], atol=1e-5, rtol=1e-5)
    # posterior sampling with a generator is reproducible and differs from the mean
    ae_s = plugins["autoencoders"].build({"name": "sd_vae", "pretrained_path": str(path), "sample_posterior": True})
    s1 = ae_s.encode(x, generator=torch.Generator().manual_seed(3))
    s2 = ae_s.encode(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(s1, s2) and (s1 - z).abs().max() > 1e-4
    # frozen: no trainable params, stays in eval mode
    assert not any(p.requires_grad for p in ae.parameters())
    assert not ae.train().training


def test_sd_vae_scaling_from_config(plugins, tiny_vae_dir):
    path, _ = tiny_vae_dir
    ae = plugins["autoencoders"].build({"name": "sd_vae", "pretrained_path": str(path), "scaling_factor": None})
    assert ae.scaling_factor == pytest.approx(0.18215)  # diffusers' AutoencoderKL default config value


def test_sd_vae_missing_path_names_path_and_hub_copy(plugins, tmp_path):
    pytest.importorskip("diffusers")
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError) as err:
        plugins["autoencoders"].build({"name": "sd_vae", "pretrained_path": str(missing)})
    assert str(missing) in str(err.value) and "stabilityai/sd-vae-ft-ema" in str(err.value)
    with pytest.raises(FileNotFoundError, match="no pretrained_path"):
        plugins["autoencoders"].build("sd_vae")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        plugins["autoencoders"].build({"name": "sd_vae", "pretrained_path": str(tmp_path / "empty")})


def test_sd_vae_unavailable_without_diffusers(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name == "diffusers" or name.startswith("diffusers."):
            raise ImportError("No module named 'diffusers'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    P = load_plugins(entry_points=False)
    entry = P["autoencoders"].get("sd_vae")
    av = entry.availability()
    assert not av.ok and "diffusers" in av.reason and entry.extra == "latent"
    with pytest.raises(PluginUnavailableError, match=r"fvdm\[latent\]"):
        P["autoencoders"].build({"name": "sd_vae", "pretrained_path": "/x"})
