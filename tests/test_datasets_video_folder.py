"""video_folder: mp4 files and frame folders, natural order, labels, split lists, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from fvdm.core.plugins import load_plugins
from fvdm.plugins.datasets import video_io as vio
from fvdm.plugins.datasets.fixtures import synthetic_clip, write_video_folder
from fvdm.plugins.datasets.video_folder import VideoFolder


@pytest.fixture(scope="module")
def ucf(tmp_path_factory):
    """UCF101-like tree: 2 classes x 2 mp4 videos (12 frames, 16x16)."""
    root = tmp_path_factory.mktemp("ucf")
    write_video_folder(root, {"Archery": 2, "Biking": 2})
    return root


def test_registered_mp4_folder_with_labels(ucf):
    P = load_plugins(entry_points=False)
    ds = P["datasets"].build({"name": "video_folder", "root": str(ucf), "num_frames": 5, "offset": "start"})
    assert len(ds) == 4 and ds.classes == ["Archery", "Biking"] and ds.num_classes == 2
    assert (ds.num_frames, ds.channels, ds.resolution) == (5, 3, 16)
    items = [ds[i] for i in range(4)]
    assert [it["label"] for it in items] == [0, 0, 1, 1]
    assert items[0]["key"] == "Archery/v_Archery_00"
    for g, it in enumerate(items):
        assert it["video"].shape == (5, 3, 16, 16)
        exact = vio.to_model_clip(synthetic_clip(g, 12, 16, 16, 3)[:5], channels=3, resolution=None)
        assert (it["video"] - exact).abs().mean() < 0.1  # mp4 is lossy, but it is this clip
    # a DataLoader batches them (labels collate to a tensor)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["video"].shape == (4, 5, 3, 16, 16) and batch["label"].tolist() == [0, 0, 1, 1]


def test_frame_folders_natural_order_warning(tmp_path):
    write_video_folder(tmp_path, {"a": 1}, as_frames=True, pad=False, frames=12)
    with pytest.warns(UserWarning, match="not zero-padded"):
        ds = VideoFolder(VideoFolder.Config(root=str(tmp_path), num_frames=12, offset="start", labels="none"))
    assert ds.num_classes == 0 and "label" not in ds[0]
    assert ds.entries[0][2][:3] == ["0.png", "1.png", "2.png"] and ds.entries[0][2][10] == "10.png"
    exact = vio.to_model_clip(synthetic_clip(0, 12, 16, 16, 3), channels=3, resolution=None)
    assert torch.equal(ds[0]["video"], exact)  # png lossless and in natural (not lexical) order


def test_padded_frames_do_not_warn_and_stride_resize_gray(tmp_path):
    write_video_folder(tmp_path, {"a": 1}, as_frames=True, frames=12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = VideoFolder(VideoFolder.Config(root=str(tmp_path), num_frames=3, stride=4, offset="start", resolution=8, channels=1))
    exp = vio.to_model_clip(synthetic_clip(0, 12, 16, 16, 3)[[0, 4, 8]], channels=1, resolution=8)
    assert torch.equal(ds[0]["video"], exp)


def test_split_file_and_class_index(ucf, tmp_path):
    split = tmp_path / "trainlist01.txt"
    split.write_text("Archery/v_Archery_01.avi 1\nBiking/v_Biking_00.avi 2\n")  # UCF lists name .avi files
    cind = tmp_path / "classInd.txt"
    cind.write_text("1 Biking\n2 Archery\n3 Diving\n")
    ds = VideoFolder(VideoFolder.Config(root=str(ucf), split_file=str(split), class_index_file=str(cind), num_frames=4))
    assert [ds.key(i) for i in range(len(ds))] == ["Archery/v_Archery_01", "Biking/v_Biking_00"]
    assert ds.num_classes == 3 and [ds[i]["label"] for i in range(2)] == [1, 0]


def test_random_offset_depends_on_seed_epoch_not_workers(ucf):
    ds = VideoFolder(VideoFolder.Config(root=str(ucf), num_frames=3, offset="random", flip=True, seed=2))
    direct = torch.stack([ds[i]["video"] for i in range(4)])
    # spawned workers: with PyAV 18 a worker forked from a parent that has decoded hangs inside av (seen here)
    dl = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context="spawn")
    assert torch.equal(torch.cat([b["video"] for b in dl]), direct)
    ds.set_epoch(1)
    assert not torch.equal(torch.stack([ds[i]["video"] for i in range(4)]), direct)


# -- bad input ---------------------------------------------------------------------------------
@pytest.fixture()
def bad_tree(tmp_path):
    write_video_folder(tmp_path, {"good": 1}, frames=8)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x13" * 300)
    vio.encode_video(synthetic_clip(1, 3), tmp_path / "bad" / "short.mp4")
    folder = write_video_folder(tmp_path / "tmp", {"x": 1}, as_frames=True, frames=8)[0]
    target = tmp_path / "bad" / "v_badimg"
    folder.rename(target)
    (target / "0003.png").write_bytes(b"not an image")
    full = vio.encode_video_bytes(synthetic_clip(2, 8))
    (tmp_path / "bad" / "truncated.mp4").write_bytes(full[: len(full) // 2])
    return tmp_path


def test_bad_videos_skipped_with_counts(bad_tree):
    ds = VideoFolder(VideoFolder.Config(root=str(bad_tree / "bad"), num_frames=6, offset="start", labels="none", resolution=16))
    ds2 = VideoFolder(VideoFolder.Config(root=str(bad_tree), num_frames=6, offset="start", resolution=16))
    with pytest.warns(RuntimeWarning, match="skipped"):
        keys = [ds2[i]["key"] for i in range(len(ds2))]
    # every bad video is replaced by the next usable one (the good video, wrapping around)
    assert set(keys) == {"good/v_good_00"}
    assert ds2.skip_counts() == {"corrupt": 2, "short": 1, "image": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="in a row .* were unusable"):
            ds[0]  # only bad videos: fail instead of searching forever


@pytest.mark.parametrize("name,reason", [
    ("corrupt.mp4", "cannot decode video"),
    ("truncated.mp4", "cannot decode video|needs 6 frames"),
    ("short.mp4", "needs 6 frames .* has 3"),
    ("v_badimg", "0003.png: unreadable image"),
])
def test_bad_video_raises_with_file_and_reason(bad_tree, name, reason):
    ds = VideoFolder(VideoFolder.Config(root=str(bad_tree / "bad"), num_frames=6, offset="start", labels="none", resolution=16,
                     on_error="raise"))
    i = [e[0] for e in ds.entries].index(name)
    with pytest.raises(vio.BadSampleError, match=reason) as exc:
        ds[i]
    assert name in str(exc.value)


def test_missing_root_and_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        VideoFolder(VideoFolder.Config(root=str(tmp_path / "nope")))
    with pytest.raises(FileNotFoundError, match="no videos"):
        VideoFolder(VideoFolder.Config(root=str(tmp_path)))


def test_natural_sort_helper():
    with pytest.warns(UserWarning):
        assert vio.natural_sort(["f10.png", "f2.png", "f1.png"]) == ["f1.png", "f2.png", "f10.png"]
    assert np.array_equal(vio.clip_indices(10, 3, 2, "center", None, "x"), [2, 4, 6])


def test_decode_clip_stops_early_and_matches_full_decode():
    data = vio.encode_video_bytes(synthetic_clip(5, 12))
    full = vio.decode_video(data)
    assert full.shape == (12, 16, 16, 3)
    seen = []

    def choose(n):
        seen.append(n)
        return np.array([2, 5, 8])

    assert np.array_equal(vio.decode_clip(data, choose), full[[2, 5, 8]]) and seen == [12]
    assert np.array_equal(vio.decode_video(data, max_frames=4), full[:4])
    with pytest.raises(vio.BadSampleError, match="needs 13 frames"):
        vio.decode_clip(data, lambda n: vio.clip_indices(n, 13, 1, "start", None, "x"))
