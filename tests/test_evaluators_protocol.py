"""Protocol plumbing with a deterministic extractor: offsets, selection, short videos, workers, inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fvdm.plugins.evaluators.fvd import FVD, FVD128Sub8Config, FVDLatteConfig
from fvdm.plugins.evaluators.protocol import accumulate_features, clip_offset, select_clips
from fvdm.plugins.evaluators.sources import DirectorySource, ListSource, TensorSource


class FrameIdExtractor:
    """Features = the first pixel of each frame (frames are filled with their frame index), zero-padded."""

    dim = 32
    extractor_id = "frame-id"
    weights_sha256 = "f" * 64
    min_frames = 1

    def __call__(self, videos: torch.Tensor) -> torch.Tensor:
        v = videos[:, :, 0, 0, 0].double()  # (B, F)
        return torch.cat([v, torch.zeros(v.shape[0], self.dim - v.shape[1], dtype=torch.float64)], 1)


def _counting_videos(lengths: list[int], base: list[int] | None = None) -> ListSource:
    """Video i: frame f filled with base[i] + f (uint8)."""
    base = base or [0] * len(lengths)
    vids = [(torch.arange(n) + b).to(torch.uint8).reshape(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()
            for n, b in zip(lengths, base)]
    return ListSource(vids, keys=[f"v{i:03d}" for i in range(len(lengths))])


def test_seeded_offsets_are_uniform_reproducible_and_per_key():
    keys = [f"k{i}" for i in range(400)]
    clips = select_clips(keys, [40] * 400, num_videos=None, num_frames=16, seed=0)
    offs = np.array([c.frames[0] for c in clips])
    assert offs.min() >= 0 and offs.max() <= 24 and len(set(offs)) > 20  # spread over [0, 24]
    assert all(c.frames == tuple(range(c.frames[0], c.frames[0] + 16)) for c in clips)
    again = select_clips(keys, [40] * 400, num_videos=None, num_frames=16, seed=0)
    assert again == clips
    other_seed = select_clips(keys, [40] * 400, num_videos=None, num_frames=16, seed=1)
    assert [c.frames for c in other_seed] != [c.frames for c in clips]
    # a video's clip depends only on (seed, key): not on which other videos were selected
    subset = select_clips(keys[::7], [40] * len(keys[::7]), num_videos=None, num_frames=16, seed=0)
    by_key = {c.key: c.frames for c in clips}
    assert all(by_key[c.key] == c.frames for c in subset)
    assert clip_offset(0, "k1", 0) == 0
    fixed = select_clips(keys, [40] * 400, num_videos=3, num_frames=16, random_offset=False)
    assert all(c.frames[0] == 0 for c in fixed)


def test_sorted_vs_random_selection_and_short_videos():
    keys = ["c", "a", "e", "b", "d", "f"]
    lengths = [20, 20, 5, 20, 20, 20]  # "e" is too short for 16 frames
    sorted_clips = select_clips(keys, lengths, num_videos=3, num_frames=16)
    assert [c.key for c in sorted_clips] == ["a", "b", "c"]
    assert [c.index for c in sorted_clips] == [1, 3, 0]
    rnd = [c.key for c in select_clips(keys, lengths, num_videos=3, num_frames=16, selection="random", seed=0)]
    assert rnd == sorted(rnd) and "e" not in rnd and len(rnd) == 3
    seeds = {tuple(c.key for c in select_clips(keys, lengths, num_videos=3, num_frames=16, selection="random",
                                               seed=s)) for s in range(10)}
    assert len(seeds) > 1  # the seed matters
    every = select_clips(keys, lengths, num_videos=None, num_frames=16)
    assert [c.key for c in every] == ["a", "b", "c", "d", "f"]  # short "e" dropped
    with pytest.raises(ValueError, match="shorter than the clip span 16.*'e' with 5"):
        select_clips(keys, lengths, num_videos=None, num_frames=16, drop_short=False)
    sub = select_clips(["x"], [130], num_videos=1, num_frames=16, subsample=8, random_offset=False)
    assert sub[0].frames == tuple(range(0, 121, 8))
    allf = select_clips(["x"], [7], num_videos=None, num_frames=None)
    assert allf[0].frames == tuple(range(7))


def test_worker_count_and_batch_size_independence():
    src = _counting_videos([30 + i % 7 for i in range(12)], base=list(range(12)))
    clips = select_clips(src.keys, src.length, num_videos=None, num_frames=10, seed=3)
    ext = FrameIdExtractor()
    m0, f0 = accumulate_features(ext, src, clips, batch_size=5, num_workers=0, keep_features=True)
    m2, f2 = accumulate_features(ext, src, clips, batch_size=5, num_workers=2, keep_features=True)
    m3, _ = accumulate_features(ext, src, clips, batch_size=3, num_workers=0)
    assert torch.equal(f0, f2) and torch.equal(m0.m2, m2.m2) and torch.equal(m0.mean, m2.mean)
    torch.testing.assert_close(m0.m2, m3.m2, rtol=1e-12, atol=1e-12)
    # the features are exactly the selected frame indices (+ base)
    for row, c in zip(f0, clips):
        assert row[:10].tolist() == [c.index + f for f in c.frames]


def test_fvd_protocol_end_to_end_with_fake_extractor():
    real = _counting_videos([40] * 6)
    ext = FrameIdExtractor()
    fvd = FVD(FVD.Config(num_real=4, num_fake=4, num_frames=16, seed=0), extractor=ext)
    real_stats = fvd.real_stats(real)
    assert real_stats.n == 4 and real_stats.protocol["videos_used"] == 4 and len(real_stats.dataset_hash) == 64
    # fake clips start at frame 0 (StyleGAN-V: no random offset for generated videos)
    fake = torch.arange(16, dtype=torch.uint8).reshape(1, 16, 1, 1, 1).expand(4, 16, 3, 2, 2)
    fake_stats = fvd.fake_stats(fake)
    torch.testing.assert_close(fake_stats.mu[:16], torch.arange(16, dtype=torch.float64))
    res = fvd.evaluate(fake, real)
    assert res["metric"] == "fvd2048_16f" and res["n_real"] == 4 and res["n_fake"] == 4 and res["ddof"] == 0
    assert res["protocol"]["real"]["selection"] == "sorted" and res["seed"] == 0
    # identical real and fake clips: FD = 0
    same = torch.arange(16, dtype=torch.uint8).reshape(1, 16, 1, 1, 1).expand(6, 16, 3, 2, 2) + \
        torch.arange(6, dtype=torch.uint8).reshape(6, 1, 1, 1, 1)
    fvd_all = FVD(FVD.Config(num_real=None, num_fake=None), extractor=ext)
    assert abs(fvd_all.evaluate(same, same)["value"]) < 1e-9
    # precomputed features are accepted for either side
    feats = ext(same)
    assert abs(fvd_all.evaluate(feats, same)["value"]) < 1e-9
    with pytest.raises(ValueError, match="observed range"):
        fvd_all.evaluate(same.float(), same)


def test_presets_subsample_and_latte():
    ext = FrameIdExtractor()
    sub8 = FVD(FVD128Sub8Config(num_real=2, num_fake=2), extractor=ext)
    long_fake = torch.arange(128, dtype=torch.uint8).reshape(1, 128, 1, 1, 1).expand(2, 128, 3, 2, 2)
    st = sub8.fake_stats(long_fake)
    torch.testing.assert_close(st.mu[:16], torch.arange(0, 121, 8, dtype=torch.float64))
    latte = FVD(FVDLatteConfig(num_real=3, num_fake=2), extractor=ext)
    real = _counting_videos([60] * 10)
    rs = latte.real_stats(real)
    assert rs.protocol["selection"] == "random" and rs.protocol["subsample"] == 3
    short = _counting_videos([40, 46, 60])  # span 46 frames: the 40-frame video is dropped
    assert latte.real_stats(short).n == 2


def test_directory_source_npy_gif_and_frame_folders(tmp_path):
    from PIL import Image

    v = np.stack([np.full((6, 5, 3), 10 * f, np.uint8) for f in range(12)])  # (F, H, W, C)
    np.save(tmp_path / "b.npy", v)
    Image.fromarray(v[0]).save(tmp_path / "a.gif", save_all=True, append_images=[Image.fromarray(f) for f in v[1:]],
                               duration=40, loop=0)
    (tmp_path / "c").mkdir()
    for f in range(12):
        Image.fromarray(v[f]).save(tmp_path / "c" / f"{f:03d}.png")
    src = DirectorySource(tmp_path)
    assert src.keys == ["a.gif", "b.npy", "c"]
    for i in range(3):
        assert src.length(i) == 12
        clip = src.load(i, [2, 5])
        assert clip.shape == (2, 3, 6, 5) and clip.dtype == torch.uint8
        assert abs(int(clip[0, 0, 0, 0]) - 20) <= 1 and abs(int(clip[1, 0, 0, 0]) - 50) <= 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no videos"):
        DirectorySource(tmp_path / "empty")


def test_tensor_source_and_dataset_source():
    from fvdm.plugins.evaluators.sources import DatasetSource

    with pytest.raises(ValueError, match=r"\(N, F, C, H, W\)"):
        TensorSource(torch.zeros(3, 4, 4))

    class DS(torch.utils.data.Dataset):
        num_frames = 5

        def __len__(self):
            return 3

        def __getitem__(self, i):
            return {"video": torch.full((5, 1, 2, 2), -1.0 + i), "key": f"k{i}"}

        def key(self, i):
            return f"k{i}"

    src = DatasetSource(DS())
    assert src.keys == ["k0", "k1", "k2"] and src.length(1) == 5
    assert src.load(1, [0]).flatten().tolist() == [128] * 4  # 0.0 in [-1, 1] -> 127.5 -> 128
