"""Setting a training run up: the fixed ``Run``, the changing ``TrainState``, and ``set_up`` that builds both.

``set_up`` builds the components from the config, checks the run directory, resumes from a checkpoint
(every RNG stream and the data position restored, so the loop continues bit-identically on CPU), adds
LoRA adapters or initial weights, wraps the model for DDP / FSDP2 / ``torch.compile``, and starts the
logger. The loop that uses them is ``fvdm.core.engine``.
"""

from __future__ import annotations

import contextlib
import inspect
import random
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from fvdm.core import distributed as D
from fvdm.core.build import Components, build_components, plugin_origins, set_attention
from fvdm.core.checkpoint import checkpoint_to_resume, load_state_strict, restore_rng
from fvdm.core.config import ExperimentConfig, canonical_dict, canonical_hash, resolve_config, shown_dict
from fvdm.core.data_stream import make_loader
from fvdm.core.ema import make_ema
from fvdm.core.init_from import init_weights
from fvdm.core.lora import add_lora, base_fingerprint, check_base, load_adapter_state
from fvdm.core.validation import check_validation
from fvdm.core.errors import ConfigError, warn_once
from fvdm.core.rng import restore_streams, rng_streams
from fvdm.core.train_log import LossByLevel, TrainLogger, truncate_metrics, write_config


@dataclass
class TrainState:
    """What every optimizer step changes; a checkpoint saves all of it, so a resume continues exactly."""

    gens: dict[str, torch.Generator]  # t / noise / label-dropout streams (fvdm.core.rng)
    step: int = 0  # optimizer steps done
    position: int = 0  # samples consumed from the global data stream
    history: list[float] = field(default_factory=list)  # loss of every step since step 0
    losses: list[float] = field(default_factory=list)  # loss of every step of this call
    last_ckpt_step: int | None = None  # newest checkpoint on disk
    # newest checkpoint whose weights then gave a step that passed the divergence guard: the one a
    # diverged run may name as good (None until one is; a resumed checkpoint counts once its next step passes)
    good_ckpt_step: int | None = None


@dataclass(kw_only=True)
class Run:
    """What stays fixed once a run is set up (built by keyword: 23 fields are too many to keep in order)."""

    cfg: ExperimentConfig
    plugins: Any
    dinfo: D.DistInfo
    parts: Components  # dataset, model (= raw), schedule, vtv, autoencoder, info, spec
    model: torch.nn.Module  # what the train step calls: raw, compiled and/or in DDP
    ema: torch.nn.Module
    opt: torch.optim.Optimizer
    fsdp: bool
    run_dir: Path
    ckpt_path: Path
    canonical: dict[str, Any]
    chash: str
    origins: dict[str, dict[str, str]]
    end: int  # the step this call stops at
    global_micro: int  # samples per micro-step over all ranks
    micro: int  # samples per micro-step on this rank
    label_dropout: float  # drawn here, not in the model, so that it does not depend on the rank split
    text_dropout: float  # share of clips whose text embeddings become the empty prompt's (CFG), drawn here too
    started_from: dict[str, Any] | None  # the pretrained directory a fresh run read (kept through resumes)
    param_dtype: torch.dtype
    autocast: Callable[[], Any]
    data_iter: Iterator[dict[str, Any]]
    buckets: LossByLevel
    logger: TrainLogger
    validation_cache: dict[str, Any] = field(default_factory=dict)  # held-out clips / prompt embeddings, read once

    @property
    def raw(self) -> torch.nn.Module:
        return self.parts.model


def set_up(cfg: ExperimentConfig, plugins: Any, dinfo: D.DistInfo, run_dir: str | Path | None, resume: bool,
           max_steps: int | None, overwrite: bool, progress: bool | None) -> tuple[Run, TrainState]:
    """Build the components, check the run dir, resume from its checkpoint, write config.yaml, start logging."""
    tc = cfg.train
    rank, world, device, main = dinfo.rank, dinfo.world_size, dinfo.device, dinfo.is_main
    fsdp = tc.parallel == "fsdp2" and dinfo.distributed
    # -- cheap checks first: a bad batch split or run dir fails before the dataset and model are built --
    if tc.batch_size % (world * tc.grad_accum):
        raise ConfigError([("train.batch_size", f"{tc.batch_size} is not divisible by ranks x grad_accum = {world} x "
                                                f"{tc.grad_accum}; pick a multiple of {world * tc.grad_accum}")])
    check_validation(cfg)
    if tc.parallel == "fsdp2" and not dinfo.distributed:
        raise ConfigError([("train.parallel", "fsdp2 shards over several processes: start them with `torchrun "
                                              "--nproc-per-node N -m fvdm train ...`, or set parallel: ddp for one")])
    if tc.init_from is not None and cfg.backbone.params.get("pretrained"):
        raise ConfigError([("train.init_from", "give train.init_from or backbone.pretrained, not both (both say "
                                               "where the weights start)")])
    global_micro = tc.batch_size // tc.grad_accum
    resolved = resolve_config(cfg, plugins)  # validates the config against its plugins, once
    canonical = canonical_dict(cfg, resolved=resolved)
    chash = canonical_hash(canonical)
    run_dir = Path(run_dir) if run_dir is not None else Path(cfg.run_root) / f"{cfg.name}-{chash}"
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    ckpt, ckpt_src = checkpoint_to_resume(ckpt_path, canonical, cfg.name, resume, overwrite, main)
    D.barrier(dinfo)  # every rank has checked before rank 0 writes anything
    # -- components (same seed on every rank: identical init; DDP also broadcasts rank 0's) ------------
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    # a LoRA run's checkpoints hold only its adapters: a resume reads the base again (and checks it is the same)
    lora = tc.lora is not None
    parts = build_components(cfg, plugins, resolved=resolved, load_pretrained=ckpt is None or lora)

    raw = parts.model
    if (ckpt is None or lora) and tc.init_from is not None:  # a fine-tune: the weights come from elsewhere
        raw.pretrained_info = init_weights(raw, tc.init_from, parts.spec, weights=tc.init_weights)
    param_dtype = torch.float64 if tc.dtype == "float64" else torch.float32
    # a LoRA base is fingerprinted in float32, as sampling reads it back, whatever the run's dtype
    raw.to(device=device, dtype=torch.float32 if lora else param_dtype).train()
    base_fp = attach_lora(raw, tc.lora, ckpt, ckpt_src) if lora else None
    raw.to(device=device, dtype=param_dtype)
    if hasattr(parts.autoencoder, "to"):
        parts.autoencoder.to(device)
    kernel = set_attention(raw, cfg, plugins, device, torch.bfloat16 if tc.bf16 else torch.float32)
    ema = make_ema(raw, share_frozen=lora and not fsdp)  # LoRA: the base is shared, only adapters averaged
    if fsdp:
        D.shard_fsdp2(raw)
        D.shard_fsdp2(ema)
    trainable = [p for p in raw.parameters() if p.requires_grad]  # LoRA: the adapters only
    opt = torch.optim.AdamW(trainable, lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay)
    state = TrainState(gens=rng_streams(cfg.seed, device))  # t, noise, label dropout: same on every rank
    if ckpt is not None:
        state = restore(ckpt, ckpt_src, cfg, dinfo, raw, ema, opt, fsdp, run_dir)
    else:
        torch.manual_seed(cfg.seed + 7919 * (rank + 1))  # per-rank stream (e.g. label dropout inside the model)
        if main:  # a fresh start (--overwrite, or after a divergence) does not continue an old run's log
            truncate_metrics(run_dir / "metrics.jsonl", 0)
    model = D.wrap_model(raw, dinfo, compiled=tc.compile, fsdp=fsdp)

    end = tc.steps if max_steps is None else min(tc.steps, state.step + max_steps)
    # Label dropout (CFG) in the engine when the backbone takes force_drop: its own torch.rand would
    # make the drop pattern depend on how the batch is split over ranks.
    _, bcfg = plugins["backbones"].validate(parts.spec)
    dropout = bcfg.guidance_dropout()
    label_dropout = 0.0
    if int(parts.spec.get("num_classes", 0) or 0) > 0 and "force_drop" in inspect.signature(raw.forward).parameters:
        label_dropout = float(dropout.get("class", 0.0))
    started_from = (ckpt.get("started_from") if ckpt is not None else getattr(raw, "pretrained_info", None))
    if lora:
        started_from = {**(started_from or {}), "lora_base_fingerprint": base_fp}
    origins = plugin_origins(parts.resolved)  # fixed for the run: config.yaml header and every checkpoint
    if main:
        write_config(run_dir, shown_dict(cfg, resolved=parts.resolved), origins)  # `fvdm train` re-reads it
        info, n_params = parts.info, sum(p.numel() for p in raw.parameters())
        print(f"fvdm train: {run_dir} | {type(raw).__name__} {n_params / 1e6:.2f}M params | data {cfg.data.name} "
              f"{info['num_frames']}x{info['channels']}x{info['resolution']}^2 | batch {tc.batch_size} "
              f"({world} rank(s) x {global_micro // world} x {tc.grad_accum} accum) | device {device}"
              f"{' | attention ' + kernel if kernel else ''} | steps {state.step} -> {end}", flush=True)
    logger = TrainLogger(run_dir, parts.dataset, main=main, tensorboard=tc.tensorboard, progress=progress,
                         step=state.step, end=end, batch_size=tc.batch_size)
    autocast = (partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16) if tc.bf16
                else contextlib.nullcontext)
    data_iter = make_loader(parts.dataset, cfg, state.position, global_micro, rank, world, global_micro // world)
    run = Run(cfg=cfg, plugins=plugins, dinfo=dinfo, parts=parts, model=model, ema=ema, opt=opt, fsdp=fsdp,
              run_dir=run_dir, ckpt_path=ckpt_path, canonical=canonical, chash=chash, origins=origins, end=end,
              global_micro=global_micro, micro=global_micro // world, label_dropout=label_dropout,
              text_dropout=float(dropout.get("text", 0.0)), started_from=started_from,
              param_dtype=param_dtype, autocast=autocast, data_iter=data_iter,
              buckets=LossByLevel(tc.loss_buckets, device), logger=logger)
    return run, state


def attach_lora(raw: torch.nn.Module, settings: Any, ckpt: dict[str, Any] | None, src: Path | None) -> str:
    """Add LoRA adapters to ``raw`` (base frozen); returns the base's fingerprint, which a resumed run's
    checkpoint must name: its adapters belong to exactly that base."""
    if ckpt is None:
        base_fp = base_fingerprint(raw)
    else:
        base_fp = check_base(raw, (ckpt.get("started_from") or {}).get("lora_base_fingerprint"), str(src))
    add_lora(raw, settings)
    return base_fp


def restore(ckpt: dict[str, Any], src: Path, cfg: ExperimentConfig, dinfo: D.DistInfo, raw: torch.nn.Module,
            ema: torch.nn.Module, opt: torch.optim.Optimizer, fsdp: bool, run_dir: Path) -> TrainState:
    """Load weights, optimizer and every RNG state from ``ckpt``; the state the run continues from."""
    lora = cfg.train.lora is not None  # the checkpoint holds the adapters; the base was read again

    def load(what: str) -> Callable[[torch.nn.Module, dict], None]:
        if lora:
            return lambda m, sd: load_adapter_state(m, sd, source=f"{src} ({what})")
        return lambda m, sd: load_state_strict(m, sd, what, src)

    D.load_full_state(raw, opt, ckpt["model"], ckpt.get("optimizer"), fsdp, load("model"), partial=lora)
    D.load_full_state(ema, None, ckpt["ema"], None, fsdp, load("EMA"), partial=lora)
    step = int(ckpt["step"])
    if dinfo.is_main:
        truncate_metrics(run_dir / "metrics.jsonl", step)
    gens = restore_streams(ckpt["rng"]["generator"], cfg.seed, step, dinfo.device)
    per_rank = ckpt["rng"]["ranks"]
    if len(per_rank) == dinfo.world_size:
        restore_rng(per_rank[dinfo.rank])
    else:
        warn_once("rng", f"checkpoint was written by {len(per_rank)} rank(s), resuming on {dinfo.world_size}: "
                         "global RNG states are reseeded, so the run is not bit-identical to an uninterrupted one")
        torch.manual_seed(cfg.seed + 7919 * (dinfo.rank + 1) + step)
    # the resumed checkpoint is not yet good: it is once its next step passes the divergence guard
    return TrainState(gens=gens, step=step, position=int(ckpt["data_position"]),
                      history=[float(v) for v in ckpt["losses"].tolist()], last_ckpt_step=step)
