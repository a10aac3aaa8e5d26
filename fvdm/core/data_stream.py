"""The training data stream: resumable, rank-sharded batches, checked at the boundary.

The data order is a seeded stream of permutations indexed by a global sample position,
so 2 ranks x b read exactly what 1 rank x 2b reads, and a resumed run (position
restored) reads on where the interrupted one stopped.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset

from fvdm.core import distributed as D
from fvdm.core.build import frame_size, model_frames
from fvdm.core.config import ExperimentConfig
from fvdm.core.errors import FvdmError, warn_once


class StreamBatchSampler:
    """Infinite batches over a map-style dataset of ``n`` items.

    Global sample position ``i`` maps to item ``perm_e[i mod n]`` with ``e = i // n`` and
    ``perm_e = randperm(n)`` seeded by (seed, e). A global micro-batch is positions
    ``[p, p + global_micro)``; rank r takes rows ``[r*micro, (r+1)*micro)``. Start at any
    ``p`` to resume exactly.
    """

    def __init__(self, n: int, seed: int, start: int, global_micro: int, rank: int, micro: int):
        if n <= 0:
            raise ValueError("the dataset is empty")
        self.n, self.seed, self.start = n, seed, start
        self.global_micro, self.rank, self.micro = global_micro, rank, micro
        self._perm: tuple[int, torch.Tensor] | None = None

    def _item(self, i: int) -> int:
        epoch, k = divmod(i, self.n)
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = (epoch, torch.randperm(self.n, generator=g))
        return int(self._perm[1][k])

    def __iter__(self) -> Iterator[list[int]]:
        pos = self.start
        while True:
            first = pos + self.rank * self.micro
            yield [self._item(first + j) for j in range(self.micro)]
            pos += self.global_micro


def make_loader(dataset: Any, cfg: ExperimentConfig, start: int, global_micro: int, rank: int, world: int,
                micro: int) -> Iterator[dict[str, Any]]:
    """Batches of ``micro`` items for this rank from global sample position ``start``, forever."""
    # A private generator keeps DataLoader from drawing from the global torch RNG (that would break resume).
    common = dict(num_workers=cfg.train.num_workers, pin_memory=torch.cuda.is_available(),
                  generator=torch.Generator().manual_seed(cfg.seed), persistent_workers=cfg.train.num_workers > 0)
    if isinstance(dataset, IterableDataset):  # streams shard themselves by node/worker; position is approximate
        if start > 0:
            warn_once("stream_resume", "resuming on an IterableDataset (e.g. webdataset) restarts its stream: "
                                        "the run continues correctly but not bit-identically")
        loader = DataLoader(dataset, batch_size=micro, drop_last=True, **common)

        def forever() -> Iterator[dict[str, Any]]:
            while True:
                batches = 0
                for batch in loader:
                    batches += 1
                    yield batch
                if batches == 0:  # a pass that forms no batch would repeat forever: stop with the reason
                    skips = dataset.skip_counts() if callable(getattr(dataset, "skip_counts", None)) else {}
                    skipped = f"; the reader skipped {skips}" if any(skips.values()) else ""
                    raise FvdmError(
                        f"a full pass over {type(dataset).__name__} gave no batch of {micro} clips on rank {rank} "
                        f"of {world} (train.batch_size {cfg.train.batch_size}): the stream has fewer usable clips "
                        f"than one batch{skipped}; check the shards with `fvdm data inspect SHARDS`, "
                        "add data, or lower train.batch_size")
        return forever()
    sampler = StreamBatchSampler(len(dataset), cfg.seed, start, global_micro, rank, micro)
    return iter(DataLoader(dataset, batch_sampler=sampler, **common))


def next_batch(data_iter: Iterator[dict[str, Any]], dinfo: D.DistInfo, device: torch.device) -> dict[str, Any]:
    """The next batch, with every rank agreeing that all ranks have one: a rank whose stream ran dry raises
    its named error, and the others raise one naming that rank instead of waiting forever in the gradient
    all-reduce (one bad shard of two used to stall both ranks)."""
    err: FvdmError | None = None
    try:
        batch = next(data_iter)
    except FvdmError as exc:
        err, batch = exc, None
    if dinfo.distributed:
        ok = D.all_reduce_sum(torch.tensor([0.0 if err is not None else 1.0], device=device), dinfo)
        if err is None and int(ok.item()) < dinfo.world_size:
            raise FvdmError(f"rank {dinfo.rank}: {dinfo.world_size - int(ok.item())} other rank(s) ran out of "
                            "data (see their error); stopping every rank instead of waiting")
    if err is not None:
        raise err
    return batch


def check_latents(latent: Any, info: dict[str, int], micro: int, name: str) -> None:
    """Precomputed latents must have the shape the configured autoencoder gives the data's clips."""
    want = (micro, model_frames(info), info["latent_channels"], *frame_size(info, latent=True))
    if not isinstance(latent, torch.Tensor) or not latent.is_floating_point() or tuple(latent.shape) != want:
        got = tuple(latent.shape) if isinstance(latent, torch.Tensor) else type(latent).__name__
        raise ValueError(f"dataset {name!r} yielded latents {got}; the configured autoencoder makes (B, f, c, h, w) "
                         f"= {want}: set autoencoder to the one the shards were packed with, or re-pack")


def check_batch(video: Any, info: dict[str, int], micro: int, name: str, first: bool) -> None:
    """Fail loudly (naming the expectation) when a dataset yields the wrong thing."""
    want = (micro, info["num_frames"], info["channels"], *frame_size(info))
    if not isinstance(video, torch.Tensor):
        raise TypeError(f"dataset {name!r} yielded 'video' of type {type(video).__name__}; expected a float tensor "
                        f"(F, C, H, W) = {want[1:]} per item")
    if not video.is_floating_point():
        raise TypeError(f"dataset {name!r} yielded 'video' with dtype {video.dtype}; expected float32 in [-1, 1] "
                        "(convert uint8 with x.float() / 127.5 - 1)")
    if tuple(video.shape) != want:
        raise ValueError(f"dataset {name!r} yielded a batch of shape {tuple(video.shape)}; expected (B, F, C, H, W) = "
                         f"{want} from its num_frames/channels/resolution attributes")
    if first:
        lo, hi = float(video.min()), float(video.max())
        if lo < -1.0001 or hi > 1.0001 or not math.isfinite(lo + hi):
            raise ValueError(f"dataset {name!r} yielded values in [{lo:.3g}, {hi:.3g}]; expected [-1, 1]")
