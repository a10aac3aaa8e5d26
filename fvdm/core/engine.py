"""The training engine: one loop, top to bottom (nanoGPT / DiT style).

    data -> autoencoder.encode -> VTV strategy draws u (B, F) -> t = schedule.snap(u)
         -> x_t = schedule.add_noise(x0, noise, t) -> backbone(x_t, timestep_input(t), y)
         -> per-frame loss (B, F) -> mean -> AdamW (warmup, grad clip) -> EMA
         -> logs (progress, TensorBoard, metrics.jsonl) -> atomic checkpoints

Determinism: the data order is a seeded stream of permutations indexed by a global
sample position; t (the VTV strategy's draws), noise and label dropout each come
from their own ``torch.Generator`` (``rng_streams``) that every rank advances
identically (each rank draws the whole global batch and keeps its rows). So 2 ranks
x b reproduce 1 rank x 2b, a resumed run (position + every RNG state restored)
continues bit-identically on CPU, and two runs with the same seed but different VTV
strategies (which draw different amounts of t) still see the same data order and
the same noise tensors: paired seeds for comparing strategies.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import random
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset

from fvdm.core import distributed as D
from fvdm.core.build import build_components, set_attention
from fvdm.core.checkpoint import (
    FORMAT, VERSION, CheckpointError, capture_rng, check_resume_config, load_state_strict,
    clean_stale_temps, load_newest_valid, publish_checkpoint, restore_rng, temp_path,
)
from fvdm.core.config import ExperimentConfig, canonical_dict, canonical_hash, dump_config, parse_config
from fvdm.core.ema import ema_decay_at, ema_update, make_ema
from fvdm.core.errors import ConfigError, FvdmError
from fvdm.core.media import to_uint8, write_gif
from fvdm.core.tensor import check_timesteps


class NonFiniteLossError(FvdmError, RuntimeError):
    """The loss or gradient norm became NaN/inf; training stopped without saving that step."""


# ==================================================================================================
# RNG streams: one generator per kind of training randomness (paired seeds across strategies)
# ==================================================================================================

#: The engine's data-independent random streams, in checkpoint order. Separate generators, so a
#: VTV strategy that draws more (e.g. ptss: coins + shared + per-frame) does not shift the noise.
RNG_STREAMS = ("t", "noise", "label")


def stream_seed(seed: int, name: str) -> int:
    """A 63-bit seed for stream ``name`` of run seed ``seed``: stable across runs, processes and machines."""
    import hashlib

    digest = hashlib.sha256(f"fvdm/{int(seed)}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def rng_streams(seed: int, device: str | torch.device = "cpu") -> dict[str, torch.Generator]:
    """{"t", "noise", "label"} -> a generator on ``device`` seeded from (seed, name); same on every rank."""
    return {name: torch.Generator(device=device).manual_seed(stream_seed(seed, name)) for name in RNG_STREAMS}


# ==================================================================================================
# Data: a resumable, rank-sharded stream of sample indices
# ==================================================================================================

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
    # A private generator keeps DataLoader from drawing from the global torch RNG (that would break resume).
    common = dict(num_workers=cfg.train.num_workers, pin_memory=torch.cuda.is_available(),
                  generator=torch.Generator().manual_seed(cfg.seed), persistent_workers=cfg.train.num_workers > 0)
    if isinstance(dataset, IterableDataset):  # streams shard themselves by node/worker; position is approximate
        if start > 0:
            _warn_once("stream_resume", "resuming on an IterableDataset (e.g. webdataset) restarts its stream: "
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


def check_batch(video: Any, info: dict[str, int], micro: int, name: str, first: bool) -> None:
    """Fail loudly (naming the expectation) when a dataset yields the wrong thing."""
    want = (micro, info["num_frames"], info["channels"], info["resolution"], info["resolution"])
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


# ==================================================================================================
# Small helpers
# ==================================================================================================

def lr_at(step: int, tc: Any) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, then constant or cosine."""
    if tc.warmup_steps and step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    if tc.lr_schedule == "cosine":
        span = max(1, tc.steps - tc.warmup_steps)
        frac = min(1.0, (step - tc.warmup_steps) / span)
        return tc.lr * (tc.min_lr_ratio + (1 - tc.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))
    return tc.lr


#: config field -> registry kind, for the provenance of every plugin a run uses
PLUGIN_FIELDS = {"data": "datasets", "backbone": "backbones", "noise_schedule": "noise_schedules",
                 "vtv": "vtv_strategies", "autoencoder": "autoencoders", "sample.sampler": "samplers",
                 "sample.schedule": "sampling_schedules"}


def plugin_origins(cfg: ExperimentConfig, plugins: Any) -> dict[str, dict[str, str]]:
    """Which registered item (and from which distribution/version) each plugin field of ``cfg`` resolved to:
    a run trained with a third-party ``ptss`` must not look like one trained with the built-in."""
    out = {}
    for field, kind in PLUGIN_FIELDS.items():
        node: Any = cfg
        for part in field.split("."):
            node = getattr(node, part, None)
        name = getattr(node, "name", None)
        if name is None or name not in plugins[kind]:
            continue
        entry = plugins[kind].get(name)
        out[field] = {"kind": kind, "name": str(name), "origin": str(entry.origin), "plugin": str(entry.plugin)}
    return out


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
        tmp = temp_path(path)
        tmp.write_text("".join(f"{line}\n" for line in keep))
        os.replace(tmp, path)
    return dropped


def _fmt_time(sec: float) -> str:
    sec = int(max(0, sec))
    return f"{sec // 3600:d}:{sec % 3600 // 60:02d}:{sec % 60:02d}"


_warned: set[str] = set()


def _warn_once(key: str, msg: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def _tb_writer(run_dir: Path, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed
        _warn_once("tb", "tensorboard is not installed: no TensorBoard logs (pip install 'fvdm[tensorboard]'); "
                         "metrics.jsonl is still written")
        return None
    return SummaryWriter(log_dir=str(run_dir / "tb"))


# -- model state under DDP / FSDP2 -------------------------------------------------------------------

def _full_state(raw: torch.nn.Module, opt: torch.optim.Optimizer | None, fsdp: bool) -> tuple[dict, dict | None]:
    """Full (unsharded, CPU-loadable) model and optimizer state dicts; collective under FSDP2."""
    if not fsdp:
        return raw.state_dict(), (opt.state_dict() if opt is not None else None)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    o = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_sd = get_model_state_dict(raw, options=o)
    opt_sd = get_optimizer_state_dict(raw, opt, options=o) if opt is not None else None
    return model_sd, opt_sd


def _load_full_state(raw: torch.nn.Module, opt: torch.optim.Optimizer | None, model_sd: dict, opt_sd: dict | None,
                     fsdp: bool, what: str, path: Path) -> None:
    if not fsdp:
        load_state_strict(raw, model_sd, what, path)
        if opt is not None and opt_sd is not None:
            opt.load_state_dict(opt_sd)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    o = StateDictOptions(full_state_dict=True)
    set_model_state_dict(raw, model_sd, options=o)
    if opt is not None and opt_sd is not None:
        set_optimizer_state_dict(raw, opt, opt_sd, options=o)


def _shard_fsdp2(model: torch.nn.Module, device: torch.device) -> None:
    from torch.distributed.fsdp import fully_shard

    # Shard the sub-modules of each transformer block (not the block itself: backbones may call a
    # block's adaLN layer outside the block's forward, which would skip FSDP's unshard hook), then the rest.
    for mlist in (m for m in model.children() if isinstance(m, torch.nn.ModuleList)):
        for block in mlist:
            for child in block.children():
                if any(True for _ in child.parameters()):
                    fully_shard(child)
    fully_shard(model)


# ==================================================================================================
# Training
# ==================================================================================================

def train(cfg: ExperimentConfig, plugins: Any, *, run_dir: str | Path | None = None, resume: bool = False,
          max_steps: int | None = None, device: str | torch.device | None = None, overwrite: bool = False,
          progress: bool | None = None) -> dict[str, Any]:
    """Train (or resume) ``cfg``; returns ``{final_loss, losses, loss_history, run_dir, step, checkpoint, ...}``.

    run_dir: default ``{run_root}/{name}-{config_hash}``. resume: continue from
    ``run_dir/checkpoints/last.pt``. max_steps: stop after this many steps in this call
    (the lr schedule still follows ``train.steps``). device: ``auto`` -> cuda:LOCAL_RANK
    or cpu. overwrite: start fresh even if run_dir holds a checkpoint. progress: tqdm bar
    (default: when stderr is a terminal); log lines are printed otherwise.
    Under ``torchrun`` every rank calls this; rank 0 alone logs and writes files.
    """
    info = D.init_distributed(device)
    try:
        return _train(cfg, plugins, info, run_dir, resume, max_steps, overwrite, progress)
    finally:
        D.cleanup(info)


def _train(cfg: ExperimentConfig, plugins: Any, dinfo: D.DistInfo, run_dir: str | Path | None, resume: bool,
           max_steps: int | None, overwrite: bool, progress: bool | None) -> dict[str, Any]:
    tc = cfg.train
    rank, world, device, main = dinfo.rank, dinfo.world_size, dinfo.device, dinfo.is_main
    fsdp = tc.parallel == "fsdp2" and dinfo.distributed

    # -- components (same seed on every rank: identical init; DDP also broadcasts rank 0's) ------------
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    parts = build_components(cfg, plugins)  # validates the config against its plugins (once)
    dataset, raw, schedule, vtv, autoencoder = parts.dataset, parts.model, parts.schedule, parts.vtv, parts.autoencoder
    info, spec = parts.info, parts.spec

    # -- config, run dir, checkpoint to resume ---------------------------------------------------------
    canonical = canonical_dict(cfg, resolved=parts.resolved)
    chash = canonical_hash(canonical)
    if tc.batch_size % (world * tc.grad_accum):
        raise ConfigError([("train.batch_size", f"{tc.batch_size} is not divisible by ranks x grad_accum = {world} x "
                                                f"{tc.grad_accum}; pick a multiple of {world * tc.grad_accum}")])
    global_micro = tc.batch_size // tc.grad_accum  # samples per micro-step over all ranks
    micro = global_micro // world  # samples per micro-step on this rank
    run_dir = Path(run_dir) if run_dir is not None else Path(cfg.run_root) / f"{cfg.name}-{chash}"
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    if main and ckpt_path.parent.is_dir():
        for stale in clean_stale_temps(ckpt_path.parent):  # a kill -9 during a save leaves its temp file
            print(f"fvdm train: removed {stale.name} (left by a writer that died mid-save)", file=sys.stderr)
    ckpt, ckpt_src = None, ckpt_path  # ckpt_src: the file actually resumed from (a fallback if last.pt is bad)
    if resume:
        if not ckpt_path.is_file():
            others = sorted(str(p.parent.parent) for p in run_dir.parent.glob(f"{cfg.name}-*/checkpoints/last.pt"))
            hint = (f" Runs of {cfg.name!r} with a checkpoint: {', '.join(others)} (the run dir is named by the "
                    "config hash, so a changed config, e.g. train.steps, gets a new one): pass --run-dir DIR."
                    if others else "")
            raise CheckpointError(f"nothing to resume: {ckpt_path} does not exist; run without --resume, "
                                  f"or pass the run's --run-dir.{hint}")
        ckpt, ckpt_src, skipped = load_newest_valid(ckpt_path.parent)
        if skipped and main:
            print(f"fvdm train: resuming from {ckpt_src.name} (step {int(ckpt['step'])}): skipped {len(skipped)} "
                  f"newer checkpoint(s): {'; '.join(skipped)}", file=sys.stderr, flush=True)
        check_resume_config(ckpt, canonical, ckpt_src)
    elif ckpt_path.exists() and not overwrite:
        raise CheckpointError(f"{ckpt_path} already exists; pass --resume to continue that run, --overwrite to "
                              "start it again, or --run-dir for a new directory. Nothing was overwritten.")
    D.barrier(dinfo)  # every rank has checked before rank 0 writes anything

    param_dtype = torch.float64 if tc.dtype == "float64" else torch.float32
    raw.to(device=device, dtype=param_dtype).train()
    if hasattr(autoencoder, "to"):
        autoencoder.to(device)
    kernel = set_attention(raw, cfg, plugins, device, torch.bfloat16 if tc.bf16 else torch.float32)
    ema = make_ema(raw)
    if fsdp:
        _shard_fsdp2(raw, device)
        _shard_fsdp2(ema, device)
    opt = torch.optim.AdamW(raw.parameters(), lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay)
    n_params = sum(p.numel() for p in raw.parameters())

    step, position, history = 0, 0, []
    gens = rng_streams(cfg.seed, device)  # t, noise, label dropout: same streams on every rank
    if ckpt is not None:
        _load_full_state(raw, opt, ckpt["model"], ckpt.get("optimizer"), fsdp, "model", ckpt_src)
        _load_full_state(ema, None, ckpt["ema"], None, fsdp, "EMA", ckpt_src)
        step, position = int(ckpt["step"]), int(ckpt["data_position"])
        history = [float(v) for v in ckpt["losses"].tolist()]
        if main:
            truncate_metrics(run_dir / "metrics.jsonl", step)
        saved = ckpt["rng"]["generator"]
        if isinstance(saved, dict) and set(saved) == set(RNG_STREAMS):
            for name, g in gens.items():
                g.set_state(saved[name].to("cpu"))
        else:  # a checkpoint from before the separate streams: one shared generator state
            _warn_once("rng_streams", "checkpoint predates the separate t/noise/label generators: they are "
                                      "reseeded from (seed, step), so the run is not bit-identical to an "
                                      "uninterrupted one")
            gens = rng_streams(cfg.seed * 1_000_003 + step, device)
        per_rank = ckpt["rng"]["ranks"]
        if len(per_rank) == world:
            restore_rng(per_rank[rank])
        else:
            _warn_once("rng", f"checkpoint was written by {len(per_rank)} rank(s), resuming on {world}: "
                              "global RNG states are reseeded, so the run is not bit-identical to an uninterrupted one")
            torch.manual_seed(cfg.seed + 7919 * (rank + 1) + step)
    else:
        torch.manual_seed(cfg.seed + 7919 * (rank + 1))  # per-rank stream (e.g. label dropout inside the model)

    model: torch.nn.Module = raw
    if tc.compile:
        model = torch.compile(model)
    if dinfo.distributed and not fsdp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    end = tc.steps if max_steps is None else min(tc.steps, step + max_steps)
    data_iter = make_loader(dataset, cfg, position, global_micro, rank, world, micro)
    data_name = cfg.data.name
    cond = int(spec.get("num_classes", 0) or 0) > 0
    # Label dropout (CFG) in the engine when the backbone takes force_drop: its own torch.rand would
    # make the drop pattern depend on how the batch is split over ranks.
    label_dropout = 0.0
    if cond and "force_drop" in inspect.signature(raw.forward).parameters:
        _, bcfg = plugins["backbones"].validate(spec)
        label_dropout = float(getattr(bcfg, "class_dropout", 0.0) or 0.0)
    K = tc.loss_buckets

    # -- logging (rank 0 only) -------------------------------------------------------------------------
    writer = None
    origins = plugin_origins(cfg, plugins)  # fixed for the run: config.yaml header and every checkpoint
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        header = "".join(f"# {field}: {o['kind']} {o['name']!r} from {o['origin']} (plugin {o['plugin']})\n"
                         for field, o in origins.items())
        (run_dir / "config.yaml").write_text("# fvdm train config; the plugins it resolved to:\n" + header
                                             + dump_config(parse_config(canonical)))
        writer = _tb_writer(run_dir, tc.tensorboard)
        print(f"fvdm train: {run_dir} | {type(raw).__name__} {n_params / 1e6:.2f}M params | data {data_name} "
              f"{info['num_frames']}x{info['channels']}x{info['resolution']}^2 | batch {tc.batch_size} "
              f"({world} rank(s) x {micro} x {tc.grad_accum} accum) | device {device}"
              f"{' | attention ' + kernel if kernel else ''} | steps {step} -> {end}", flush=True)
    show_bar = main and (sys.stderr.isatty() if progress is None else progress)
    bar = None
    if show_bar:
        from tqdm import tqdm

        bar = tqdm(total=end, initial=step, desc="train", dynamic_ncols=True)
    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if tc.bf16
                else contextlib.nullcontext())
    clip = tc.grad_clip if tc.grad_clip is not None else float("inf")
    params = list(raw.parameters())

    losses: list[float] = []
    bucket_sum = torch.zeros(K, dtype=torch.float64, device=device)
    bucket_cnt = torch.zeros(K, dtype=torch.float64, device=device)
    last_ckpt_step = int(ckpt["step"]) if ckpt is not None else None
    t_start = t_window = time.perf_counter()
    start_step, window_start = step, step
    first = True

    def save() -> None:
        nonlocal last_ckpt_step
        model_sd, opt_sd = _full_state(raw, opt, fsdp)
        ema_sd, _ = _full_state(ema, None, fsdp)
        ranks_rng = [capture_rng()]
        if dinfo.distributed:
            ranks_rng = [None] * world  # type: ignore[list-item]
            dist.all_gather_object(ranks_rng, capture_rng())
        if main:
            publish_checkpoint({
                "format": FORMAT, "version": VERSION, "step": step, "data_position": position,
                "model": model_sd, "ema": ema_sd, "optimizer": opt_sd,
                "rng": {"generator": {name: g.get_state().cpu() for name, g in gens.items()}, "ranks": ranks_rng},
                "config": json.dumps(canonical, sort_keys=True), "config_hash": chash,
                "data_info": info, "model_info": spec, "world_size": world,
                "losses": torch.tensor(history, dtype=torch.float64),
                "torch_version": str(torch.__version__), "plugin_origins": origins,
            }, ckpt_path.parent, step, tc.keep_last)
        last_ckpt_step = step
        D.barrier(dinfo)

    # -- the loop -------------------------------------------------------------------------------------
    while step < end:
        lr = lr_at(step, tc)
        for group in opt.param_groups:
            group["lr"] = lr
        loss_acc = torch.zeros((), dtype=torch.float64, device=device)
        for micro_step in range(tc.grad_accum):
            batch = next_batch(data_iter, dinfo, device)
            video = batch["video"]
            check_batch(video, info, micro, data_name, first)
            x = video.to(device, dtype=param_dtype, non_blocking=True)
            with torch.no_grad():
                x0 = autoencoder.encode(x)  # (B, F, C, H, W) latent
            # Draw t and noise for the whole global micro-batch, keep this rank's rows.
            u = vtv(global_micro, info["num_frames"], generator=gens["t"], device=device)
            t_all = schedule.snap(u)  # (B_global, F)
            noise_all = torch.randn((global_micro, *x0.shape[1:]), generator=gens["noise"], device=device,
                                    dtype=x0.dtype)  # (B_global, F, C, H, W): own stream, whatever vtv drew
            if first:
                check_timesteps(t_all, name=f"t from vtv {cfg.vtv.name!r} + {cfg.noise_schedule.name!r}.snap")
                first = False
            rows = slice(rank * micro, (rank + 1) * micro)
            t, noise = t_all[rows], noise_all[rows]
            y, kwargs = None, {}
            if cond:
                if "label" not in batch:
                    raise ValueError(f"the backbone is class-conditional but dataset {data_name!r} yields no 'label'")
                y = batch["label"].to(device)
                if label_dropout > 0:  # own shared-by-all-ranks stream, like t: rank-count invariant
                    drop = torch.rand(global_micro, generator=gens["label"], device=device) < label_dropout
                    kwargs["force_drop"] = drop[rows]
            xt = schedule.add_noise(x0, noise, t)
            last_micro = micro_step == tc.grad_accum - 1  # reduce gradients over ranks only once per step
            sync = (model.no_sync() if isinstance(model, torch.nn.parallel.DistributedDataParallel)
                    and not last_micro else contextlib.nullcontext())
            if fsdp:
                raw.set_requires_gradient_sync(last_micro)
            with sync:
                with autocast:
                    out = model(xt, schedule.timestep_input(t), y, **kwargs)
                per_frame = schedule.loss(out.to(param_dtype), x0, xt, noise, t)  # (B, F)
                loss = per_frame.mean()
                (loss / tc.grad_accum).backward()
            loss_acc += loss.detach().double() / tc.grad_accum
            with torch.no_grad():
                idx = (t.detach() * K).long().clamp_(0, K - 1).flatten()
                bucket_sum += torch.bincount(idx, weights=per_frame.detach().double().flatten(), minlength=K)
                bucket_cnt += torch.bincount(idx, minlength=K).double()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        step_loss = float(D.all_reduce_mean(loss_acc, dinfo))
        gnorm = float(grad_norm)
        recent = history[-200:]
        spike = (tc.spike_factor > 0 and len(history) >= 100 and math.isfinite(step_loss)
                 and step_loss > tc.spike_factor * statistics.median(recent))
        if spike or not (math.isfinite(step_loss) and math.isfinite(gnorm)):
            opt.zero_grad(set_to_none=True)
            where = (f"last good checkpoint: {ckpt_path} (step {last_ckpt_step})" if last_ckpt_step is not None
                     else "no checkpoint was written yet")
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
            what = (f"loss spike at step {step + 1} (loss={step_loss:.4g} > {tc.spike_factor:g} x the median "
                    f"{statistics.median(recent):.4g} of the last {len(recent)} steps)" if spike
                    else f"non-finite loss at step {step + 1} (loss={step_loss}, grad norm={gnorm})")
            raise NonFiniteLossError(
                f"{what}; training stopped and this step was not applied or saved. {where}. Fix: continue that "
                f"checkpoint with a lower lr: fvdm train CONFIG --run-dir {run_dir} --resume -o train.lr=<lower> "
                "(train.warmup_steps, train.grad_clip and train.spike_factor may change on --resume too), or "
                "disable train.bf16 / check the data."
            )
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema_update(ema, raw, ema_decay_at(step, tc.ema_decay, tc.ema_warmup))
        step += 1
        position += tc.batch_size
        history.append(step_loss)
        losses.append(step_loss)

        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.1e}")
        if step % tc.log_every == 0 or step == end:
            now = time.perf_counter()
            sps = (step - window_start) / max(now - t_window, 1e-9)
            t_window, window_start = now, step
            bsum, bcnt = D.all_reduce_sum(bucket_sum, dinfo), D.all_reduce_sum(bucket_cnt, dinfo)
            bucket_loss = (bsum / bcnt.clamp(min=1)).tolist()
            bucket_sum.zero_()
            bucket_cnt.zero_()
            if main:
                rec = {"step": step, "loss": step_loss, "grad_norm": gnorm, "lr": lr, "steps_per_sec": sps,
                       "samples_per_sec": sps * tc.batch_size,
                       **{f"loss_t{i}": v for i, v in enumerate(bucket_loss) if bcnt[i] > 0}}
                # readers that skip bad inputs (on_error: skip) report how many, by kind
                skips = dataset.skip_counts() if callable(getattr(dataset, "skip_counts", None)) else {}
                rec.update({f"data_skipped_{k}": n for k, n in skips.items()})
                with open(run_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(rec) + "\n")
                if writer is not None:
                    writer.add_scalar("train/loss", step_loss, step)
                    writer.add_scalar("train/grad_norm", gnorm, step)
                    writer.add_scalar("train/lr", lr, step)
                    writer.add_scalar("train/steps_per_sec", sps, step)
                    writer.add_scalar("train/samples_per_sec", sps * tc.batch_size, step)
                    for i, v in enumerate(bucket_loss):
                        if bcnt[i] > 0:
                            writer.add_scalar(f"loss_by_t/{i / K:.2f}-{(i + 1) / K:.2f}", v, step)
                    for k, n in skips.items():
                        writer.add_scalar(f"data/skipped_{k}", n, step)
                if bar is None:
                    eta = (end - step) / max(sps, 1e-9)
                    print(f"step {step}/{end} | loss {step_loss:.4f} | grad {gnorm:.3f} | lr {lr:.2e} | "
                          f"{sps:.2f} steps/s | ETA {_fmt_time(eta)}"
                          + "".join(f" | skipped {k}: {n}" for k, n in skips.items() if n), flush=True)
        if tc.sample_every and step % tc.sample_every == 0 and main and not fsdp:
            t_sample = time.perf_counter()
            _write_samples(ema, schedule, autoencoder, cfg, plugins, info, spec, device, step, run_dir, writer)
            t_window += time.perf_counter() - t_sample  # steps/s measures training only
        if tc.eval_every and step % tc.eval_every == 0 and main and not fsdp:
            t_eval = time.perf_counter()
            _evaluate(ema, schedule, autoencoder, cfg, plugins, info, spec, device, step, run_dir, writer)
            t_window += time.perf_counter() - t_eval
        if step % tc.ckpt_every == 0 or step == end:
            save()

    elapsed = time.perf_counter() - t_start
    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()
    if main and step == start_step:
        print(f"fvdm train: nothing to do: the checkpoint is at step {step} and train.steps is {tc.steps} "
              "(raise it with -o train.steps=N to train longer)", flush=True)
    if main and step > start_step:
        print(f"fvdm train: done at step {step}, loss {losses[-1]:.4f}, "
              f"{(step - start_step) / elapsed:.2f} steps/s; checkpoint {ckpt_path}", flush=True)
    return {
        "final_loss": losses[-1] if losses else (history[-1] if history else float("nan")),
        "losses": losses, "loss_history": history, "run_dir": str(run_dir), "step": step,
        "checkpoint": str(ckpt_path), "steps_per_sec": (step - start_step) / elapsed if elapsed > 0 else 0.0,
        "config_hash": chash, "num_params": n_params, "world_size": world, "rank": rank,
    }


# ==================================================================================================
# Sample GIFs and evaluation during training
# ==================================================================================================

def save_gif(video: torch.Tensor, path: str | Path, fps: int = 8) -> Path:
    """Write a batch (B, F, C, H, W) in [-1, 1] as one GIF, clips side by side (atomically)."""
    return write_gif(video, path, fps=fps, pad=0)


@torch.no_grad()
def _sample_videos(ema: torch.nn.Module, schedule: Any, autoencoder: Any, cfg: ExperimentConfig, plugins: Any,
                   info: dict[str, int], spec: dict[str, Any], device: torch.device, n: int, seed: int) -> torch.Tensor:
    """n unconditional (or class-cycled) EMA samples in pixel space (n, F, C, H, W), from their own RNG."""
    from fvdm.core import sampling

    nf = info["num_frames"]
    sampler = plugins["samplers"].build(cfg.sample.sampler.spec())
    S = plugins["sampling_schedules"].build(cfg.sample.schedule.spec())(
        cfg.sample.steps, nf, num_timesteps=getattr(schedule, "num_timesteps", None)).to(device)
    g = torch.Generator(device=device).manual_seed(seed)  # own RNG: training streams untouched
    x = torch.randn((n, nf, info["latent_channels"], info["latent_resolution"], info["latent_resolution"]),
                    generator=g, device=device)
    nc = int(spec.get("num_classes", 0) or 0)
    y = torch.arange(n, device=device) % nc if nc > 0 else None
    model_fn = sampling.make_model_fn(ema, schedule, y=y, cfg_scale=cfg.sample.cfg_scale if nc > 0 else 1.0)
    with torch.no_grad():
        x0 = sampling.sample_loop(model_fn, x, S, sampler=sampler, schedule=schedule, generator=g)
        return autoencoder.decode(x0)


def _evaluate(ema: torch.nn.Module, schedule: Any, autoencoder: Any, cfg: ExperimentConfig, plugins: Any,
              info: dict[str, int], spec: dict[str, Any], device: torch.device, step: int, run_dir: Path,
              writer: Any) -> None:
    """``train.eval_metric`` of EMA samples against the data's test split -> metrics.jsonl, TensorBoard, log."""
    tc = cfg.train
    try:
        real_ds = plugins["datasets"].build({**cfg.data.spec(), "split": "test"})
        n = min(tc.eval_samples, len(real_ds))
        real = torch.stack([real_ds[i]["video"] for i in range(n)])  # (N, F, C, H, W) in [-1, 1]
        fake = torch.cat([_sample_videos(ema, schedule, autoencoder, cfg, plugins, info, spec, device,
                                         min(64, n - i), cfg.seed + 54321 + i) for i in range(0, n, 64)])
        ev = plugins["evaluators"].build({"name": tc.eval_metric, "num_frames": info["num_frames"]}, plugins=plugins)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small-N notes go into the result, not the training log
            res = ev.evaluate(to_uint8(fake.cpu()), to_uint8(real))
    except Exception as exc:  # evaluation is a side show: report and keep training
        _warn_once("eval_fail", f"eval ({tc.eval_metric}) at step {step} failed ({type(exc).__name__}: {exc}); "
                                "training continues")
        return
    value = float(res["value"])
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": step, f"eval_{tc.eval_metric}": value, "eval_n": n}) + "\n")
    if writer is not None:
        writer.add_scalar(f"eval/{tc.eval_metric}", value, step)
    print(f"step {step} | eval {tc.eval_metric} {value:.2f} (N={n})", flush=True)


def _write_samples(ema: torch.nn.Module, schedule: Any, autoencoder: Any, cfg: ExperimentConfig, plugins: Any,
                   info: dict[str, int], spec: dict[str, Any], device: torch.device, step: int, run_dir: Path,
                   writer: Any) -> None:
    try:
        from einops import rearrange

        video = _sample_videos(ema, schedule, autoencoder, cfg, plugins, info, spec, device,
                               cfg.train.sample_batch, cfg.seed + 12345)
        save_gif(video, run_dir / "samples" / f"step_{step:07d}.gif")
        if writer is not None:  # rows = samples, columns = frames
            grid = rearrange(to_uint8(video.cpu()), "b f c h w -> c (b h) (f w)")
            writer.add_image("samples/frames", grid, step)
    except Exception as exc:  # sampling is a side show: report and keep training
        _warn_once("sample_fail", f"sample GIF at step {step} failed ({type(exc).__name__}: {exc}); training continues")
