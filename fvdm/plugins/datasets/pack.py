"""Pack clips into webdataset shards, inspect shards, and write moving_digits as shards.

Shards are plain tar files ``shard-000000.tar, ...`` written deterministically
(fixed mtime/owner, so the same input gives byte-identical shards) and rolled over
at ``shard_size`` bytes; ``manifest.json`` beside them records counts, frame sizes,
classes, the pack settings and each shard's sha256. Each sample is one clip:
``KEY.npy`` (uint8 (F, H, W, C), lossless, the default), or ``KEY.mp4``, or
``KEY.0000.png ...``/``.jpg``, plus ``KEY.cls`` (label) and ``KEY.json`` (provenance).
Reading shards back (URL expansion, tar members, a sample's frames) lives in ``shards``.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fvdm.core.hashing import sha256_file
from fvdm.plugins.datasets import video_io as vio
from fvdm.plugins.datasets.moving_digits import MovingDigits
from fvdm.plugins.datasets.shards import MANIFEST, all_frames, expand_urls, iter_tar_samples, manifest_checksums
from fvdm.plugins.datasets.video_folder import VideoFolder

MANIFEST_VERSION = 1
STORAGE_FORMATS = ("npy", "mp4", "png", "jpg")


def _safe_key(text: str) -> str:
    """Tar-member-safe sample key: no dots (webdataset splits keys at the first dot) or slashes."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text.replace("/", "__")).strip("_") or "clip"


def encode_sample(key: str, frames: np.ndarray, storage: str, label: int | None, meta: dict[str, Any],
                  fps: int = 8) -> dict[str, bytes]:
    """One clip -> ``{member name: bytes}``."""
    files: dict[str, bytes] = {}
    if storage == "npy":
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(frames, dtype=np.uint8), allow_pickle=False)
        files[f"{key}.npy"] = buf.getvalue()
    elif storage == "mp4":
        h, w = frames.shape[1:3]
        if h % 2 or w % 2:
            raise ValueError(f"mp4 storage needs even frame sizes, got {h}x{w}; use --resize with an even size")
        files[f"{key}.mp4"] = vio.encode_video_bytes(frames, fps=fps)
    elif storage in ("png", "jpg"):
        for i, f in enumerate(frames):
            files[f"{key}.{i:04d}.{storage}"] = vio.encode_image(f, storage)
    else:
        raise ValueError(f"unknown storage {storage!r}; choose one of {STORAGE_FORMATS}")
    if label is not None:
        files[f"{key}.cls"] = str(int(label)).encode()
    files[f"{key}.json"] = json.dumps(meta, sort_keys=True).encode()
    return files


class ShardWriter:
    """Writes samples to ``dst/shard-%06d.tar``, starting a new shard past ``shard_size`` bytes."""

    def __init__(self, dst: "str | Path", shard_size: "int | str" = "1GB", pattern: str = "shard-%06d.tar"):
        self.dst = Path(dst)
        self.dst.mkdir(parents=True, exist_ok=True)
        self.limit = vio.parse_size(shard_size)
        self.pattern = pattern
        self.shards: list[dict[str, Any]] = []
        self._tar: tarfile.TarFile | None = None
        self._size = 0
        self._count = 0

    def _open(self) -> None:
        name = self.pattern % len(self.shards)
        self._path = self.dst / name
        self._tar = tarfile.open(self._path, "w", format=tarfile.USTAR_FORMAT)
        self._size, self._count = 0, 0
        self.shards.append({"name": name, "samples": 0, "bytes": 0, "sha256": ""})

    def _close(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        self._tar = None
        info = self.shards[-1]
        info["samples"] = self._count
        info["bytes"] = self._path.stat().st_size
        info["sha256"] = sha256_file(self._path)

    def write(self, files: dict[str, bytes]) -> None:
        size = sum(len(b) + 512 for b in files.values())
        if self._tar is not None and self._count > 0 and self._size + size > self.limit:
            self._close()
        if self._tar is None:
            self._open()
        assert self._tar is not None
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = len(data), 0, 0o644, 0, 0, "", ""
            self._tar.addfile(ti, io.BytesIO(data))
        self._size += size
        self._count += 1

    def close(self) -> list[dict[str, Any]]:
        self._close()
        return self.shards


def write_manifest(dst: Path, shards: list[dict[str, Any]], **info: Any) -> dict[str, Any]:
    manifest = {
        "format_version": MANIFEST_VERSION,
        "num_shards": len(shards),
        "num_samples": sum(s["samples"] for s in shards),
        **info,
        "shards": shards,
    }
    tmp = dst / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, dst / MANIFEST)
    return manifest


def _progress(total: int | None, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="video" if "pack" in desc else "clip", disable=not enabled,
                dynamic_ncols=True)


def clip_starts(num_available: int, num_frames: int, stride: int, clips_per_video: int) -> list[int]:
    """Start frames of the non-overlapping clips of a video (all that fit, or the first N)."""
    span = (num_frames - 1) * stride + 1
    starts = list(range(0, num_available - span + 1, span))
    return starts[:clips_per_video] if clips_per_video > 0 else starts


def pack_folder(src: "str | Path", dst: "str | Path", *, shard_size: "int | str" = "1GB", frames: int = 16,
                stride: int = 1, resize: int | None = None, channels: int = 3, storage: str = "npy",
                clips_per_video: int = 0, split_file: str | None = None, labels: str = "auto",
                on_error: str = "skip", progress: bool = True, fps: int = 8) -> dict[str, Any]:
    """Convert a ``video_folder`` dataset into webdataset shards with a manifest.

    Each video gives its non-overlapping clips of ``frames`` frames ``stride`` apart,
    resized (shorter side to ``resize``, center crop) exactly as ``video_folder``
    reads them with ``offset: start``; reading the shards back gives the same frames
    (bit-identical for ``npy`` without resize; within one uint8 step with resize).
    """
    if storage not in STORAGE_FORMATS:
        raise ValueError(f"unknown storage {storage!r}; choose one of {STORAGE_FORMATS}")
    dst = Path(dst)
    ds = VideoFolder(VideoFolder.Config(root=str(src), num_frames=frames, stride=stride, resolution=resize,
                                        channels=channels, offset="start", on_error=on_error,
                                        split_file=split_file, labels=labels))  # type: ignore[arg-type]
    writer = ShardWriter(dst, shard_size)
    skipped: list[dict[str, str]] = []
    frame_size: list[int] | None = None
    t0 = time.time()
    with _progress(len(ds), "pack", progress) as bar:
        for i in range(len(ds)):
            rel = ds.entries[i][0]
            try:
                video = ds.read_frames(i)  # (T, H, W, C) uint8
                starts = clip_starts(len(video), frames, stride, clips_per_video)
                if not starts:
                    raise vio.BadSampleError(str(ds.root / rel), f"video has {len(video)} frames, a clip needs "
                                             f"{(frames - 1) * stride + 1}", "short")
            except vio.BadSampleError as err:
                if on_error == "raise":
                    raise
                ds.skips.handle(err, "skip")
                skipped.append({"source": err.source, "kind": err.kind, "reason": err.reason})
                bar.update(1)
                continue
            label = ds.labels[i] if ds.labels is not None else None
            for k, s in enumerate(starts):
                clip = video[s:s + (frames - 1) * stride + 1:stride]
                clip = vio.to_uint8_frames(vio.to_model_clip(clip, channels=channels, resolution=resize))
                frame_size = list(clip.shape)
                meta = {"source": rel, "start": s, "stride": stride, "frames": frames, "label": label,
                        "class": ds.classes[label] if label is not None else None}
                writer.write(encode_sample(_safe_key(f"{ds.key(i)}__c{k:03d}"), clip, storage, label, meta, fps))
            bar.update(1)
            bar.set_postfix(shards=len(writer.shards), skipped=len(skipped))
    shards = writer.close()
    return write_manifest(
        dst, shards, created_by="fvdm data pack", source=str(src), storage=storage, frames=frames, stride=stride,
        resize=resize, channels=channels, frame_size=frame_size, classes=ds.classes,
        num_videos=len(ds), skipped={"count": len(skipped), "items": skipped[:1000]},
        seconds=round(time.time() - t0, 3))


def make_digits(dst: "str | Path", *, split: str = "train", num_clips: int | None = None, resolution: int = 32,
                num_frames: int = 16, channels: int = 1, seed: int = 0, shard_size: "int | str" = "64MB",
                storage: str = "npy", progress: bool = True, **digits_cfg: Any) -> dict[str, Any]:
    """Write ``moving_digits`` clips (uint8, label = first digit's class) as shards + manifest."""
    ds = MovingDigits(MovingDigits.Config(split=split, num_clips=num_clips, resolution=resolution,  # type: ignore[arg-type]
                                          num_frames=num_frames, channels=channels, seed=seed,  # type: ignore[arg-type]
                                          class_conditional=True, **digits_cfg))
    dst = Path(dst)
    writer = ShardWriter(dst, shard_size)
    t0 = time.time()
    with _progress(len(ds), "make-digits", progress) as bar:
        for i in range(len(ds)):
            item = ds[i]
            clip = vio.to_uint8_frames(item["video"])  # (F, H, W, C)
            meta = {"source": item["key"], "index": i, "label": item["label"]}
            writer.write(encode_sample(_safe_key(item["key"]), clip, storage, item["label"], meta))
            bar.update(1)
    shards = writer.close()
    return write_manifest(
        dst, shards, created_by="fvdm data make-digits", source=f"moving_digits {ds.cfg.model_dump_json()}",
        storage=storage, frames=num_frames, stride=1, resize=resolution, channels=channels,
        frame_size=[num_frames, resolution, resolution, channels], classes=[str(c) for c in range(10)],
        num_videos=len(ds), skipped={"count": 0, "items": []}, seconds=round(time.time() - t0, 3))


def inspect_shards(urls: "str | list[str]", *, grid: "str | Path | None" = None, grid_samples: int = 8,
                   grid_frames: int = 8, verify: bool = True, decode_all: bool = False) -> dict[str, Any]:
    """Count samples per shard, list member types and errors, check sha256 against the manifest,
    and optionally save a grid PNG (one row per sample, ``grid_frames`` frames across).

    ``decode_all`` decodes every sample's frames (not only the grid's), so a damaged member anywhere is
    reported; ``report["decoded"]`` counts the samples that decoded."""
    shards = expand_urls(urls)
    if not shards:
        raise FileNotFoundError(f"no shards match {urls!r}")
    expected = manifest_checksums(shards)
    report: dict[str, Any] = {"shards": [], "num_samples": 0, "errors": [], "extensions": {}, "labels": {}}
    rows: list[np.ndarray] = []
    for shard in shards:
        entry: dict[str, Any] = {"name": shard, "samples": 0}
        try:
            for key, files in iter_tar_samples(shard):
                entry["samples"] += 1
                for ext in files:
                    e = ext.rsplit(".", 1)[-1] if re.match(r"^\d+\.", ext) else ext
                    report["extensions"][e] = report["extensions"].get(e, 0) + 1
                if "cls" in files:
                    lab = files["cls"].decode(errors="replace").strip()
                    report["labels"][lab] = report["labels"].get(lab, 0) + 1
                want_row = grid is not None and len(rows) < grid_samples
                if want_row or decode_all:
                    try:
                        row = _sample_row(key, files, shard, grid_frames)
                        report["decoded"] = report.get("decoded", 0) + 1
                        if want_row:
                            rows.append(row)
                    except vio.BadSampleError as err:
                        report["errors"].append({"source": err.source, "kind": err.kind, "reason": err.reason})
        except vio.BadSampleError as err:
            report["errors"].append({"source": err.source, "kind": err.kind, "reason": err.reason})
        if verify and shard in expected and os.path.isfile(shard):
            entry["sha256_ok"] = sha256_file(shard) == expected[shard]
            if not entry["sha256_ok"]:
                report["errors"].append({"source": shard, "kind": "corrupt", "reason": "sha256 differs from manifest"})
        report["shards"].append(entry)
        report["num_samples"] += entry["samples"]
    report["num_shards"] = len(shards)
    if grid is not None and rows:
        save_grid(rows, grid)
        report["grid"] = str(grid)
    return report


def _sample_row(key: str, files: dict[str, bytes], shard: str, n: int) -> np.ndarray:
    frames = all_frames(key, files, shard)
    idx = np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int)
    row = frames[idx]
    if row.shape[-1] == 1:
        row = np.repeat(row, 3, axis=-1)
    return np.concatenate(list(row), axis=1)  # (H, n*W, 3)


def save_grid(rows: list[np.ndarray], path: "str | Path", min_height: int = 64) -> None:
    from PIL import Image

    width = max(r.shape[1] for r in rows)
    height = max(r.shape[0] for r in rows)
    canvas = np.zeros((height * len(rows), width, 3), np.uint8)
    for i, r in enumerate(rows):
        canvas[i * height:i * height + r.shape[0], : r.shape[1]] = r
    im = Image.fromarray(canvas)
    if height < min_height:  # small clips (32 px digits): enlarge so the PNG is viewable
        s = -(-min_height // height)
        im = im.resize((im.width * s, im.height * s), Image.NEAREST)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
