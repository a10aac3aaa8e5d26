"""webdataset reader: formats, clip sampling, rank x worker splitting, resampling, bad input."""

from __future__ import annotations

import collections
import warnings

import numpy as np
import pytest
import torch

from fvdm.core.plugins import load_plugins
from fvdm.plugins.datasets import video_io as vio
from fvdm.plugins.datasets.fixtures import synthetic_clip, write_clip_shards, write_tar
from fvdm.plugins.datasets.pack import encode_sample
from fvdm.plugins.datasets.shards import expand_urls
from fvdm.plugins.datasets.webdataset_reader import WebDatasetVideos


def wds(urls, **kw):
    kw.setdefault("num_frames", 4)
    return WebDatasetVideos(WebDatasetVideos.Config(urls=[str(u) for u in urls] if isinstance(urls, list) else str(urls), **kw))


@pytest.fixture(scope="module")
def shards8(tmp_path_factory):
    """8 shards x 3 clips (npy), labels = global index % 5."""
    d = tmp_path_factory.mktemp("wds8")
    write_clip_shards(d, 8, 3, num_classes=5)
    return d


def test_registered_and_reads_every_format(tmp_path):
    P = load_plugins(entry_points=False)
    members = []
    for i, storage in enumerate(("npy", "png", "jpg", "mp4")):
        clip = synthetic_clip(i, 8, 16, 16, 3)
        members += list(encode_sample(f"clip{i}", clip, storage, i, {}).items())
    arr = synthetic_clip(9, 8, 16, 16, 3)
    members.append(("clipnpz.npz", _npz_bytes(arr.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)))
    members.append(("clipnpz.cls", b"4"))
    write_tar(tmp_path / "mixed.tar", members)
    ds = P["datasets"].build({"name": "webdataset", "urls": str(tmp_path / "mixed.tar"), "num_frames": 6,
                              "offset": "start", "num_classes": 5})
    assert (ds.num_frames, ds.channels, ds.resolution, ds.num_classes) == (6, 3, 16, 5)
    items = {it["key"]: it for it in ds}
    assert sorted(items) == ["clip0", "clip1", "clip2", "clip3", "clipnpz"]
    for key, it in items.items():
        assert it["video"].shape == (6, 3, 16, 16) and it["video"].dtype == torch.float32
        assert -1 <= it["video"].min() and it["video"].max() <= 1
    def exact(i):
        return vio.to_model_clip(synthetic_clip(i, 8, 16, 16, 3)[:6], channels=3, resolution=None)

    assert torch.equal(items["clip0"]["video"], exact(0))  # npy: lossless
    assert torch.equal(items["clip1"]["video"], exact(1))  # png frames: lossless
    assert (items["clip2"]["video"] - exact(2)).abs().mean() < 0.05  # jpg: lossy
    assert (items["clip3"]["video"] - exact(3)).abs().mean() < 0.1  # mp4 (PyAV): lossy
    assert (items["clip3"]["video"] - exact(2)).abs().mean() > 0.2  # ... but recognisably clip 3
    assert torch.allclose(items["clipnpz"]["video"],
                          vio.to_model_clip(synthetic_clip(9, 8, 16, 16, 3)[:6], channels=3, resolution=None))
    assert [items[k]["label"] for k in sorted(items)] == [0, 1, 2, 3, 4]


def _npz_bytes(arr):
    import io

    buf = io.BytesIO()
    np.savez(buf, frames=arr)
    return buf.getvalue()


def test_clip_sampling_stride_offset_resize_gray(tmp_path):
    write_clip_shards(tmp_path, 1, 2, frames=12, size=16)
    full = synthetic_clip(0, 12, 16, 16, 3)
    it = next(iter(wds(tmp_path, num_frames=4, stride=3, offset="start", resolution=8, channels=1)))
    exp = vio.to_model_clip(full[[0, 3, 6, 9]], channels=1, resolution=8)
    assert it["video"].shape == (4, 1, 8, 8) and torch.equal(it["video"], exp)
    center = next(iter(wds(tmp_path, num_frames=4, stride=2, offset="center")))
    assert torch.equal(center["video"], vio.to_model_clip(full[[2, 4, 6, 8]], channels=3, resolution=None))
    # random offsets: a hash of (seed, epoch, key) -> same for a new reader, new per epoch
    a = [x["video"] for x in wds(tmp_path, num_frames=3, offset="random", flip=True, seed=1)]
    b = [x["video"] for x in wds(tmp_path, num_frames=3, offset="random", flip=True, seed=1)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    r = wds(tmp_path, num_frames=3, offset="random", seed=1)
    starts = set()
    for e in range(12):
        r.set_epoch(e)
        v = next(iter(r))["video"]
        starts |= {k for k in range(10) if torch.equal(v, vio.to_model_clip(full[k:k + 3], channels=3, resolution=None))}
    assert len(starts) > 2


def test_resize_shorter_side_then_center_crop():
    x = torch.arange(2 * 1 * 4 * 8, dtype=torch.float32).view(2, 1, 4, 8)
    y = vio.resize_center_crop(x, 4)  # no resize needed (short side 4): pure center crop of columns 2..5
    assert torch.equal(y, x[..., 2:6])
    z = vio.resize_center_crop(torch.ones(1, 3, 10, 20), 5)
    assert z.shape == (1, 3, 5, 5) and torch.allclose(z, torch.ones_like(z))


def _keys_of(ds, rank, world, nw):
    return [it["key"] for w in range(nw) for it in ds.iter_partition(rank, world, w, nw)]


@pytest.mark.parametrize("shuffle", [False, True])
def test_two_ranks_two_workers_see_every_clip_once(shards8, shuffle):
    keys = []
    for rank in range(2):
        ds = wds(shards8, shuffle_shards=shuffle, rank=rank, world_size=2)
        keys += _keys_of(ds, rank, 2, 2)
    assert len(keys) == 24 and len(set(keys)) == 24


def test_two_ranks_two_real_dataloader_workers(shards8):
    """The same with torch DataLoader worker processes (rank/world_size set explicitly)."""
    seen = []
    for rank in range(2):
        ds = wds(shards8, rank=rank, world_size=2)
        dl = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
        for batch in dl:
            seen += batch["key"]
    assert sorted(seen) == sorted(f"s{s:03d}_c{c:03d}" for s in range(8) for c in range(3))


def test_env_rank_and_world_size(shards8, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    ds = wds(shards8, shuffle_shards=False)
    assert {k["key"][:4] for k in ds} == {"s001", "s003", "s005", "s007"}


def test_worker_count_does_not_change_clips(shards8):
    """Offsets/flips hash the sample key, so each clip's content is the same for 1 or 4 workers."""
    def content(nw):
        ds = wds(shards8, num_frames=3, flip=True, seed=5)
        return {it["key"]: it["video"] for w in range(nw) for it in ds.iter_partition(0, 1, w, nw)}

    a, b = content(1), content(4)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_too_few_shards_splits_by_sample_with_counted_warning(tmp_path):
    write_clip_shards(tmp_path, 3, 5)  # 3 shards < 2 ranks x 2 workers
    keys, skipped = [], collections.Counter()
    with pytest.warns(RuntimeWarning, match="fewer shards than world_size x workers"):
        for rank in range(2):
            ds = wds(tmp_path, rank=rank, world_size=2)
            keys += _keys_of(ds, rank, 2, 2)
            skipped.update(ds.skip_counts())
    assert len(keys) == 15 and len(set(keys)) == 15
    assert skipped == {"shards": 1}  # counted once (by global worker 0)
    with pytest.raises(vio.BadSampleError, match="3 shard.*2 x 2 = 4"):
        list(wds(tmp_path, on_error="raise", rank=0, world_size=2).iter_partition(0, 2, 0, 2))
    # explicit split_by: sample splits silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        keys = _keys_of(wds(tmp_path, split_by="sample", rank=0, world_size=1), 0, 1, 4)
    assert len(set(keys)) == 15


def test_resampled_epoch_length(shards8):
    ds = wds(shards8, resampled=True, epoch_length=10, rank=0, world_size=1)
    assert len(ds) == 10
    assert len(_keys_of(ds, 0, 1, 3)) == 10  # 4 + 3 + 3 over 3 workers
    endless = iter(wds(shards8, resampled=True))
    assert len([next(endless) for _ in range(50)]) == 50


def test_shuffle_buffer_keeps_the_set(shards8):
    ds = wds(shards8, shuffle_buffer=10, shuffle_shards=False, seed=3)
    keys = _keys_of(ds, 0, 1, 1)
    assert sorted(keys) == sorted(_keys_of(wds(shards8, shuffle_shards=False), 0, 1, 1)) and keys != sorted(keys)


def test_expand_urls_brace_glob_dir_manifest(shards8):
    pat = str(shards8 / "shard-{000..003}.tar")
    assert [p.rsplit("/", 1)[1] for p in expand_urls(pat)] == [f"shard-{i:03d}.tar" for i in range(4)]
    assert len(expand_urls(str(shards8 / "shard-00[0-5].tar"))) == 6
    assert len(expand_urls(str(shards8))) == 8
    assert expand_urls("https://host/data-{0..1}.tar") == ["https://host/data-0.tar", "https://host/data-1.tar"]
    with pytest.raises(FileNotFoundError, match="no shards match"):
        wds(shards8 / "nothing-*.tar")
    # URLs go through webdataset's gopen (here a pipe: URL, as for `pipe:curl -s ...` / `pipe:aws s3 cp ...`)
    keys = [x["key"] for x in wds(f"pipe:cat {shards8}/shard-001.tar", shuffle_shards=False)]
    assert keys == ["s001_c000", "s001_c001", "s001_c002"]
    assert len(list(wds(f"file:{shards8}/shard-002.tar"))) == 3


# -- bad input --------------------------------------------------------------------------
@pytest.fixture()
def bad_shards(tmp_path):
    """good.tar (2 clips) + a truncated shard + a shard with a corrupt mp4, a short clip and a bad png."""
    write_clip_shards(tmp_path, 1, 2, prefix="good")
    full = write_clip_shards(tmp_path, 1, 3, prefix="trunc")[0]
    data = full.read_bytes()
    full.write_bytes(data[: len(data) * 2 // 3])  # cuts the 2nd or 3rd sample
    members = [("badmp4.mp4", b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)]
    members += list(encode_sample("short", synthetic_clip(1, 2), "npy", None, {}).items())
    png = list(encode_sample("badpng", synthetic_clip(2, 5), "png", None, {}).items())
    png[2] = (png[2][0], b"not a png at all")
    members += png
    members += list(encode_sample("ok", synthetic_clip(3, 6), "npy", None, {}).items())
    mp4 = vio.encode_video_bytes(synthetic_clip(4, 8))
    members.append(("truncmp4.mp4", mp4[: len(mp4) // 2]))
    write_tar(tmp_path / "mixed-000.tar", members)
    return tmp_path


def test_bad_input_skipped_and_counted(bad_shards):
    ds = wds(bad_shards, num_frames=4, shuffle_shards=False)
    with pytest.warns(RuntimeWarning, match="skipped"):
        keys = [it["key"] for it in ds]
    assert "ok" in keys and "s000_c000" in keys and not {"badmp4", "short", "truncmp4", "badpng"} & set(keys)
    assert sum(k.startswith("s000") for k in keys) >= 2 + 1  # good (2) + the intact head of the truncated shard
    counts = ds.skip_counts()
    assert counts == {"corrupt": 3, "short": 1, "image": 1}, counts  # truncated shard, bad + truncated mp4


def test_skip_counts_reach_the_main_process_from_workers(bad_shards):
    ds = wds(bad_shards, num_frames=4)
    dl = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n = sum(1 for _ in dl)
    assert n >= 4 and ds.skip_counts() == {"corrupt": 3, "short": 1, "image": 1}


@pytest.mark.parametrize("name,reason", [
    ("trunc-000.tar", "corrupt or truncated shard"),
    ("mixed-000.tar:badmp4.mp4", "cannot decode video"),
])
def test_bad_input_raises_with_file_and_reason(bad_shards, name, reason):
    ds = wds(bad_shards / name.split(":")[0], on_error="raise", num_frames=4)
    with pytest.raises(vio.BadSampleError, match=reason) as exc:
        list(ds)
    assert name.split(":")[0] in str(exc.value)


def test_short_clip_and_bad_image_raise(tmp_path):
    write_tar(tmp_path / "a.tar", encode_sample("short", synthetic_clip(1, 2), "npy", None, {}).items())
    with pytest.raises(vio.BadSampleError, match="needs 4 frames.*has 2"):
        list(wds(tmp_path / "a.tar", on_error="raise", resolution=16))
    png = list(encode_sample("bad", synthetic_clip(2, 5), "png", None, {}).items())
    png[0] = (png[0][0], b"\x89PNG broken")
    write_tar(tmp_path / "b.tar", png)
    with pytest.raises(vio.BadSampleError, match=r"b.tar:bad.0000.png: unreadable image"):
        list(wds(tmp_path / "b.tar", on_error="raise", resolution=16))


def test_resampled_all_corrupt_fails_instead_of_hanging(tmp_path):
    for i in range(2):
        (tmp_path / f"junk-{i}.tar").write_bytes(b"this is not a tar file" * 40)
    ds = wds(tmp_path, resampled=True, resolution=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="gave no usable clip"):
            next(iter(ds))


def test_each_pass_advances_the_epoch_in_step(shards8):
    """Re-iterating (num_workers=0 or persistent workers) gives a new shard order; set_epoch rewinds."""
    ds = wds(shards8, seed=0)
    first, second = [x["key"] for x in ds], [x["key"] for x in ds]
    assert sorted(first) == sorted(second) and first != second
    ds.set_epoch(0)
    assert [x["key"] for x in ds] == first
    dl = torch.utils.data.DataLoader(wds(shards8, rank=0, world_size=1), batch_size=3, num_workers=2,
                                     persistent_workers=True)
    for _ in range(2):  # every pass still sees each clip exactly once
        keys = [k for b in dl for k in b["key"]]
        assert len(keys) == 24 and len(set(keys)) == 24


def test_unavailable_without_optional_deps(monkeypatch):
    import sys

    P = load_plugins(entry_points=False)
    monkeypatch.setitem(sys.modules, "webdataset", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "av", None)
    for name, extra, what in (("webdataset", "data", "webdataset"), ("video_folder", "video", "PyAV")):
        entry = P["datasets"].get(name)
        av = entry.availability()
        assert not av.ok and what in av.reason and entry.extra == extra
        with pytest.raises(Exception, match=rf"fvdm\[{extra}\]"):
            P["datasets"].build({"name": name, "urls" if name == "webdataset" else "root": "x"})
    assert P["datasets"].get("moving_digits").availability().ok


def test_truncated_shard_yields_every_complete_sample_before_the_cut(tmp_path):
    from fvdm.plugins.datasets.shards import iter_tar_samples

    members = [(f"s{i}.bin", bytes([i]) * 4000) for i in range(3)]  # 3 one-member samples
    write_tar(tmp_path / "t.tar", members)
    data = (tmp_path / "t.tar").read_bytes()
    cut = data.index(b"\x02" * 4000) + 1000  # inside the third sample's data
    (tmp_path / "t.tar").write_bytes(data[:cut])
    got = []
    with pytest.raises(vio.BadSampleError, match="truncated"):
        for key, files in iter_tar_samples(str(tmp_path / "t.tar")):
            got.append((key, files["bin"]))
    assert got == [("s0", b"\x00" * 4000), ("s1", b"\x01" * 4000)]  # s1 used to be lost with the cut


def test_manifest_checksums_are_verified_when_the_dataset_opens(tmp_path):
    """Flipped bytes in a shard decode into corrupt frames without error; the manifest's sha256 catches them."""
    from fvdm.plugins.datasets.pack import make_digits

    m = make_digits(tmp_path / "d", split="val", num_clips=8, num_frames=4, resolution=16, shard_size=4000,
                    progress=False)
    assert m["num_shards"] >= 2
    first = tmp_path / "d" / m["shards"][0]["name"]
    raw = bytearray(first.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # inside a sample's data: the tar still parses
    first.write_bytes(bytes(raw))
    with pytest.raises(vio.BadSampleError, match="sha256 differs from manifest.json"):
        wds(tmp_path / "d", num_frames=4, on_error="raise")
    with pytest.warns(RuntimeWarning, match="sha256 differs"):
        ds = wds(tmp_path / "d", num_frames=4)
    assert str(first) not in ds.shards and ds.skip_counts()["corrupt"] == 1
    assert len(wds(tmp_path / "d", num_frames=4, verify_checksums=False).shards) == m["num_shards"]
