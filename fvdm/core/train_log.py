"""What a training run reports: metrics.jsonl, TensorBoard, and a progress bar or log lines.

Rank 0 writes; every rank computes the same values (the per-level loss buckets are
summed over ranks, a collective, so every rank calls :meth:`LossByLevel.collect`).
metrics.jsonl gets one JSON row per logging window (and per in-training evaluation);
a resumed run first drops the rows an interrupted run logged after its checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from fvdm.core import distributed as D
from fvdm.core.config import dump_config, parse_config
from fvdm.core.errors import warn_once
from fvdm.core.interfaces import VideoDataset
from fvdm.core.atomic import atomic_write


class LossByLevel:
    """Per-frame loss summed in ``K`` equal bins of the level t over a logging window (float64)."""

    def __init__(self, K: int, device: torch.device):
        self.K = K
        self.sum = torch.zeros(K, dtype=torch.float64, device=device)
        self.cnt = torch.zeros(K, dtype=torch.float64, device=device)

    @torch.no_grad()
    def add(self, t: torch.Tensor, per_frame: torch.Tensor) -> None:
        """t, per_frame: (B, F)."""
        idx = (t.detach() * self.K).long().clamp_(0, self.K - 1).flatten()  # (B*F,)
        self.sum += torch.bincount(idx, weights=per_frame.detach().double().flatten(), minlength=self.K)
        self.cnt += torch.bincount(idx, minlength=self.K).double()

    def collect(self, dinfo: D.DistInfo) -> dict[int, float]:
        """Mean loss of each non-empty bin over all ranks since the last call (collective); resets."""
        bsum, bcnt = D.all_reduce_sum(self.sum, dinfo), D.all_reduce_sum(self.cnt, dinfo)
        mean = (bsum / bcnt.clamp(min=1)).tolist()
        self.sum.zero_()
        self.cnt.zero_()
        return {i: v for i, v in enumerate(mean) if bcnt[i] > 0}


def truncate_metrics(path: Path, step: int) -> int:
    """Drop metrics.jsonl rows logged after ``step`` (a run killed after its last checkpoint logged steps the
    resumed run logs again); returns how many rows were dropped. Unparseable lines (a torn last write) go too."""
    if not path.is_file():
        return 0
    keep, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if isinstance(row, dict) and int(row.get("step", 0)) > step:
            dropped += 1
            continue
        keep.append(line)
    if dropped:
        atomic_write(path, lambda tmp: tmp.write_text("".join(f"{line}\n" for line in keep)))
    return dropped


def write_config(run_dir: Path, shown: dict[str, Any], origins: dict[str, dict[str, str]]) -> Path:
    """``run_dir/config.yaml``: the config as ``config show`` prints it (``shown_dict``: it trains again, with
    the same hash), headed by where each of its plugins came from."""
    run_dir.mkdir(parents=True, exist_ok=True)
    header = "".join(f"# {field}: {o['kind']} {o['name']!r} from {o['origin']} (plugin {o['plugin']})\n"
                     for field, o in origins.items())
    path = run_dir / "config.yaml"
    path.write_text("# fvdm train config; the plugins it resolved to:\n" + header
                    + dump_config(parse_config(shown)))
    return path


def tensorboard_writer(run_dir: Path, enabled: bool) -> Any:
    """A SummaryWriter on ``run_dir/tb``, or None (disabled, or tensorboard not installed: warned once)."""
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed
        warn_once("tb", "tensorboard is not installed: no TensorBoard logs (pip install 'fvdm[tensorboard]'); "
                        "metrics.jsonl is still written")
        return None
    return SummaryWriter(log_dir=str(run_dir / "tb"))


def fmt_time(sec: float) -> str:
    sec = int(max(0, sec))
    return f"{sec // 3600:d}:{sec % 3600 // 60:02d}:{sec % 60:02d}"


class TrainLogger:
    """Rank 0's record of a run; on other ranks every method only keeps time.

    ``steps/s`` counts training only: time spent in :meth:`paused` (sample GIFs, evaluation)
    is left out of the window it falls in.
    """

    def __init__(self, run_dir: Path, dataset: VideoDataset, *, main: bool, tensorboard: bool, progress: bool | None,
                 step: int, end: int, batch_size: int):
        self.run_dir, self.dataset, self.main = run_dir, dataset, main
        self.end, self.batch_size = end, batch_size
        self.writer = tensorboard_writer(run_dir, tensorboard) if main else None
        self.bar = None
        if main and (sys.stderr.isatty() if progress is None else progress):
            from tqdm import tqdm

            self.bar = tqdm(total=end, initial=step, desc="train", dynamic_ncols=True)
        self.t_start = self.t_window = time.perf_counter()
        self.window_start = step

    def print(self, msg: str) -> None:
        if self.main:
            print(msg, flush=True)

    def step(self, loss: float, lr: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.1e}")

    def window(self, step: int, loss: float, grad_norm: float, lr: float, by_level: dict[int, float],
               K: int) -> None:
        """One logging window: a metrics.jsonl row, TensorBoard scalars, a log line when there is no bar."""
        now = time.perf_counter()
        sps = (step - self.window_start) / max(now - self.t_window, 1e-9)
        self.t_window, self.window_start = now, step
        if not self.main:
            return
        rec = {"step": step, "loss": loss, "grad_norm": grad_norm, "lr": lr, "steps_per_sec": sps,
               "samples_per_sec": sps * self.batch_size, **{f"loss_t{i}": v for i, v in by_level.items()}}
        # readers that skip bad inputs (on_error: skip) report how many, by kind
        skips = self.dataset.skip_counts() if callable(getattr(self.dataset, "skip_counts", None)) else {}
        rec.update({f"data_skipped_{k}": n for k, n in skips.items()})
        self.row(rec)
        if self.writer is not None:
            for key in ("loss", "grad_norm", "lr", "steps_per_sec", "samples_per_sec"):
                self.writer.add_scalar(f"train/{key}", rec[key], step)
            for i, v in by_level.items():
                self.writer.add_scalar(f"loss_by_t/{i / K:.2f}-{(i + 1) / K:.2f}", v, step)
            for k, n in skips.items():
                self.writer.add_scalar(f"data/skipped_{k}", n, step)
        if self.bar is None:
            eta = (self.end - step) / max(sps, 1e-9)
            print(f"step {step}/{self.end} | loss {loss:.4f} | grad {grad_norm:.3f} | lr {lr:.2e} | "
                  f"{sps:.2f} steps/s | ETA {fmt_time(eta)}"
                  + "".join(f" | skipped {k}: {n}" for k, n in skips.items() if n), flush=True)

    def row(self, rec: dict[str, Any]) -> None:
        """Append one JSON row to metrics.jsonl."""
        if self.main:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")

    def evaluation(self, step: int, metric: str, value: float, n: int) -> None:
        self.row({"step": step, f"eval_{metric}": value, "eval_n": n})
        if self.writer is not None:
            self.writer.add_scalar(f"eval/{metric}", value, step)
        self.print(f"step {step} | eval {metric} {value:.2f} (N={n})")

    def image(self, tag: str, img: torch.Tensor, step: int) -> None:
        """A (C, H, W) uint8 image to TensorBoard."""
        if self.writer is not None:
            self.writer.add_image(tag, img, step)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time inside is not training time (left out of steps/s)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.t_window += time.perf_counter() - t0

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
