"""fvdm data pack / inspect / make-digits: round trip, manifest, checksums, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fvdm.cli import main
from fvdm.plugins.datasets import video_io as vio
from fvdm.plugins.datasets.fixtures import synthetic_clip, write_video_folder
from fvdm.plugins.datasets.moving_digits import MovingDigits
from fvdm.plugins.datasets.pack import clip_starts, inspect_shards, pack_folder
from fvdm.plugins.datasets.shards import iter_samples_uint8
from fvdm.plugins.datasets.video_folder import VideoFolder
from fvdm.plugins.datasets.webdataset_reader import WebDatasetVideos


@pytest.fixture(scope="module")
def frame_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("frames")
    write_video_folder(root, {"jump": 2, "run": 1}, as_frames=True, frames=12, size=16)
    return root


def test_pack_then_read_gives_the_same_frames(frame_tree, tmp_path):
    m = pack_folder(frame_tree, tmp_path / "sh", shard_size="3k", frames=4, stride=2, progress=False)
    # 12 frames, span 7 -> one clip per video; 3 videos; tiny shard size -> one clip per shard
    assert m["num_samples"] == 3 and m["num_shards"] == 3 and m["frame_size"] == [4, 16, 16, 3]
    assert m["classes"] == ["jump", "run"] and m["skipped"]["count"] == 0
    assert all(len(s["sha256"]) == 64 and s["samples"] == 1 for s in m["shards"])
    folder = VideoFolder(VideoFolder.Config(root=str(frame_tree), num_frames=4, stride=2, offset="start"))
    shards = WebDatasetVideos(WebDatasetVideos.Config(urls=str(tmp_path / "sh"), num_frames=4, offset="start", num_classes=2,
                              shuffle_shards=False))
    assert len(shards) == 3
    got = {it["key"]: it for it in shards}
    for i in range(len(folder)):
        ref = folder[i]
        it = got[ref["key"].replace("/", "__") + "__c000"]
        assert torch.equal(it["video"], ref["video"]) and it["label"] == ref["label"]


def test_pack_with_resize_mp4_and_all_clips(frame_tree, tmp_path):
    m = pack_folder(frame_tree, tmp_path / "r", frames=3, resize=8, channels=1, progress=False)
    assert m["num_samples"] == 3 * 4 and m["frame_size"] == [3, 8, 8, 1]  # 12 frames -> 4 clips of 3
    folder = VideoFolder(VideoFolder.Config(root=str(frame_tree), num_frames=3, offset="start", resolution=8, channels=1))
    frames = dict(iter_samples_uint8(str(tmp_path / "r")))
    ref = folder[0]["video"]
    back = vio.to_model_clip(frames["jump__v_jump_00__c000"], channels=1, resolution=None)
    assert (back - ref).abs().max() <= 1 / 127.5 + 1e-6  # uint8 quantization of the resized clip only
    m4 = pack_folder(frame_tree, tmp_path / "m", frames=6, storage="mp4", progress=False)
    clip = dict(iter_samples_uint8(str(tmp_path / "m")))["run__v_run_00__c001"]
    assert clip.shape == (6, 16, 16, 3)
    assert np.abs(clip.astype(float) - synthetic_clip(2, 12)[6:12]).mean() < 12  # lossy but the same clip
    assert clip_starts(12, 3, 2, 0) == [0, 5] and clip_starts(12, 3, 2, 1) == [0]


def test_pack_skips_bad_videos_or_raises(frame_tree, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(frame_tree, src)
    (src / "run" / "broken.mp4").write_bytes(b"junk" * 100)
    with pytest.warns(RuntimeWarning, match="broken.mp4"):
        m = pack_folder(src, tmp_path / "out", frames=4, progress=False)
    assert m["skipped"]["count"] == 1 and "broken.mp4" in m["skipped"]["items"][0]["source"]
    assert m["num_samples"] == 9
    with pytest.raises(vio.BadSampleError, match="broken.mp4: cannot decode video"):
        pack_folder(src, tmp_path / "out2", frames=4, progress=False, on_error="raise")


def test_cli_make_digits_inspect_and_checksum(tmp_path, capsys):
    dst = tmp_path / "digits"
    assert main(["data", "make-digits", str(dst), "--split", "val", "--num-clips", "12", "--frames", "8",
                 "--shard-size", "20k", "--no-progress"]) == 0
    manifest = json.loads((dst / "manifest.json").read_text())
    assert manifest["num_samples"] == 12 and manifest["num_shards"] > 1
    ds = WebDatasetVideos(WebDatasetVideos.Config(urls=str(dst), num_frames=8, offset="start", channels=1, num_classes=10,
                          shuffle_shards=False))
    md = MovingDigits(MovingDigits.Config(split="val", num_clips=12, num_frames=8, class_conditional=True))
    items = list(ds)
    assert len(items) == 12 and ds.resolution == 32
    for i, it in enumerate(items):
        assert (it["video"] - md[i]["video"]).abs().max() <= 1 / 127.5 and it["label"] == md[i]["label"]
    grid = tmp_path / "grid.png"
    assert main(["data", "inspect", str(dst), "--grid", str(grid)]) == 0
    out = capsys.readouterr().out
    assert "12 samples in" in out and "sha256 ok" in out and grid.is_file()
    from PIL import Image

    assert Image.open(grid).size[0] >= 8 * 32
    # tamper with a shard: inspect reports the checksum mismatch and exits non-zero
    shard = dst / manifest["shards"][0]["name"]
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF
    shard.write_bytes(bytes(data))
    rep = inspect_shards(str(dst))
    assert any("sha256" in e["reason"] for e in rep["errors"])
    assert main(["data", "inspect", str(dst), "--grid", ""]) == 1


def test_cli_pack(frame_tree, tmp_path, capsys):
    assert main(["data", "pack", str(frame_tree), str(tmp_path / "p"), "--frames", "4", "--stride", "1",
                 "--resize", "8", "--shard-size", "1GB", "--no-progress"]) == 0
    assert "wrote 9 clips in 1 shard(s)" in capsys.readouterr().out
    assert main(["data"]) == 2  # no action: help


def test_parse_size():
    assert vio.parse_size("1GB") == 10**9 and vio.parse_size("64k") == 64000 and vio.parse_size("1MiB") == 2**20
    with pytest.raises(ValueError, match="cannot parse size"):
        vio.parse_size("lots")


def test_inspect_verify_decodes_every_sample(tmp_path, capsys):
    """Without --verify only the grid's samples are decoded; --verify finds a bad member anywhere (exit 1)."""
    from fvdm.cli import main
    from fvdm.plugins.datasets.fixtures import synthetic_clip, write_tar
    from fvdm.plugins.datasets.pack import encode_sample

    members = []
    for i in range(3):
        members += list(encode_sample(f"c{i}", synthetic_clip(i, 4), "npy", None, {}).items())
    k = [n for n, _ in members].index("c2.npy")
    members[k] = ("c2.npy", b"not an npy array")  # the last sample's frames are damaged
    write_tar(tmp_path / "s-000.tar", members)
    assert main(["data", "inspect", str(tmp_path / "s-000.tar"), "--grid", "", "--grid-samples", "1"]) == 0
    capsys.readouterr()
    assert main(["data", "inspect", str(tmp_path / "s-000.tar"), "--grid", "", "--verify"]) == 1
    out = capsys.readouterr().out
    assert "3 samples in 1 shard(s), 2 decoded" in out and "ERROR" in out and "c2" in out
