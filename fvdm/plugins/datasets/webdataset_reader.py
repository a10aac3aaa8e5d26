"""webdataset: video clips from tar shards (local paths, directories, globs, brace patterns, URLs).

A sample is the group of tar members sharing a key; which members hold its frames
(video, array or numbered images) and its label is decided in ``shards``, which this
module reads through.

Splitting (non-resampled): shards are ordered (shuffled per epoch with ``seed``,
identically on every rank), then dealt round-robin to the ``world_size x
num_workers`` global workers, so every clip is seen exactly once per epoch. With
fewer shards than global workers the reader (``split_by: auto``, ``on_error:
skip``) warns, counts it and splits by sample instead: every worker reads every
shard and keeps every ``total``-th sample; ``on_error: raise`` fails instead.

Resampled mode (training): each worker draws shards with replacement forever, or
for ``epoch_length`` clips per rank per epoch.

Packed encodings (``fvdm data pack --autoencoder/--text-encoder``): when the manifest lists
latents, items carry ``"latent"`` (f, c, h, w) float32 and ``"video"`` only if the pixels
were kept; when it lists text, ``"text_emb"`` (max_length, dim) float32, zero-padded; when
clips have captions, ``"caption"`` ("" for a clip without one). The attributes ``latents``,
``text`` (the manifest's entries) and ``null_text`` (the empty prompt, (max_length, dim))
describe them; ``num_frames``/``channels``/``resolution`` stay the pixel clip's, so the build
sizes latents from the configured autoencoder, and ``check_autoencoder`` refuses one that is
not the autoencoder the latents were made with. A latent is of the whole packed clip: the
config must read whole clips (``num_frames`` as packed, ``stride: 1``, no flip).

Reproducibility: the clip offset and flip of a sample are drawn from a hash of
``(seed, epoch, key)``, so they do not depend on the worker count or which worker
reads it. Shard order depends on ``(seed, epoch)`` only. The order in which
workers' samples interleave, the shuffle buffer and resampled draws do depend on
the worker layout.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from fvdm.core.errors import DataError
from fvdm.core.hashing import sha256_file
from fvdm.core.interfaces import PluginConfig
from fvdm.plugins.datasets import video_io as vio
from fvdm.plugins.datasets.shards import (NULL_TEXT, expand_urls, iter_tar_samples, load_float_array,
                                          manifest_checksums, manifest_entries, packed_encodings, pad_text,
                                          same_autoencoder, sample_frames, sample_label, sample_latent, sample_meta,
                                          sample_text)


def available() -> tuple[bool, str]:
    try:
        import webdataset  # noqa: F401
    except Exception as exc:
        return False, f"webdataset is not importable ({type(exc).__name__}: {exc})"
    return True, ""


def _rank_world(cfg: "WebDatasetVideos.Config") -> tuple[int, int]:
    if cfg.rank is not None and cfg.world_size is not None:
        return cfg.rank, cfg.world_size
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class WebDatasetVideos(torch.utils.data.IterableDataset):
    """Clips from webdataset tar shards (mp4 / npy / npz / numbered images), split over ranks and workers.

    Items: ``{"video": (F, C, H, W) float32 in [-1, 1], "key": str, "label"?: int}``; packed shards add
    ``"latent"`` (f, c, h, w) (and drop "video" unless pixels were kept), ``"text_emb"`` (max_length, dim),
    ``"caption"`` str. Call ``set_epoch(e)`` at each epoch for a new shard order and new clip offsets.
    """

    class Config(PluginConfig):
        urls: str | list[str] = Field(..., description="shards: paths, dirs, globs, brace patterns, URLs, manifest.json")
        num_frames: int = Field(16, ge=1)
        stride: int = Field(1, ge=1, description="take every stride-th frame")
        offset: Literal["random", "start", "center"] = "random"
        resolution: int | None = Field(None, ge=4, description="shorter side resize + center crop; None: from data")
        channels: Literal[1, 3] = 3
        flip: bool = Field(False, description="random horizontal flip (p=0.5, seeded per sample key)")
        num_classes: int = Field(0, ge=0, description="> 0: items carry 'label' from .cls/.json")
        shuffle_shards: bool = True
        shuffle_buffer: int = Field(0, ge=0, description="sample shuffle buffer per worker (0: off)")
        resampled: bool = Field(False, description="draw shards with replacement (training)")
        epoch_length: int | None = Field(None, ge=1, description="clips per rank per epoch in resampled mode; None: endless")
        split_by: Literal["auto", "shard", "sample"] = "auto"
        rank: int | None = Field(None, ge=0, description="None: torch.distributed, then $RANK")
        world_size: int | None = Field(None, ge=1, description="None: torch.distributed, then $WORLD_SIZE")
        on_error: Literal["skip", "raise"] = Field("skip", description="skip bad input with a counted warning, or fail")
        verify_checksums: bool = Field(
            True, description="when the dataset opens, check every local shard listed in a manifest.json against "
            "its sha256 (reads each shard once, ~1 s per GB; flipped bytes in mp4 data otherwise decode into "
            "corrupt frames without error); a mismatch is a skipped shard or, with on_error: raise, an error")
        seed: int = 0

        @model_validator(mode="after")
        def _check(self) -> "WebDatasetVideos.Config":
            if (self.rank is None) != (self.world_size is None):
                raise ValueError("set both rank and world_size, or neither (then torch.distributed/env decides)")
            if self.rank is not None and self.rank >= self.world_size:
                raise ValueError(f"rank {self.rank} must be < world_size {self.world_size}")
            if self.epoch_length is not None and not self.resampled:
                raise ValueError("epoch_length only applies with resampled: true")
            return self

    def __init__(self, cfg: "WebDatasetVideos.Config"):
        super().__init__()
        self.cfg = cfg
        self.shards = expand_urls(cfg.urls)
        if not self.shards:
            raise FileNotFoundError(
                f"webdataset: no shards match {cfg.urls!r}; give .tar paths, a directory of shards, "
                "a glob, a brace pattern (data-{000..009}.tar) or URLs")
        self.num_frames = cfg.num_frames
        self.channels = cfg.channels
        self.num_classes = cfg.num_classes
        self.epoch = 0
        self._passes = 0  # passes started in this process since set_epoch (see __iter__)
        self.skips = vio.SkipCounter("webdataset")
        if cfg.verify_checksums:
            self._verify_checksums()
        packed = packed_encodings(self.shards)
        #: the manifest's ``latents`` entry (autoencoder spec, latent_shape [f, c, h, w], ...) or None
        self.latents: dict[str, Any] | None = packed["latents"] if packed else None
        #: the manifest's ``text`` entry (text_encoder spec, encoder_id, dim, max_length) or None
        self.text: dict[str, Any] | None = packed["text"] if packed else None
        #: the empty prompt's embedding (max_length, dim) float32, for guidance dropout; None without text
        self.null_text: torch.Tensor | None = None
        self.pixels = packed["pixels"] if packed else True  # False: latents only, no "video"
        self.captions = bool(packed and packed["captions"])  # items carry "caption"
        if self.text is not None:
            self.null_text = self._load_null_text(Path(packed["dir"]) / self.text.get("null_text", NULL_TEXT))
        if self.latents is not None:
            self.resolution = self._check_whole_clips(packed)
        else:
            self.resolution = cfg.resolution if cfg.resolution is not None else self._peek_resolution()

    def _load_null_text(self, path: Path) -> torch.Tensor:
        if not path.is_file():
            raise FileNotFoundError(f"webdataset: the manifest lists text embeddings but {path} is missing; copy it "
                                    "with the shards or re-pack with --text-encoder")
        rows = load_float_array(path.read_bytes(), str(path), 2)
        return torch.from_numpy(pad_text(rows, int(self.text["max_length"]), int(self.text["dim"]), str(path)))

    def _check_whole_clips(self, packed: dict[str, Any]) -> int:
        """A latent encodes one whole packed clip: refuse a config reading other frames; returns the resolution."""
        cfg = self.cfg
        f, h, w, c = packed["frame_size"]
        fixes = [fix for bad, fix in (
            (cfg.num_frames != f, f"num_frames: {f}"), (cfg.stride != 1, "stride: 1 (pack with --stride instead)"),
            (cfg.flip, "flip: false (a flipped latent is not the latent of the flipped clip)"),
            (cfg.resolution not in (None, h), f"resolution: {h} (or leave it out)"),
            (cfg.channels != c, f"channels: {c}")) if bad]
        if fixes:
            raise ValueError(f"webdataset: the shards hold latents of whole {f}-frame {h}x{w} {c}-channel clips; "
                             f"set {', '.join(fixes)}")
        return int(h)

    def check_autoencoder(self, spec: dict[str, Any], fingerprint: str | None = None) -> None:
        """Refuse an autoencoder ``spec`` (``{"name": ..., **settings}``) that did not make the packed latents.

        ``fingerprint``: the configured autoencoder's weights id when it has one; equal to the packed one, the
        weights may live at another path. Nothing to check without packed latents."""
        if self.latents is None:
            return
        packed = self.latents["autoencoder"]
        if not same_autoencoder(packed, spec, self.latents.get("fingerprint"), fingerprint):
            raise ValueError(f"the shards' latents were made by autoencoder {json.dumps(packed, sort_keys=True)}, "
                             f"but the config sets {json.dumps(spec, sort_keys=True)}; set autoencoder to the packed "
                             "one, or re-pack the shards with `fvdm data pack --autoencoder ...`")

    def _verify_checksums(self) -> None:
        """Drop (or, on_error: raise, refuse) local shards whose bytes differ from the manifest's sha256."""
        expected = manifest_checksums(self.shards)
        bad = []
        for shard in self.shards:
            want = expected.get(shard)
            if want and os.path.isfile(shard) and sha256_file(shard) != want:
                bad.append(shard)
                self.skips.handle(vio.BadSampleError(shard, "sha256 differs from manifest.json (damaged shard); "
                                                     "re-copy it or repack", "corrupt"), self.cfg.on_error)
        self.shards = [s for s in self.shards if s not in bad]
        if not self.shards:
            raise DataError(f"webdataset: every shard of {self.cfg.urls!r} fails its manifest checksum; re-copy "
                            "the data or repack it")

    # -- public helpers ----------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch`` for the next pass (shard order, clip offsets, flips)."""
        self.epoch = int(epoch)
        self._passes = 0

    def skip_counts(self) -> dict[str, int]:
        """Skipped inputs by kind, summed over DataLoader workers (for the log and TensorBoard)."""
        return self.skips.counts()

    def __len__(self) -> int:
        if self.cfg.resampled and self.cfg.epoch_length is not None:
            return self.cfg.epoch_length
        n = self._manifest_count()
        if n is None:
            raise TypeError("webdataset: length unknown (no manifest.json next to the shards); "
                            "use resampled: true with epoch_length, or shards written by `fvdm data pack`")
        return -(-n // _rank_world(self.cfg)[1])

    def _manifest_count(self) -> int | None:
        counts = manifest_entries(self.shards)
        if not all(s in counts for s in self.shards):
            return None
        return sum(int(counts[s]["samples"]) for s in self.shards)

    def _peek_resolution(self) -> int:
        tried = 0
        for shard in self.shards[:4]:
            try:
                for key, files in iter_tar_samples(shard):
                    tried += 1
                    if tried > 32:
                        break
                    try:
                        frames = sample_frames(key, files, num_frames=1, stride=1, offset="start",
                                               rng=np.random.default_rng(0), where=shard)
                    except vio.BadSampleError:
                        continue  # a bad sample is reported when iterating, by on_error
                    h, w = frames.shape[1:3]
                    if h != w:
                        raise ValueError(f"webdataset: frames in {shard} are {h}x{w}; set resolution: R to "
                                         "resize the shorter side to R and center crop")
                    return int(h)
            except vio.BadSampleError:
                continue
        raise ValueError(f"webdataset: could not read a sample from {self.shards[:4]} to infer the resolution; "
                         "set resolution explicitly")

    # -- iteration ----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rank, world = _rank_world(self.cfg)
        # Each pass in the same process (num_workers=0, or persistent DataLoader workers, whose copy
        # of the dataset lives on) advances the epoch, so a loop over the loader sees new orders and
        # offsets without set_epoch; every worker advances in step, so the split stays exact.
        epoch, self._passes = self.epoch + self._passes, self._passes + 1
        return self.iter_partition(rank, world, worker, num_workers, epoch=epoch)

    def iter_partition(self, rank: int, world_size: int, worker: int, num_workers: int,
                       epoch: int | None = None) -> Iterator[dict[str, Any]]:
        """The clips global worker ``rank * num_workers + worker`` yields in ``epoch`` (default: set_epoch's)."""
        e = self.epoch if epoch is None else int(epoch)
        it = self._resampled(rank, world_size, worker, num_workers, e) if self.cfg.resampled else \
            self._one_pass(rank, world_size, worker, num_workers, e)
        if self.cfg.shuffle_buffer > 0:
            it = self._shuffle(it, vio.key_seed(self.cfg.seed, e, "buffer", rank, worker), self.cfg.shuffle_buffer)
        return it

    def _ordered_shards(self, epoch: int) -> list[str]:
        shards = list(self.shards)
        if self.cfg.shuffle_shards:
            perm = vio.key_seed(self.cfg.seed, epoch, "shards").permutation(len(shards))
            shards = [shards[i] for i in perm]
        return shards

    def _one_pass(self, rank: int, world: int, worker: int, num_workers: int, epoch: int
                  ) -> Iterator[dict[str, Any]]:
        total, gid = world * num_workers, rank * num_workers + worker
        shards = self._ordered_shards(epoch)
        mode = self.cfg.split_by
        if mode in ("auto", "shard") and len(shards) < total:
            err = vio.BadSampleError(
                f"{len(shards)} shard(s)",
                f"fewer shards than world_size x workers = {world} x {num_workers} = {total}; "
                "some workers would get no data. Re-pack with more shards (smaller --shard-size), use fewer "
                "workers, or set on_error: skip (or split_by: sample) to split by sample", "shards")
            if gid == 0:
                self.skips.handle(err, self.cfg.on_error)  # counted once per epoch
            elif self.cfg.on_error == "raise":
                raise err
            mode = "sample"
        elif mode == "auto":
            mode = "shard"
        if mode == "shard":
            mine = [(i, s) for i, s in enumerate(shards) if i % total == gid]
            for i, shard in mine:
                yield from self._shard_items(shard, epoch, owner=True)
        else:  # every worker reads every shard and keeps every total-th sample
            counter = [0]
            for i, shard in enumerate(shards):
                yield from self._shard_items(shard, epoch, owner=(i % total == gid), pick=(counter, total, gid))

    def _resampled(self, rank: int, world: int, worker: int, num_workers: int, epoch: int
                   ) -> Iterator[dict[str, Any]]:
        rng = vio.key_seed(self.cfg.seed, epoch, "resample", rank, world, worker, num_workers)
        n = self.cfg.epoch_length
        quota = None if n is None else n // num_workers + (worker < n % num_workers)
        yielded, empty_draws = 0, 0
        while quota is None or yielded < quota:
            shard = self.shards[int(rng.integers(len(self.shards)))]
            got = 0
            for item in self._shard_items(shard, epoch, owner=True):
                yield item
                got += 1
                yielded += 1
                if quota is not None and yielded >= quota:
                    return
            empty_draws = 0 if got else empty_draws + 1
            if empty_draws > 2 * len(self.shards) + 8:  # never spin forever on unusable shards
                raise DataError(
                    f"webdataset: {empty_draws} shard draws in a row gave no usable clip "
                    f"(skipped so far: {self.skip_counts()}); check the shards with `fvdm data inspect`")

    def _shard_items(self, shard: str, epoch: int, *, owner: bool, pick: tuple[list[int], int, int] | None = None
                     ) -> Iterator[dict[str, Any]]:
        try:
            for key, files in iter_tar_samples(shard):
                if pick is not None:
                    counter, total, gid = pick
                    mine = counter[0] % total == gid
                    counter[0] += 1
                    if not mine:
                        continue
                try:
                    yield self._make_item(key, files, shard, epoch)
                except vio.BadSampleError as err:
                    self.skips.handle(err, self.cfg.on_error)
        except vio.BadSampleError as err:  # the shard itself is damaged: skip its remainder
            if self.cfg.on_error == "raise":
                raise
            if owner:
                self.skips.handle(err, "skip")

    def _make_item(self, key: str, files: dict[str, bytes], shard: str, epoch: int) -> dict[str, Any]:
        name = f"{shard}:{key}"
        item: dict[str, Any] = {"key": key}
        if self.latents is not None:
            item["latent"] = torch.from_numpy(sample_latent(files, name, self.latents["latent_shape"]))  # (f, c, h, w)
        if self.pixels:
            item["video"] = self._video(key, files, shard, epoch)  # (F, C, H, W)
        if self.text is not None:
            item["text_emb"] = torch.from_numpy(sample_text(files, name, int(self.text["max_length"]),
                                                            int(self.text["dim"])))  # (max_length, dim)
        if self.captions:  # every item, so a batch collates them into a list of str
            item["caption"] = str(sample_meta(files).get("caption", ""))
        if self.num_classes > 0:
            item["label"] = sample_label(files, name)
        return item

    def _video(self, key: str, files: dict[str, bytes], shard: str, epoch: int) -> torch.Tensor:
        rng = vio.key_seed(self.cfg.seed, epoch, key)
        frames = sample_frames(key, files, num_frames=self.num_frames, stride=self.cfg.stride,
                               offset=self.cfg.offset, rng=rng, where=os.path.basename(shard))
        flip = bool(self.cfg.flip and rng.random() < 0.5)
        video = vio.to_model_clip(frames, channels=self.channels, resolution=self.cfg.resolution, flip=flip)
        if video.shape[-2:] != (self.resolution, self.resolution):
            raise vio.BadSampleError(f"{shard}:{key}", f"frames are {tuple(video.shape[-2:])}, expected "
                                     f"{self.resolution}x{self.resolution}; set resolution to resize", "format")
        return video

    @staticmethod
    def _shuffle(it: Iterator[dict[str, Any]], rng: np.random.Generator, size: int = 0) -> Iterator[dict[str, Any]]:
        buf: list[dict[str, Any]] = []
        for item in it:
            buf.append(item)
            if len(buf) >= max(size, 2):
                yield buf.pop(int(rng.integers(len(buf))))
        while buf:
            yield buf.pop(int(rng.integers(len(buf))))
