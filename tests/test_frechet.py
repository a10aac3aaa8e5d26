"""Fréchet distance core: scipy sqrtm oracle, closed forms, float64 streaming moments."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch

from fvdm.plugins.evaluators.frechet import FeatureStats, frechet_distance, frechet_from_stats
from fvdm.plugins.evaluators.moments import StreamingMoments


def _spd(rng: np.random.Generator, d: int, rank: int | None = None) -> np.ndarray:
    a = rng.standard_normal((d, rank or d)) / math.sqrt(d)
    return a @ a.T + 0.05 * np.eye(d)


@pytest.mark.parametrize("d", [2, 64, 400, 2048])
def test_matches_scipy_sqrtm(d):
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(d)
    s1, s2 = _spd(rng, d), _spd(rng, d)
    m1, m2 = rng.standard_normal(d), rng.standard_normal(d)
    ours = frechet_distance(m1, s1, m2, s2)
    covmean = scipy_linalg.sqrtm(s1 @ s2)
    ref = float(np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))
    assert ours == pytest.approx(ref, rel=1e-9)
    if d <= 400:
        assert frechet_distance(m1, s1, m2, s2, method="cholesky") == pytest.approx(ref, rel=1e-9)
    if d <= 64:  # the package's own scipy path agrees too
        assert frechet_distance(m1, s1, m2, s2, method="sqrtm") == pytest.approx(ref, rel=1e-12)


def test_closed_forms():
    rng = np.random.default_rng(0)
    d = 50
    s = _spd(rng, d)
    m1, m2 = rng.standard_normal(d), rng.standard_normal(d)
    # equal covariances: only the mean term survives
    assert frechet_distance(m1, s, m2, s) == pytest.approx(np.sum((m1 - m2) ** 2), rel=1e-10, abs=1e-9)
    # diagonal covariances: sum (sqrt a - sqrt b)^2
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    fd = frechet_distance(m1, np.diag(a), m2, np.diag(b))
    assert fd == pytest.approx(np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2), rel=1e-12)
    # scaled covariances S2 = c^2 S1: (1 - c)^2 tr(S1)
    c = 1.7
    assert frechet_distance(m1, s, m1, c * c * s) == pytest.approx((1 - c) ** 2 * np.trace(s), rel=1e-10)
    # FD(x, x) = 0 (up to rounding relative to the trace)
    assert abs(frechet_distance(m1, s, m1, s)) < 1e-10 * np.trace(s)


def test_orthogonal_invariance():
    rng = np.random.default_rng(1)
    d = 40
    s1, s2 = _spd(rng, d, rank=10), _spd(rng, d)
    m1, m2 = rng.standard_normal(d), rng.standard_normal(d)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    fd = frechet_distance(m1, s1, m2, s2)
    fd_rot = frechet_distance(q @ m1, q @ s1 @ q.T, q @ m2, q @ s2 @ q.T)
    assert fd_rot == pytest.approx(fd, rel=1e-10)


def test_refuses_float32_and_bad_shapes():
    s = np.eye(3)
    with pytest.raises(TypeError, match="float64"):
        frechet_distance(np.zeros(3, np.float32), s, np.zeros(3), s)
    with pytest.raises(TypeError, match="float64"):
        frechet_distance(torch.zeros(3), torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64),
                         torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        frechet_distance(np.zeros(3), np.eye(4), np.zeros(3), s)
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.full(3, np.nan), s, np.zeros(3), s)
    with pytest.raises(ValueError, match="method"):
        frechet_distance(np.zeros(3), s, np.zeros(3), s, method="svd")


def test_clamps_rank_deficient_covariances():
    # N < d: singular covariances give tiny negative eigenvalues; the clamp keeps the square roots real.
    # sqrt amplifies rounding near 0 (sqrt(1e-16) = 1e-8 per null direction), hence the looser bound.
    x = torch.randn(20, 64, dtype=torch.float64)
    st = FeatureStats.from_features(x)
    fd = frechet_distance(st.mu, st.sigma, st.mu, st.sigma)
    assert math.isfinite(fd) and abs(fd) < 1e-7 * float(torch.trace(st.sigma))
    # the Cholesky path falls back to eigh for a singular S1
    chol = frechet_distance(st.mu, st.sigma, st.mu, st.sigma, method="cholesky")
    assert math.isfinite(chol) and abs(chol) < 1e-7 * float(torch.trace(st.sigma))
    unclamped = frechet_distance(st.mu, st.sigma, st.mu, st.sigma, clamp=False)
    assert math.isnan(unclamped) or abs(unclamped) < 1e-7 * float(torch.trace(st.sigma))


def test_streaming_merge_equals_np_cov():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(203, 17, generator=g, dtype=torch.float64) * 3 + 100  # large mean: cancellation-prone
    mom = StreamingMoments(17)
    for a, b in [(0, 1), (1, 40), (40, 41), (41, 150), (150, 150), (150, 203)]:
        mom.update(x[a:b])
    for ddof in (0, 1):
        ref = np.cov(x.numpy(), rowvar=False, ddof=ddof)
        np.testing.assert_allclose(mom.cov(ddof).numpy(), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mom.mean.numpy(), x.numpy().mean(0), rtol=1e-14)
    assert mom.n == 203
    # merging partials in another grouping gives the same result
    a, b = StreamingMoments.from_features(x[:77]), StreamingMoments.from_features(x[77:])
    merged = StreamingMoments(17).merge_(b).merge_(a)
    np.testing.assert_allclose(merged.cov(0).numpy(), mom.cov(0).numpy(), rtol=1e-12)
    # float32 features are accumulated in float64
    m32 = StreamingMoments.from_features(x.float())
    assert m32.mean.dtype == torch.float64
    with pytest.raises(ValueError, match="ddof"):
        mom.cov(2)


def test_feature_stats_ddof_and_provenance_checks():
    x = torch.randn(50, 8, dtype=torch.float64)
    y = torch.randn(60, 8, dtype=torch.float64) + 0.5
    a = FeatureStats.from_features(x, ddof=0, extractor_id="e", weights_sha256="w" * 64)
    b = FeatureStats.from_features(y, ddof=0, extractor_id="e", weights_sha256="w" * 64)
    res = frechet_from_stats(a, b, seed=3, metric="m")
    j = res.to_json()
    assert j["n_real"] == 50 and j["n_fake"] == 60 and j["dim"] == 8 and j["ddof"] == 0 and j["seed"] == 3
    assert j["method"] == "eigh" and j["extractor_id"] == "e"
    np.testing.assert_allclose(a.with_ddof(1).sigma.numpy(), np.cov(x.numpy(), rowvar=False), rtol=1e-12)
    with pytest.raises(ValueError, match="extractors differ"):
        frechet_from_stats(a, FeatureStats.from_features(y, extractor_id="other", weights_sha256="w" * 64))
    with pytest.raises(ValueError, match="ddof"):
        frechet_from_stats(a, b.with_ddof(1))
    with pytest.raises(ValueError, match="weights differ"):
        frechet_from_stats(a, FeatureStats.from_features(y, extractor_id="e", weights_sha256="v" * 64))


def _ddp_worker(rank: int, world: int, port: int, x: torch.Tensor, q) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    mom = StreamingMoments(x.shape[1])
    mine = x[:37] if rank == 0 else x[37:]  # uneven shards
    for chunk in mine.split(10):
        mom.update(chunk)
    mom.all_reduce_()
    q.put((rank, mom.n, mom.mean.numpy(), mom.cov(1).numpy()))
    dist.destroy_process_group()


def test_all_reduce_across_ranks():
    import torch.multiprocessing as mp

    x = torch.randn(100, 6, dtype=torch.float64) + 5
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, x, q)) for r in range(2)]
    for p in procs:
        p.start()
    results = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    ref = np.cov(x.numpy(), rowvar=False)
    for _, n, mean, cov in results:
        assert n == 100
        np.testing.assert_allclose(mean, x.numpy().mean(0), rtol=1e-13)
        np.testing.assert_allclose(cov, ref, rtol=1e-12)


def test_small_sample_warns_and_records_it():
    rng = np.random.default_rng(0)
    meta = {"extractor_id": "e", "weights_sha256": "w" * 64}
    real = FeatureStats.from_features(rng.standard_normal((500, 16)), **meta)
    few = FeatureStats.from_features(rng.standard_normal((8, 16)), **meta)
    with pytest.warns(UserWarning, match="N <= dim"):
        res = frechet_from_stats(real, few, metric="fvd_test")
    assert "rank-deficient" in res.provenance["warnings"][0]
    many = FeatureStats.from_features(rng.standard_normal((400, 16)), **meta)
    assert frechet_from_stats(real, many).provenance["warnings"] == []
