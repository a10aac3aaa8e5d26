"""Extractor architectures vs the public key lists, weights handling, inputs, stats cache, recon metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fvdm.plugins.evaluators.common import load_state_dict_checked, read_reference_keys, to_uint8_video
from fvdm.plugins.evaluators.frechet import FeatureStats
from fvdm.plugins.evaluators.i3d import I3DExtractor, InceptionI3d, init_random_
from fvdm.plugins.evaluators.inception import FIDInceptionV3, InceptionV3FIDExtractor, resize_tf1
from fvdm.plugins.evaluators.weights import WeightsError, resolve_weights, sha256_file

# Key names and shapes of the public checkpoints' state dicts, kept in the repository next to the code.
REF = Path(__file__).resolve().parents[1] / "fvdm" / "plugins" / "evaluators" / "reference"
I3D_KEYS = REF / "i3d_piergiaj_state_dict_keys.tsv"
INCEPTION_KEYS = REF / "inception_v3_fid_state_dict_keys.tsv"


@pytest.mark.parametrize("path,sha256,keys,counters", [
    # the public I3D (Kinetics-400) port: 287 checkpoint keys + 57 BN counters
    (I3D_KEYS, "b60e841b32a9dad8e35f3b20399ba4343502bc01d1635b91068ddac989fe0336", 344, 57),
    # the FID InceptionV3: 472 weights-file keys + 94 BN counters
    (INCEPTION_KEYS, "639a123e06c500dc3c251f3807b8e03b89b76aa896286208cb19b9c38e2d321b", 566, 94),
])
def test_reference_key_lists_are_the_pinned_ones(path, sha256, keys, counters):
    """The architectures below are checked against these lists, so the lists themselves are pinned (an edit
    must change this test too); they are read from the repository, so this runs, and can fail, everywhere."""
    assert sha256_file(path) == sha256
    listed = read_reference_keys(path)
    assert len(listed) == keys and sum(k.endswith("num_batches_tracked") for k, _ in listed) == counters


def _reference_state_dict(path: Path, *, counters: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    sd = {}
    for key, shape in read_reference_keys(path):
        if key.endswith("num_batches_tracked"):
            if counters:
                sd[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[key] = torch.randn(shape, generator=g) * 0.05
    return sd


@pytest.mark.parametrize("counters", [True, False])
@pytest.mark.parametrize("net,path,n_keys", [(InceptionI3d, I3D_KEYS, 344), (FIDInceptionV3, INCEPTION_KEYS, 566)])
def test_reference_state_dict_loads_strictly(net, path, n_keys, counters):
    sd = _reference_state_dict(path, counters=counters)
    assert len(sd) == (n_keys if counters else n_keys - sum(k.endswith("num_batches_tracked") for k, _ in
                                                              read_reference_keys(path)))
    model = net()
    assert len(model.state_dict()) == n_keys
    load_state_dict_checked(model, sd, "test")
    for k, v in sd.items():
        assert torch.equal(model.state_dict()[k], v)


@pytest.mark.parametrize("net,path", [(InceptionI3d, I3D_KEYS), (FIDInceptionV3, INCEPTION_KEYS)])
def test_wrong_keys_or_shapes_fail_clearly(net, path):
    sd = _reference_state_dict(path)
    first = next(k for k in sd if k.endswith("conv3d.weight") or k.endswith("conv.weight"))
    bad = dict(sd)
    bad["extra.weight"] = bad.pop(first)
    with pytest.raises(ValueError, match=r"missing key.*" + first.replace(".", r"\.") + r".*unexpected key.*extra\.weight"):
        load_state_dict_checked(net(), bad, "test")
    bad = dict(sd)
    bad[first] = bad[first][:1]
    with pytest.raises(ValueError, match=r"shape mismatch.*" + first.replace(".", r"\.")):
        load_state_dict_checked(net(), bad, "test")
    wrapped = {"state_dict": {"module." + k: v for k, v in sd.items()}}  # common checkpoint wrappers
    load_state_dict_checked(net(), wrapped, "test")


def test_i3d_requires_nine_frames_and_gives_400d():
    ext = I3DExtractor(I3DExtractor.Config(), model=init_random_(InceptionI3d()), weights_sha256="random")
    with pytest.raises(ValueError, match="at least 9 frames"):
        ext(torch.zeros(1, 8, 3, 32, 32, dtype=torch.uint8))
    feats = ext(torch.randint(0, 256, (1, 9, 1, 24, 24), dtype=torch.uint8))  # grey repeated to RGB
    assert feats.shape == (1, 400) and torch.isfinite(feats).all()
    assert ext.extractor_id.startswith("i3d_k400:state_dict")


class _ScriptedDetector(torch.nn.Module):
    """Stands in for StyleGAN-V's i3d_torchscript.pt: same call signature, records the input."""

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        assert rescale and resize and return_features
        assert x.dtype == torch.uint8
        b, c, t, h, w = x.shape
        f = x.float().mean(dim=(3, 4)).reshape(b, c * t)
        return torch.cat([f, torch.zeros(b, 400 - c * t)], dim=1)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script: the published detector is TorchScript
def test_i3d_loads_torchscript_detector(tmp_path, monkeypatch):
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(_ScriptedDetector()).save(str(path))
    monkeypatch.setenv("FVDM_WEIGHTS_DIR", str(tmp_path))
    ext = I3DExtractor(I3DExtractor.Config())
    assert ext.format == "torchscript" and ext.weights_sha256 == sha256_file(path)
    v = torch.arange(10, dtype=torch.uint8).reshape(1, 10, 1, 1, 1).expand(2, 10, 3, 4, 4).contiguous()
    feats = ext(v)
    assert feats.shape == (2, 400)
    # (B, C, T) order: channel 0 holds frames 0..9
    assert torch.equal(feats[0, :10], torch.arange(10, dtype=torch.float32))


def test_i3d_state_dict_from_weights_dir(tmp_path, monkeypatch):
    model = init_random_(InceptionI3d(), seed=1)
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "i3d_pretrained_400.pt")
    monkeypatch.setenv("FVDM_WEIGHTS_DIR", str(tmp_path))
    ext = I3DExtractor(I3DExtractor.Config(format="state_dict"))
    assert ext.format == "state_dict" and len(ext.weights_sha256) == 64


def test_missing_weights_error_names_file_hash_and_source(tmp_path, monkeypatch):
    monkeypatch.setenv("FVDM_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsError) as exc:
        InceptionV3FIDExtractor(InceptionV3FIDExtractor.Config())
    msg = str(exc.value)
    assert "pt_inception-2015-12-05-6726825d.pth" in msg and "6726825d" in msg
    assert "github.com/mseitzer/pytorch-fid/releases" in msg and "never downloads" in msg
    with pytest.raises(WeightsError) as exc:
        I3DExtractor(I3DExtractor.Config())
    assert "i3d_torchscript.pt" in str(exc.value) and "dropbox.com" in str(exc.value)
    assert "i3d_pretrained_400.pt" in str(exc.value)
    with pytest.raises(WeightsError, match="not found"):
        resolve_weights("pt_inception", tmp_path / "nope.pth")


def test_wrong_hash_is_refused(tmp_path):
    p = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    p.write_bytes(b"not the real weights")
    with pytest.raises(WeightsError, match="expected 6726825d"):
        resolve_weights("pt_inception", p)
    sha = sha256_file(p)
    assert resolve_weights("somefile.pt", p, sha256=sha[:12]) == (p, sha)


def test_extractors_registered_and_unbuildable_without_weights(tmp_path, monkeypatch):
    from fvdm.core.plugins import load_plugins

    monkeypatch.setenv("FVDM_WEIGHTS_DIR", str(tmp_path))
    P = load_plugins(entry_points=False)
    assert {"i3d", "inception_v3_fid", "digits"} <= set(P["feature_extractors"].names())
    assert {"fvd2048_16f", "fvd2048_128f", "fvd2048_128f_subsample8f", "fvd2048_16f_latte", "fid50k_full",
            "fid_pytorch", "psnr", "ssim"} <= set(P["evaluators"].names())
    fvd = P["evaluators"].build("fvd2048_16f", plugins=P)
    with pytest.raises(WeightsError, match="i3d_torchscript.pt"):
        fvd.evaluate(torch.zeros(2, 16, 3, 8, 8), torch.zeros(2, 16, 3, 8, 8))


def test_tf1_resize_closed_form_and_torch_preset():
    x = torch.tensor([[[[0.0, 2.0]]]])
    # TF1 legacy bilinear (no half-pixel centres): src = dst * in/out, right edge clamps
    assert torch.equal(resize_tf1(x, (1, 4)), torch.tensor([[[[0.0, 1.0, 2.0, 2.0]]]]))
    y = torch.arange(12.0).reshape(1, 1, 3, 4)
    down = resize_tf1(y, (1, 2))  # rows 0, cols 0 and 2
    assert torch.equal(down, torch.tensor([[[[0.0, 2.0]]]]))
    ext = InceptionV3FIDExtractor(InceptionV3FIDExtractor.Config(resize="torch"), model=torch.nn.Identity())
    img = torch.randint(0, 256, (2, 3, 20, 30), dtype=torch.uint8)
    ref = 2 * F.interpolate(img.float() / 255, size=(299, 299), mode="bilinear", align_corners=False) - 1
    torch.testing.assert_close(ext.preprocess(img), ref)
    tf = InceptionV3FIDExtractor(InceptionV3FIDExtractor.Config(), model=torch.nn.Identity())
    torch.testing.assert_close(tf.preprocess(img), (resize_tf1(img.float(), (299, 299)) - 128) / 128)


def test_inception_extractor_frames_of_videos():
    ext = InceptionV3FIDExtractor(InceptionV3FIDExtractor.Config(), model=init_random_(FIDInceptionV3()),
                                  weights_sha256="random")
    videos = torch.randint(0, 256, (1, 2, 1, 40, 40), dtype=torch.uint8)
    feats = ext(videos)
    assert feats.shape == (2, 2048)
    torch.testing.assert_close(feats[1:], ext(videos[0, 1:].repeat(1, 3, 1, 1)))


def test_pixel_range_validation():
    assert torch.equal(to_uint8_video(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([0, 128, 255], dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"observed range \[-1, 1\]"):
        to_uint8_video(torch.tensor([-1.0, 1.0]))
    with pytest.raises(ValueError, match=r"observed range \[0, 255\]"):
        to_uint8_video(torch.tensor([0.0, 255.0]))
    with pytest.raises(TypeError, match="uint8 or float"):
        to_uint8_video(torch.tensor([1, 2]))
    assert to_uint8_video(torch.tensor([-1.0, 1.0]), value_range="-1_1").tolist() == [0, 255]


# -- stats cache --------------------------------------------------------------------------
def test_stats_cache_roundtrip_and_refusal(tmp_path):
    from fvdm.plugins.evaluators.stats_cache import StatsMismatchError, load_stats, save_stats

    st = FeatureStats.from_features(torch.randn(30, 5, dtype=torch.float64), ddof=0, extractor_id="e",
                                    weights_sha256="a" * 64, protocol={"num_frames": 16}, dataset_hash="h1")
    p = save_stats(tmp_path / "real.npz", st)
    back = load_stats(p, expect={"extractor_id": "e", "weights_sha256": "a" * 64, "protocol": {"num_frames": 16},
                                 "dataset_hash": "h1", "ddof": 0})
    assert torch.equal(back.mu, st.mu) and torch.equal(back.sigma, st.sigma) and back.n == 30
    assert torch.equal(back.m2, st.m2)
    with pytest.raises(StatsMismatchError, match=r"protocol differs \(num_frames: cached 16 vs 128\)"):
        load_stats(p, expect={"protocol": {"num_frames": 128}})
    with pytest.raises(StatsMismatchError, match="dataset_hash"):
        load_stats(p, expect={"dataset_hash": "h2"})
    with pytest.raises(StatsMismatchError, match="weights_sha256"):
        load_stats(p, expect={"weights_sha256": "b" * 64})
    with pytest.raises(StatsMismatchError, match="extractor_id"):
        load_stats(p, expect={"extractor_id": "other"})


def test_import_pytorch_fid_stats(tmp_path):
    from fvdm.plugins.evaluators.stats_cache import import_pytorch_fid, load_stats

    x = np.random.default_rng(0).standard_normal((40, 6))
    np.savez(tmp_path / "fid_stats.npz", mu=x.mean(0), sigma=np.cov(x, rowvar=False))
    st = import_pytorch_fid(tmp_path / "fid_stats.npz")
    assert st.ddof == 1 and st.extractor_id == "inception_v3_fid:pool3:torch-bilinear,2x-1"
    assert load_stats(tmp_path / "fid_stats.npz").weights_sha256 == "6726825d"
    np.savez(tmp_path / "f32.npz", mu=x.mean(0).astype(np.float32), sigma=np.cov(x, rowvar=False).astype(np.float32))
    with pytest.raises(TypeError, match="float64"):
        load_stats(tmp_path / "f32.npz")


# -- reconstruction metrics -----------------------------------------------------------------
def test_psnr_closed_form():
    from fvdm.plugins.evaluators.recon import ReconMetric, psnr_per_frame

    a = torch.full((1, 2, 1, 16, 16), 0.5, dtype=torch.float64)
    b = a.clone()
    b[:, 0] += 0.1
    p = psnr_per_frame(b, a)
    assert p[0, 0].item() == pytest.approx(20.0, abs=1e-9) and p[0, 1].item() == pytest.approx(100.0)  # capped
    copy = ReconMetric(ReconMetric.Config(metric="psnr")).evaluate(a, a)  # copy-the-context: the cap, not 1e9
    assert copy["value"] == pytest.approx(100.0) and copy["protocol"]["max_db"] == 100.0
    u8 = (a * 255).round().to(torch.uint8)
    res = ReconMetric(ReconMetric.Config(metric="psnr")).evaluate(u8, u8 + 1, mask=torch.tensor([[True, False]]))
    assert res["value"] == pytest.approx(20 * np.log10(255.0)) and res["n_frames"] == 1
    assert np.isnan(res["per_frame"][1])


def test_ssim_closed_forms_and_independent_filter():
    from scipy.ndimage import gaussian_filter

    from fvdm.plugins.evaluators.recon import ssim_per_frame

    # constant frames: only the luminance term remains
    c1, c2 = 0.3, 0.6
    a = torch.full((1, 1, 1, 16, 16), c1, dtype=torch.float64)
    b = torch.full((1, 1, 1, 16, 16), c2, dtype=torch.float64)
    k1 = 0.01 ** 2
    assert ssim_per_frame(a, b).item() == pytest.approx((2 * c1 * c2 + k1) / (c1 ** 2 + c2 ** 2 + k1), rel=1e-12)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 3, 24, 20, generator=g, dtype=torch.float64)
    y = (x + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    assert torch.allclose(ssim_per_frame(x, x), torch.ones(2, 3, dtype=torch.float64))
    # independent formulation: scipy gaussian_filter (truncate 3.5 -> 11 taps) over the image, crop 5 px
    ours = ssim_per_frame(x, y)

    def ref(xi: np.ndarray, yi: np.ndarray) -> float:
        f = lambda z: gaussian_filter(z, 1.5, truncate=3.5)  # noqa: E731
        mx, my = f(xi), f(yi)
        vx, vy, cxy = f(xi * xi) - mx ** 2, f(yi * yi) - my ** 2, f(xi * yi) - mx * my
        s = ((2 * mx * my + 1e-4) * (2 * cxy + 9e-4)) / ((mx ** 2 + my ** 2 + 1e-4) * (vx + vy + 9e-4))
        return float(s[5:-5, 5:-5].mean())

    for bi in range(2):
        for fi in range(3):
            want = np.mean([ref(x[bi, fi, c].numpy(), y[bi, fi, c].numpy()) for c in range(3)])
            assert ours[bi, fi].item() == pytest.approx(want, rel=1e-10)


def test_stats_inputs_need_no_extractor_and_refuse_ddof_change(tmp_path):
    from fvdm.plugins.evaluators.fid import FID, FIDPytorchConfig

    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((50, 2048)), rng.standard_normal((40, 2048)) + 0.1
    np.savez(tmp_path / "real.npz", mu=x.mean(0), sigma=np.cov(x, rowvar=False))
    np.savez(tmp_path / "fake.npz", mu=y.mean(0), sigma=np.cov(y, rowvar=False))
    res = FID(FIDPytorchConfig()).evaluate(str(tmp_path / "fake.npz"), str(tmp_path / "real.npz"))
    assert res["ddof"] == 1 and res["extractor_id"].startswith("inception_v3_fid") and res["value"] > 0
    with pytest.raises(ValueError, match="unknown sample count"):
        FID(FID.Config()).evaluate(str(tmp_path / "fake.npz"), str(tmp_path / "real.npz"))  # fid50k_full wants ddof 0
