"""Oracle parity with peer implementations (oracle venv only: `make test-oracles`).

pytorch-fid ships the FID InceptionV3 and cd-fvd the I3D port; both get the same
random weights as ours and must give the same features. No weights are downloaded:
pytorch-fid's loader is pointed at our random state dict.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.oracle


def _random_state_dict(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    from fvdm.plugins.evaluators.i3d import init_random_

    return {k: v.clone() for k, v in init_random_(model, seed=seed).state_dict().items()}


def test_inception_matches_pytorch_fid(monkeypatch):
    pytest.importorskip("torchvision")
    import pytorch_fid.inception as pfi

    from fvdm.plugins.evaluators.inception import FIDInceptionV3, InceptionV3FIDExtractor

    ours = FIDInceptionV3()
    sd = _random_state_dict(ours, seed=3)
    monkeypatch.setattr(pfi, "load_state_dict_from_url", lambda *a, **k: dict(sd))  # no download: same weights
    ref = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    ext = InceptionV3FIDExtractor(InceptionV3FIDExtractor.Config(resize="torch"), model=ours, weights_sha256="random")
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 64, 48), generator=g, dtype=torch.uint8)
    with torch.no_grad():
        want = ref(images.float() / 255.0)[0].squeeze(-1).squeeze(-1)
    got = ext(images)
    assert got.shape == want.shape == (3, 2048)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


def test_i3d_matches_cd_fvd_port():
    sys.modules.setdefault("requests", types.ModuleType("requests"))  # cd-fvd imports it for downloads only
    from cdfvd.third_party.i3d import pytorch_i3d
    from cdfvd.third_party.i3d.utils import preprocess_i3d

    from fvdm.plugins.evaluators.i3d import I3DExtractor, InceptionI3d

    ours = InceptionI3d()
    sd = _random_state_dict(ours, seed=5)
    ref = pytorch_i3d.InceptionI3d(400, in_channels=3)
    ref.load_state_dict(sd)  # strict: same names and shapes
    ref.eval()
    ext = I3DExtractor(I3DExtractor.Config(), model=ours, weights_sha256="random")
    g = torch.Generator().manual_seed(1)
    videos = torch.randint(0, 256, (2, 10, 3, 40, 32), generator=g, dtype=torch.uint8)  # (B, F, C, H, W)
    with torch.no_grad():
        want = ref(preprocess_i3d(videos.permute(0, 1, 3, 4, 2).numpy()))  # cd-fvd takes (B, T, H, W, C) uint8
    got = ext(videos)
    assert got.shape == want.shape == (2, 400)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


def test_frechet_matches_pytorch_fid():
    from pytorch_fid.fid_score import calculate_frechet_distance

    from fvdm.plugins.evaluators.frechet import frechet_distance

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((300, 64)), rng.standard_normal((300, 64)) * 1.3 + 0.2
    m1, s1, m2, s2 = x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(calculate_frechet_distance(m1, s1, m2, s2), rel=1e-9)


def test_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    from fvdm.plugins.evaluators.recon import ssim_per_frame

    g = torch.Generator().manual_seed(2)
    x = torch.rand(1, 2, 3, 32, 24, generator=g, dtype=torch.float64)
    y = (x + 0.2 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    ours = ssim_per_frame(x, y)
    for f in range(2):
        want = metrics.structural_similarity(x[0, f].numpy(), y[0, f].numpy(), data_range=1.0, channel_axis=0,
                                             gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert ours[0, f].item() == pytest.approx(want, rel=1e-9)
