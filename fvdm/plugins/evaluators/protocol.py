"""Clip selection and feature accumulation shared by FVD and FID.

Selection (StyleGAN-V, seeded where the original is not):
1. videos are ordered by key (lexicographic), 2. videos shorter than the clip span
``(num_frames - 1) * subsample + 1`` are dropped (or refused), 3. ``sorted`` takes the
first N, ``random`` a seeded random N, 4. one clip per video starting at a random
offset drawn from sha256(seed, key), so the clip of a video never depends on the
worker count, the batch size or which other videos were selected.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch

from fvdm.plugins.evaluators.moments import StreamingMoments
from fvdm.plugins.evaluators.sources import VideoSource


@dataclass(frozen=True)
class Clip:
    index: int  # position in the source
    key: str
    frames: tuple[int, ...]


def clip_offset(seed: int, key: str, max_offset: int) -> int:
    """Deterministic uniform offset in [0, max_offset] for one video."""
    if max_offset <= 0:
        return 0
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (max_offset + 1)


def select_clips(
    keys: Sequence[str],
    lengths: Sequence[int] | Callable[[int], int],
    *,
    num_videos: int | None,
    num_frames: int | None,
    subsample: int = 1,
    selection: Literal["sorted", "random"] = "sorted",
    random_offset: bool = True,
    drop_short: bool = True,
    seed: int = 0,
) -> list[Clip]:
    """Pick videos and one clip per video. ``num_frames=None`` takes every frame of each video."""
    if subsample < 1:
        raise ValueError(f"subsample must be >= 1, got {subsample}")
    length = lengths if callable(lengths) else (lambda i: int(lengths[i]))
    order = sorted(range(len(keys)), key=lambda i: keys[i])
    span = None if num_frames is None else (num_frames - 1) * subsample + 1
    eligible = []
    short = []
    for i in order:
        (eligible if span is None or length(i) >= span else short).append(i)
    if short and not drop_short:
        raise ValueError(
            f"{len(short)} video(s) are shorter than the clip span {span} frames "
            f"({num_frames} frames x subsample {subsample}), e.g. {keys[short[0]]!r} with {length(short[0])}; "
            "set drop_short=True to skip them (StyleGAN-V discards short videos)."
        )
    if selection == "sorted":
        chosen = eligible if num_videos is None else eligible[:num_videos]
    elif selection == "random":
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(eligible), generator=g).tolist()
        picked = perm if num_videos is None else perm[:num_videos]
        chosen = [eligible[j] for j in sorted(picked)]  # back to key order: batching stays deterministic
    else:
        raise ValueError(f"selection must be 'sorted' or 'random', got {selection!r}")
    clips = []
    for i in chosen:
        n = length(i)
        if span is None:
            frames = tuple(range(0, n, subsample))
        else:
            off = clip_offset(seed, keys[i], n - span) if random_offset else 0
            frames = tuple(off + k * subsample for k in range(num_frames))
        clips.append(Clip(i, keys[i], frames))
    return clips


class _ClipDataset(torch.utils.data.Dataset):
    def __init__(self, source: VideoSource, clips: Sequence[Clip]):
        self.source, self.clips = source, list(clips)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, j: int) -> torch.Tensor:
        c = self.clips[j]
        return self.source.load(c.index, c.frames)  # uint8 (F, C, H, W)


def _collate(items: list[torch.Tensor]) -> list[torch.Tensor]:
    return items


def accumulate_features(
    extractor: Callable[[torch.Tensor], torch.Tensor],
    source: VideoSource,
    clips: Sequence[Clip],
    *,
    batch_size: int = 8,
    num_workers: int = 0,
    max_rows: int | None = None,
    progress: bool = False,
    desc: str = "features",
    keep_features: bool = False,
    distributed: bool = True,
) -> tuple[StreamingMoments, torch.Tensor | None]:
    """Run ``extractor`` over the clips (batched, optional DataLoader workers) into float64 moments.

    Clips are sharded over DDP ranks when a process group is up; moments are then all-reduced.
    ``max_rows`` caps the number of feature rows (e.g. 50k frames for FID).
    """
    import torch.distributed as dist

    rank, world = 0, 1
    if distributed and dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    mine = list(clips)[rank::world]
    loader = torch.utils.data.DataLoader(_ClipDataset(source, mine), batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers, collate_fn=_collate)
    mom = StreamingMoments(int(getattr(extractor, "dim")))
    kept: list[torch.Tensor] = []
    rows = 0
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=len(mine), desc=desc, unit="clip", leave=False)
    for batch in loader:
        shapes = {tuple(v.shape[1:]) for v in batch}
        if len(shapes) == 1:
            feats = extractor(torch.stack(batch))
        else:  # mixed resolutions: one clip at a time
            feats = torch.cat([extractor(v[None]) for v in batch])
        if max_rows is not None and world == 1:
            feats = feats[: max(0, max_rows - rows)]
        rows += feats.shape[0]
        mom.update(feats)
        if keep_features:
            kept.append(feats)
        if bar is not None:
            bar.update(len(batch))
        if max_rows is not None and world == 1 and rows >= max_rows:
            break
    if bar is not None:
        bar.close()
    if world > 1:
        mom.all_reduce_()
    return mom, (torch.cat(kept) if kept else None) if keep_features else None
