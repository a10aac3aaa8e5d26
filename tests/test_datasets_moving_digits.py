"""moving_digits: determinism, splits by digit image, ranges, bouncing, registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fvdm.core.plugins import load_plugins
from fvdm.plugins.datasets.moving_digits import MovingDigits, _bounce, split_indices, upscaled_digits


@pytest.fixture(scope="module")
def plugins():
    return load_plugins(entry_points=False)


def test_registered_and_contract(plugins):
    ds = plugins["datasets"].build({"name": "moving_digits", "num_clips": 4})
    assert (ds.num_frames, ds.channels, ds.resolution, ds.num_classes) == (16, 1, 32, 0)
    item = ds[0]
    v = item["video"]
    assert v.shape == (16, 1, 32, 32) and v.dtype == torch.float32
    assert v.min() >= -1 and v.max() <= 1 and v.max() > 0  # digits visible
    assert isinstance(item["key"], str) and "label" not in item
    assert len(ds) == 4
    with pytest.raises(IndexError):
        ds[4]


def test_config_forbids_unknown_and_checks_ranges(plugins):
    with pytest.raises(Exception, match="extra"):
        plugins["datasets"].build({"name": "moving_digits", "num_frame": 8})
    with pytest.raises(Exception, match="min_digits"):
        MovingDigits(MovingDigits.Config(min_digits=3, max_digits=1))


def test_deterministic_and_worker_independent():
    a = MovingDigits(MovingDigits.Config(num_clips=20, seed=3))
    b = MovingDigits(MovingDigits.Config(num_clips=20, seed=3))
    # different access order (as different DataLoader workers would have) -> same clips
    order = list(range(20))[::-1]
    got_b = {i: b[i]["video"] for i in order}
    for i in range(20):
        assert torch.equal(a[i]["video"], got_b[i])
        assert torch.equal(a.ground_truth(i), a[i]["video"])
    c = MovingDigits(MovingDigits.Config(num_clips=20, seed=4))
    assert not torch.equal(a[0]["video"], c[0]["video"])
    # a DataLoader with 2 workers yields the same clips as direct indexing
    dl = torch.utils.data.DataLoader(a, batch_size=5, num_workers=2, shuffle=False)
    batches = torch.cat([x["video"] for x in dl])
    assert torch.equal(batches, a.get_batch(range(20)))


def test_splits_partition_digit_images():
    tr, va, te = (set(split_indices(s).tolist()) for s in ("train", "val", "test"))
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert len(tr | va | te) == 1797
    assert abs(len(tr) - 0.8 * 1797) <= 1
    ds = MovingDigits(MovingDigits.Config(split="test", num_clips=50))
    used = set(np.concatenate([ds.metadata(i)["digit_ids"] for i in range(50)]).tolist())
    assert used <= te


def test_label_is_first_digit_class_and_digit_counts():
    ds = MovingDigits(MovingDigits.Config(class_conditional=True, num_clips=30, split="val"))
    assert ds.num_classes == 10
    counts = set()
    for i in range(30):
        meta = ds.metadata(i)
        assert ds[i]["label"] == int(meta["labels"][0])
        counts.add(len(meta["digit_ids"]))
    assert counts <= {1, 2, 3} and len(counts) > 1
    assert {len(MovingDigits(MovingDigits.Config(num_digits=2)).metadata(i)["digit_ids"]) for i in range(10)} == {2}


def test_single_digit_frame_equals_pasted_digit():
    """Oracle: a one-digit clip is the upscaled digit pasted at its trajectory position."""
    ds = MovingDigits(MovingDigits.Config(num_digits=1, num_clips=3, resolution=64, channels=3, num_frames=20))
    assert ds.digit_size == 24
    digits = upscaled_digits(24)
    for i in range(3):
        v = ds[i]["video"]
        assert v.shape == (20, 3, 64, 64)
        assert torch.equal(v[:, 0], v[:, 2])
        meta = ds.metadata(i)
        pos = ds.trajectories(i)[0]
        for f in range(20):
            y, x = pos[f]
            exp = np.zeros((64, 64), np.float32)
            exp[y:y + 24, x:x + 24] = digits[meta["digit_ids"][0]]
            np.testing.assert_allclose(v[f, 0].numpy(), exp * 2 - 1, atol=1e-6)


def test_bounce_reflects_and_keeps_speed():
    pos = _bounce(np.array([18.0]), np.array([1.0]), np.arange(8.0), span=20)[:, 0]
    assert pos.tolist() == [18, 19, 20, 19, 18, 17, 16, 15]
    pos = _bounce(np.array([1.0]), np.array([-2.0]), np.arange(4.0), span=20)[:, 0]
    assert pos.tolist() == [1, 1, 3, 5]
    # digits stay inside the canvas for many frames and fast speeds
    ds = MovingDigits(MovingDigits.Config(num_frames=64, speed_min=5, speed_max=9, num_clips=5))
    for i in range(5):
        p = ds.trajectories(i)
        assert p.min() >= 0 and p.max() <= 32 - ds.digit_size
