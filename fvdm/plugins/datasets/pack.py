"""Pack clips into webdataset shards, inspect shards, and write moving_digits as shards.

Shards are plain tar files ``shard-000000.tar, ...`` written deterministically
(fixed mtime/owner, so the same input gives byte-identical shards) and rolled over
at ``shard_size`` bytes; ``manifest.json`` beside them records counts, frame sizes,
classes, the pack settings and each shard's sha256. Each sample is one clip:
``KEY.npy`` (uint8 (F, H, W, C), lossless, the default), or ``KEY.mp4``, or
``KEY.0000.png ...``/``.jpg``, plus ``KEY.cls`` (label) and ``KEY.json`` (provenance, and the
video's sidecar ``caption`` when it has one). With an autoencoder and/or a text encoder the pack
also stores each clip's latent and caption embedding (``pack_latents``), and the pixels only when
asked to keep them. A pack writes into a hidden folder beside ``dst`` and moves the result into
place at the end, so a failed pack leaves no partial output.
Reading shards back (URL expansion, tar members, a sample's frames) lives in ``shards``.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import tarfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from fvdm.core.atomic import atomic_write, staged_directory
from fvdm.core.hashing import sha256_file
from fvdm.plugins.datasets import video_io as vio
from fvdm.plugins.datasets.moving_digits import MovingDigits
from fvdm.plugins.datasets.pack_latents import PackEncoders
from fvdm.plugins.datasets.shards import (LATENT, MANIFEST, NULL_TEXT, TEXT, all_frames, expand_urls, has_frames,
                                          iter_tar_samples, load_float_array, manifest_checksums)
from fvdm.plugins.datasets.video_folder import VideoFolder

MANIFEST_VERSION = 1
STORAGE_FORMATS = ("npy", "mp4", "png", "jpg")
LATENT_GRID_NOTE = "latent shards: no pixel grid (use --keep-pixels when packing, or decode with the autoencoder)"


def _safe_key(text: str) -> str:
    """Tar-member-safe sample key: no dots (webdataset splits keys at the first dot) or slashes."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text.replace("/", "__")).strip("_") or "clip"


def encode_sample(key: str, frames: np.ndarray | None, storage: str, label: int | None, meta: dict[str, Any],
                  fps: int = 8, extra: Mapping[str, bytes] | None = None) -> dict[str, bytes]:
    """One clip -> ``{member name: bytes}``; ``frames`` None stores no pixels (a latents-only pack), ``extra``
    maps more member extensions (``latent.npy``, ``text.npy``) to their bytes."""
    files = {} if frames is None else pixel_members(key, frames, storage, fps)
    for ext, data in (extra or {}).items():
        files[f"{key}.{ext}"] = data
    if label is not None:
        files[f"{key}.cls"] = str(int(label)).encode()
    files[f"{key}.json"] = json.dumps(meta, sort_keys=True).encode()
    return files


def pixel_members(key: str, frames: np.ndarray, storage: str, fps: int = 8) -> dict[str, bytes]:
    """uint8 (F, H, W, C) frames -> their members in ``storage`` (one ``.npy``/``.mp4``, or one image per frame)."""
    if storage == "npy":
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(frames, dtype=np.uint8), allow_pickle=False)
        return {f"{key}.npy": buf.getvalue()}
    if storage == "mp4":
        h, w = frames.shape[1:3]
        if h % 2 or w % 2:
            raise ValueError(f"mp4 storage needs even frame sizes, got {h}x{w}; use --resize with an even size")
        return {f"{key}.mp4": vio.encode_video_bytes(frames, fps=fps)}
    if storage in ("png", "jpg"):
        return {f"{key}.{i:04d}.{storage}": vio.encode_image(f, storage) for i, f in enumerate(frames)}
    raise ValueError(f"unknown storage {storage!r}; choose one of {STORAGE_FORMATS}")


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
    atomic_write(dst / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2) + "\n"))
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


def staged_output(dst: Path) -> Any:
    """A hidden folder beside ``dst`` to write into: on success its files move into ``dst`` (the manifest
    last, so a reader never finds a manifest listing shards not yet there); on failure it is removed."""
    if dst.exists() and not dst.is_dir():
        raise ValueError(f"output {dst} exists and is not a folder; choose another output folder")
    return staged_directory(dst, merge=True, last=MANIFEST)


def pack_folder(src: "str | Path", dst: "str | Path", *, shard_size: "int | str" = "1GB", frames: int = 16,
                stride: int = 1, resize: int | None = None, channels: int = 3, storage: str = "npy",
                clips_per_video: int = 0, split_file: str | None = None, labels: str = "auto",
                on_error: str = "skip", progress: bool = True, fps: int = 8,
                autoencoder: "str | Mapping[str, Any] | None" = None, autoencoder_params: Sequence[str] = (),
                text_encoder: "str | Mapping[str, Any] | None" = None, text_encoder_params: Sequence[str] = (),
                keep_pixels: bool = False, missing_caption: str = "refuse", encode_batch: int = 4,
                device: str = "cpu", plugins: Any = None) -> dict[str, Any]:
    """Convert a ``video_folder`` dataset into webdataset shards with a manifest.

    Each video gives its non-overlapping clips of ``frames`` frames ``stride`` apart,
    resized (shorter side to ``resize``, center crop) exactly as ``video_folder``
    reads them with ``offset: start``; reading the shards back gives the same frames
    (bit-identical for ``npy`` without resize; within one uint8 step with resize).

    ``autoencoder``/``text_encoder`` (a spec: ``name``, ``name:PATH`` or a mapping, plus ``KEY=VALUE``
    params) also store each clip's latent and caption embedding, ``encode_batch`` clips per encoder call;
    with an autoencoder the pixels are kept only with ``keep_pixels``. A text encoder needs every video's
    sidecar caption unless ``missing_caption="empty"`` embeds the empty prompt for those without one.
    Encoders, clip shape and captions are all checked before anything is written.
    """
    if storage not in STORAGE_FORMATS:
        raise ValueError(f"unknown storage {storage!r}; choose one of {STORAGE_FORMATS}")
    if missing_caption not in ("refuse", "empty"):
        raise ValueError(f"missing_caption {missing_caption!r} is neither 'refuse' nor 'empty'; choose one")
    if encode_batch < 1:
        raise ValueError(f"encode_batch {encode_batch} must be >= 1; encode at least one clip per call")
    dst = Path(dst)
    ds = VideoFolder(VideoFolder.Config(root=str(src), num_frames=frames, stride=stride, resolution=resize,
                                        channels=channels, offset="start", on_error=on_error,
                                        split_file=split_file, labels=labels))  # type: ignore[arg-type]
    enc = None
    if autoencoder is not None or text_encoder is not None or autoencoder_params or text_encoder_params:
        enc = PackEncoders(autoencoder, text_encoder, autoencoder_params=autoencoder_params,
                           text_encoder_params=text_encoder_params, plugins=plugins, device=device)
        enc.check(frames, channels, ds.resolution)
    captions = [ds.caption(i) for i in range(len(ds))]
    missing = [i for i, c in enumerate(captions) if c is None]
    if enc is not None and enc.text is not None and missing and missing_caption == "refuse":
        raise ValueError(f"{len(missing)} of {len(ds)} videos have no caption (e.g. {ds.entries[missing[0]][0]} "
                         f"needs {ds.caption_path(missing[0]).relative_to(ds.root)}); add the .txt sidecars, or "
                         "pass --missing-caption empty to embed the empty prompt for them")
    pixels = enc is None or enc.ae is None or keep_pixels
    skipped: list[dict[str, str]] = []
    frame_size: list[int] | None = None
    captioned = num_clips = 0
    t0 = time.time()
    with staged_output(dst) as out, _progress(len(ds), "pack", progress) as bar:
        writer = ShardWriter(out, shard_size)
        pending: list[tuple[str, torch.Tensor, np.ndarray, str, int | None, dict[str, Any]]] = []

        def flush() -> None:
            if not pending:  # the clip count was a multiple of encode_batch: the last batch was flushed already
                return
            extras = enc.encode([p[1] for p in pending], [p[3] for p in pending]) if enc else [{}] * len(pending)
            for (key, _, pix, _, label, meta), extra in zip(pending, extras):
                writer.write(encode_sample(key, pix if pixels else None, storage, label, meta, fps, extra))
            pending.clear()

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
            caption = captions[i]
            for k, s in enumerate(starts):
                # the float clip video_folder yields is what gets encoded; the pixels are its uint8 rounding
                clip = vio.to_model_clip(video[s:s + (frames - 1) * stride + 1:stride], channels=channels,
                                         resolution=resize)  # (F, C, H, W) in [-1, 1]
                pix = vio.to_uint8_frames(clip)  # (F, H, W, C)
                frame_size = list(pix.shape)
                meta = {"source": rel, "start": s, "stride": stride, "frames": frames, "label": label,
                        "class": ds.classes[label] if label is not None else None}
                if caption is not None:
                    meta["caption"] = caption
                pending.append((_safe_key(f"{ds.key(i)}__c{k:03d}"), clip, pix, caption or "", label, meta))
                captioned += caption is not None
                num_clips += 1
                if len(pending) >= (encode_batch if enc is not None else 1):
                    flush()
            bar.update(1)
            bar.set_postfix(shards=len(writer.shards), skipped=len(skipped))
        flush()
        shards = writer.close()
        pixel_bytes = {"pixels_uint8": math.prod(frame_size)} if frame_size else {}
        packed = enc.manifest(clips=num_clips, pixel_shape=frame_size) if enc is not None else \
            {"latents": None, "text": None, "bytes_per_clip": pixel_bytes}
        if enc is not None and enc.text is not None:
            (out / NULL_TEXT).write_bytes(enc.null_text())
        return write_manifest(
            out, shards, created_by="fvdm data pack", source=str(src), storage=storage if pixels else None,
            pixels=pixels, frames=frames, stride=stride, resize=resize, channels=channels, frame_size=frame_size,
            classes=ds.classes, num_videos=len(ds), skipped={"count": len(skipped), "items": skipped[:1000]},
            captions={"clips": captioned, "missing_clips": num_clips - captioned,
                      "missing_caption": missing_caption if enc is not None and enc.text is not None else None},
            **packed, seconds=round(time.time() - t0, 3))


def make_digits(dst: "str | Path", *, split: str = "train", num_clips: int | None = None, resolution: int = 32,
                num_frames: int = 16, channels: int = 1, seed: int = 0, shard_size: "int | str" = "64MB",
                storage: str = "npy", progress: bool = True, **digits_cfg: Any) -> dict[str, Any]:
    """Write ``moving_digits`` clips (uint8, label = first digit's class) as shards + manifest."""
    ds = MovingDigits(MovingDigits.Config(split=split, num_clips=num_clips, resolution=resolution,  # type: ignore[arg-type]
                                          num_frames=num_frames, channels=channels, seed=seed,  # type: ignore[arg-type]
                                          class_conditional=True, **digits_cfg))
    t0 = time.time()
    with staged_output(Path(dst)) as out, _progress(len(ds), "make-digits", progress) as bar:
        writer = ShardWriter(out, shard_size)
        for i in range(len(ds)):
            item = ds[i]
            clip = vio.to_uint8_frames(item["video"])  # (F, H, W, C)
            meta = {"source": item["key"], "index": i, "label": item["label"]}
            writer.write(encode_sample(_safe_key(item["key"]), clip, storage, item["label"], meta))
            bar.update(1)
        return write_manifest(
            out, writer.close(), created_by="fvdm data make-digits",
            source=f"moving_digits {ds.cfg.model_dump_json()}", storage=storage, frames=num_frames, stride=1,
            resize=resolution, channels=channels, frame_size=[num_frames, resolution, resolution, channels],
            classes=[str(c) for c in range(10)], num_videos=len(ds), skipped={"count": 0, "items": []},
            seconds=round(time.time() - t0, 3))


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
                        if has_frames(files) or LATENT not in files:
                            row = _sample_row(key, files, shard, grid_frames)
                            if want_row:
                                rows.append(row)
                        else:  # latents only: check the arrays load; there are no pixels for the grid
                            _check_arrays(key, files, shard)
                            report["note"] = LATENT_GRID_NOTE
                        report["decoded"] = report.get("decoded", 0) + 1
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


def _check_arrays(key: str, files: dict[str, bytes], shard: str) -> None:
    """A latents-only sample's packed arrays load: latent (f, c, h, w), caption rows (n, dim) when present."""
    load_float_array(files[LATENT], f"{shard}:{key}.{LATENT}", 4)
    if TEXT in files:
        load_float_array(files[TEXT], f"{shard}:{key}.{TEXT}", 2)


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
