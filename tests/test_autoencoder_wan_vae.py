"""``wan_vae`` against diffusers' ``AutoencoderKLWan`` called directly; causal frame mapping; loud bad input."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from einops import rearrange
from pydantic import ValidationError

pytest.importorskip("diffusers")

from fvdm.core.plugins import load_plugins  # noqa: E402
from fvdm.core.temporal import latent_positions  # noqa: E402
from tests.vae_fixtures import make_wan_vae_dir  # noqa: E402

WAN21_COPY = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
WAN22_COPY = "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
RES = {"wan2.1": 16, "wan2.2": 32}  # two latent pixels per side at 8x and 16x


@pytest.fixture(scope="module")
def plugins():
    return load_plugins(entry_points=False)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("wan_vae")
    return {"wan2.1": make_wan_vae_dir(root / "wan21", z_dim=16, seed=1),
            "wan2.2": make_wan_vae_dir(root / "wan22", z_dim=48, seed=2, layout="wan2.2"),
            "z4": make_wan_vae_dir(root / "z4")}


def _build(plugins, **spec):
    return plugins["autoencoders"].build({"name": "wan_vae", **spec})


def _clip(b: int, frames: int, res: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, frames, 3, res, res, generator=g) * 2 - 1  # (B, F, 3, H, W) in [-1, 1]


def _message(excinfo) -> str:
    exc = excinfo.value
    if isinstance(exc, ValidationError):  # a config error: the CLI prints each as one `field: problem` line
        (error,) = exc.errors()
        assert error["loc"] == ("path",)
        exc = error["msg"]
    msg = str(exc)
    assert "\n" not in msg, f"not one line: {msg!r}"
    return msg


@pytest.mark.parametrize("variant", ["wan2.1", "wan2.2"])
@torch.no_grad()
def test_encode_and_decode_equal_diffusers_called_directly(plugins, dirs, variant):
    from diffusers import AutoencoderKLWan

    ae = _build(plugins, path=str(dirs[variant]), variant=variant, chunk=2)
    ref = AutoencoderKLWan.from_pretrained(str(dirs[variant]), subfolder="vae", local_files_only=True).eval()
    z_dim, res = ref.config.z_dim, RES[variant]
    mean = torch.tensor(ref.config.latents_mean).view(1, z_dim, 1, 1, 1)
    std = torch.tensor(ref.config.latents_std).view(1, z_dim, 1, 1, 1)
    assert (ae.latent_channels, ae.downsample, ae.latent_shape(3, res)) == (z_dim, res // 2, (z_dim, 2))
    x = _clip(3, 9, res)
    z = ae.encode(x)
    assert z.shape == (3, 3, z_dim, 2, 2)
    want = (ref.encode(rearrange(x, "b f c h w -> b c f h w")).latent_dist.mode() - mean) / std
    enc_err = (z - rearrange(want, "b c f h w -> b f c h w")).abs().max().item()
    video = ae.decode(z)
    assert video.shape == x.shape
    want = ref.decode(rearrange(z, "b f c h w -> b c f h w") * std + mean).sample
    dec_err = (video - rearrange(want, "b c f h w -> b f c h w")).abs().max().item()
    print(f"{variant}: encode max abs err {enc_err:.2e}, decode {dec_err:.2e}")
    assert enc_err <= 1e-5 and dec_err <= 1e-5
    assert video.abs().max() <= 1  # the VAE's own clamp


@torch.no_grad()
def test_frames_map_one_plus_four_k_and_the_first_frame_is_encoded_alone(plugins, dirs):
    ae = _build(plugins, path=str(dirs["wan2.1"]))
    x = _clip(1, 17, 16)
    z = ae.encode(x)
    first = ae.encode(x[:, :1])
    assert z.shape[1] == 5 and first.shape[1] == 1
    assert ae.decode(z).shape[1] == 17 and ae.decode(first).shape[1] == 1
    # causality: the first frame alone gives the first latent of the whole clip (image-to-video rests on it)
    assert (first[:, 0] - z[:, 0]).abs().max() <= 1e-5
    with pytest.raises(ValueError) as err:
        ae.encode(x[:, :16])
    assert "13 or 17" in _message(err)


@torch.no_grad()
def test_chunking_does_not_change_the_latents(plugins, dirs):
    x = _clip(3, 5, 16, seed=3)
    ae = _build(plugins, path=str(dirs["wan2.1"]), chunk=1)
    one = ae.encode(x)
    three = _build(plugins, path=str(dirs["wan2.1"]), chunk=3).encode(x)
    # the causal feature cache is reset on every encode call: a clip encoded after others is bit-identical to
    # the clip encoded alone (same batch size, same kernels)
    assert torch.equal(one[2:], ae.encode(x[2:]))
    # clips never mix inside a call; a batch of 3 only changes the convolutions' summation order (oneDNN
    # blocks by batch size), hence float32 rounding, not bit equality
    assert (one - three).abs().max() <= 1e-6


@pytest.mark.parametrize("case", ["no_path", "missing_dir", "no_config", "no_weights", "other_class", "z_dim",
                                  "wan2.2_for_wan2.1", "wan2.1_for_wan2.2", "tiny_with_path"])
def test_bad_directories_are_one_line_errors(plugins, dirs, tmp_path, case):
    copy = tmp_path / "copy"
    shutil.copytree(dirs["wan2.1"], copy)
    config = copy / "vae" / "config.json"
    spec, error, needles = {"path": str(copy)}, ValueError, [str(config), WAN21_COPY]
    if case == "no_path":
        spec, error, needles = {}, ValidationError, ["wan_vae variant wan2.1 needs path",
                                                     f"huggingface-cli download {WAN21_COPY}"]
    elif case == "missing_dir":
        spec["path"] = str(tmp_path / "nowhere")
        error, needles = FileNotFoundError, [str(tmp_path / "nowhere"), f"huggingface-cli download {WAN21_COPY}"]
    elif case == "no_config":
        config.unlink()
        error, needles = FileNotFoundError, [str(config), f"huggingface-cli download {WAN21_COPY}"]
    elif case == "no_weights":
        for f in (copy / "vae").glob("*.safetensors"):
            f.unlink()
        error, needles = FileNotFoundError, [str(copy / "vae"), f"huggingface-cli download {WAN21_COPY}"]
    elif case == "other_class":
        config.write_text(json.dumps({**json.loads(config.read_text()), "_class_name": "AutoencoderKL"}))
        needles.append("AutoencoderKL'")
    elif case == "z_dim":
        spec["path"] = str(dirs["z4"])
        needles = [str(dirs["z4"] / "vae" / "config.json"), "z_dim=4 (want 16)", WAN21_COPY]
    elif case == "wan2.2_for_wan2.1":
        spec["path"] = str(dirs["wan2.2"])
        needles = [str(dirs["wan2.2"] / "vae" / "config.json"), "z_dim=48 (want 16)", "is_residual", WAN21_COPY]
    elif case == "wan2.1_for_wan2.2":
        spec["variant"] = "wan2.2"
        needles = [str(config), "z_dim=16 (want 48)", "patch_size=None (want 2)", WAN22_COPY]
    elif case == "tiny_with_path":
        spec["variant"] = "tiny"
        error, needles = ValidationError, ["takes no path", str(copy)]
    with pytest.raises(error) as err:
        _build(plugins, **spec)
    msg = _message(err)
    assert all(n in msg for n in needles), msg


def test_registered_tiny_declares_a_causal_factor_4_and_leaves_the_rng_alone():
    state = torch.random.get_rng_state()
    entry = load_plugins()["autoencoders"]
    tiny = entry.build({"name": "wan_vae", "variant": "tiny"})
    assert torch.equal(torch.random.get_rng_state(), state)  # built under a forked RNG
    assert entry.get("wan_vae").extra == "latent"
    assert (tiny.temporal_downsample, tiny.causal, tiny.latent_channels, tiny.downsample) == (4, True, 4, 8)
    assert latent_positions(tiny, [0], 17) == [0] and latent_positions(tiny, range(5), 17) == [0, 1]
    again = entry.build({"name": "wan_vae", "variant": "tiny"})
    other = entry.build({"name": "wan_vae", "variant": "tiny", "seed": 1})
    w = "vae.encoder.conv_in.weight"
    assert torch.equal(tiny.state_dict()[w], again.state_dict()[w])
    assert not torch.equal(tiny.state_dict()[w], other.state_dict()[w])
    # frozen: nothing trains and it stays in eval mode inside a training model
    assert not any(p.requires_grad for p in tiny.parameters()) and not tiny.train().training
    assert tiny.latent_shape(3, 64) == (4, 8)
    for c, r, needle in ((3, 60, "multiple of 8"), (1, 64, "RGB")):
        with pytest.raises(ValueError) as err:
            tiny.latent_shape(c, r)
        assert needle in _message(err)


@torch.no_grad()
def test_bfloat16_returns_the_input_dtype_near_float32():
    P = load_plugins(entry_points=False)
    x = _clip(1, 5, 16, seed=4)
    z32 = _build(P, variant="tiny").encode(x)
    z16 = _build(P, variant="tiny", dtype="bfloat16").encode(x)
    assert z16.dtype == torch.float32 and z16.shape == z32.shape
    assert (z16 - z32).abs().max() <= 0.05 * z32.abs().max()


@pytest.mark.parametrize("case", ["bad_json", "vae_folder_itself"])
def test_the_directory_is_read_as_the_wan_backbone_reads_its_own(plugins, dirs, tmp_path, case):
    """Through fvdm.core.pretrained.read_config: the same one-line errors for a broken config.json or a path
    that names the vae/ folder itself instead of the directory holding it."""
    from fvdm.core.pretrained import PretrainedError

    copy = tmp_path / "copy"
    shutil.copytree(dirs["wan2.1"], copy)
    if case == "bad_json":
        (copy / "vae" / "config.json").write_text("{not json")
        spec, needles = {"path": str(copy)}, [str(copy / "vae" / "config.json"), "not valid JSON",
                                              f"huggingface-cli download {WAN21_COPY}"]
    else:
        spec, needles = {"path": str(copy / "vae")}, ["vae/ folder itself", str(copy)]
    with pytest.raises(PretrainedError) as err:
        _build(plugins, **spec)
    msg = _message(err)
    assert all(n in msg for n in needles), msg
