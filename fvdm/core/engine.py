"""The training engine: one loop, top to bottom (nanoGPT / DiT style).

    data -> autoencoder.encode -> VTV strategy draws u (B, F) -> t = schedule.snap(u)
         -> x_t = schedule.add_noise(x0, noise, t) -> backbone(x_t, timestep_input(t), y)
         -> per-frame loss (B, F) -> mean -> AdamW (warmup, grad clip) -> EMA
         -> logs (progress, TensorBoard, metrics.jsonl) -> atomic checkpoints

``set_up`` (``fvdm.core.run_setup``) builds a :class:`Run` (what stays fixed) and a :class:`TrainState`
(what every step changes and every checkpoint saves); ``_train`` is the loop; ``train_step`` is one
optimizer step's forward and backward passes; ``save`` writes a checkpoint; ``refuse`` turns a step
the divergence guard (``fvdm.core.divergence``) stopped into the error, naming only a good checkpoint.

Determinism: the data order is a seeded stream of permutations indexed by a global
sample position (``fvdm.core.data_stream``); t, noise and label dropout each come from
their own generator (``fvdm.core.rng``) that every rank advances identically (each rank
draws the whole global batch and keeps its rows). So 2 ranks x b reproduce 1 rank x 2b,
a resumed run (position + every RNG state restored) continues bit-identically on CPU,
and two runs with the same seed but different VTV strategies see the same data order
and the same noise tensors: paired seeds for comparing strategies.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from fvdm.core import distributed as D
from fvdm.core.build import model_frames
from fvdm.core.checkpoint import FORMAT, VERSION, capture_rng, publish_checkpoint, set_aside_diverged, step_file
from fvdm.core.config import ExperimentConfig
from fvdm.core.data_stream import check_batch, check_latents, next_batch
from fvdm.core.divergence import NonFiniteLossError, diverged_error, divergence
from fvdm.core.ema import ema_decay_at, ema_update
from fvdm.core.lora import is_lora_key
from fvdm.core.validation import validate
from fvdm.core.errors import warn_once
from fvdm.core.faults import crash_point
from fvdm.core.previews import evaluate, write_samples
from fvdm.core.rng import stream_states
from fvdm.core.run_setup import Run, TrainState, set_up
from fvdm.core.tensor import check_timesteps

__all__ = ["NonFiniteLossError", "Run", "TrainState", "lr_at", "train"]  # NonFiniteLossError: for callers to catch


def lr_at(step: int, tc: Any) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, then constant or cosine."""
    if tc.warmup_steps and step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    if tc.lr_schedule == "cosine":
        span = max(1, tc.steps - tc.warmup_steps)
        frac = min(1.0, (step - tc.warmup_steps) / span)
        return tc.lr * (tc.min_lr_ratio + (1 - tc.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))
    return tc.lr


def train(cfg: ExperimentConfig, plugins: Any, *, run_dir: str | Path | None = None, resume: bool = False,
          max_steps: int | None = None, device: str | torch.device | None = None, overwrite: bool = False,
          progress: bool | None = None, max_minutes: float | None = None) -> dict[str, Any]:
    """Train (or resume) ``cfg``; returns ``{final_loss, losses, loss_history, run_dir, step, checkpoint, ...}``.

    run_dir: default ``{run_root}/{name}-{config_hash}``. resume: continue from
    ``run_dir/checkpoints/last.pt``. max_steps: stop after this many steps in this call
    (the lr schedule still follows ``train.steps``). max_minutes: after the step that passes this many
    minutes, write a checkpoint and return (``stopped_early``; ``resume=True`` continues exactly). device: ``auto`` -> cuda:LOCAL_RANK
    or cpu. overwrite: start fresh even if run_dir holds a checkpoint. progress: tqdm bar
    (default: when stderr is a terminal); log lines are printed otherwise.
    Under ``torchrun`` every rank calls this; rank 0 alone logs and writes files.
    """
    if max_minutes is not None and max_minutes <= 0:
        raise ValueError(f"max_minutes must be > 0, got {max_minutes}")
    info = D.init_distributed(device)
    try:
        return _train(cfg, plugins, info, run_dir, resume, max_steps, overwrite, progress, max_minutes)
    finally:
        D.cleanup(info)


def _train(cfg: ExperimentConfig, plugins: Any, dinfo: D.DistInfo, run_dir: str | Path | None, resume: bool,
           max_steps: int | None, overwrite: bool, progress: bool | None,
           max_minutes: float | None = None) -> dict[str, Any]:
    run, state = set_up(cfg, plugins, dinfo, run_dir, resume, max_steps, overwrite, progress)
    tc, log, start_step = cfg.train, run.logger, state.step
    while state.step < run.end:
        lr = lr_at(state.step, tc)
        for group in run.opt.param_groups:
            group["lr"] = lr
        step_loss, grad_norm = train_step(run, state, first=state.step == start_step)
        what = divergence(step_loss, grad_norm, state.history, tc.spike_factor, state.step + 1)
        if what is not None:  # stop before this step reaches the weights or a checkpoint
            run.opt.zero_grad(set_to_none=True)
            log.close()
            raise refuse(run, state, what)
        if state.last_ckpt_step == state.step:  # the newest checkpoint's weights just gave a step that passed
            state.good_ckpt_step = state.step
        run.opt.step()
        run.opt.zero_grad(set_to_none=True)
        ema_update(run.ema, run.raw, ema_decay_at(state.step, tc.ema_decay, tc.ema_warmup))
        state.step += 1
        state.position += tc.batch_size
        state.history.append(step_loss)
        state.losses.append(step_loss)

        log.step(step_loss, lr)
        if state.step % tc.log_every == 0 or state.step == run.end:
            log.window(state.step, step_loss, grad_norm, lr, run.buckets.collect(dinfo), tc.loss_buckets)
        show_previews(run, state.step)
        out_of_time = max_minutes is not None and out_of(max_minutes, log.elapsed(), dinfo)
        if state.step % tc.ckpt_every == 0 or state.step == run.end or out_of_time:
            save(run, state)
        if out_of_time:
            break

    elapsed = log.elapsed()
    log.close()
    done = state.step - start_step
    if done == 0:
        log.print(f"fvdm train: nothing to do: the checkpoint is at step {state.step} and train.steps is "
                  f"{tc.steps} (raise it with -o train.steps=N to train longer)")
    else:
        log.print(f"fvdm train: done at step {state.step}, loss {state.losses[-1]:.4f}, {done / elapsed:.2f} "
                  f"steps/s; checkpoint {run.ckpt_path}")
    last = state.losses[-1] if state.losses else (state.history[-1] if state.history else float("nan"))
    return {
        "final_loss": last, "losses": state.losses, "loss_history": state.history, "run_dir": str(run.run_dir),
        "step": state.step, "checkpoint": str(run.ckpt_path), "steps_per_sec": done / elapsed if elapsed > 0 else 0.0,
        "config_hash": run.chash, "num_params": sum(p.numel() for p in run.raw.parameters()),
        "world_size": dinfo.world_size, "rank": dinfo.rank, "stopped_early": state.step < run.end,
    }


def out_of(max_minutes: float, elapsed_s: float, dinfo: D.DistInfo) -> bool:
    """Has this call used its ``max_minutes``? Every rank stops at the same step (any rank's clock decides)."""
    late = torch.tensor(float(elapsed_s >= 60 * max_minutes), device=dinfo.device)
    return bool(D.all_reduce_sum(late, dinfo).item() > 0)


def train_step(run: Run, state: TrainState, first: bool) -> tuple[float, float]:
    """Forward and backward over ``grad_accum`` micro-batches; leaves the clipped gradients in place.

    Returns (the step's loss averaged over ranks, the gradient norm before clipping). ``first``:
    the first step of this call, whose batch and timesteps are checked against expectations.
    """
    tc, dinfo, info, p, gens = run.cfg.train, run.dinfo, run.parts.info, run.parts, state.gens
    dev = dinfo.device
    rows = slice(dinfo.rank * run.micro, (dinfo.rank + 1) * run.micro)  # this rank's share of a global batch
    loss_acc = torch.zeros((), dtype=torch.float64, device=dev)
    for micro_step in range(tc.grad_accum):
        check = first and micro_step == 0
        batch = next_batch(run.data_iter, dinfo, dev)
        if "latent" in batch:  # precomputed by `fvdm data pack --autoencoder`: the encoder does not run
            check_latents(batch["latent"], info, run.micro, run.cfg.data.name)
            x0 = batch["latent"].to(dev, dtype=run.param_dtype, non_blocking=True)  # (B, f, c, h, w)
        else:
            check_batch(batch["video"], info, run.micro, run.cfg.data.name, check)
            x = batch["video"].to(dev, dtype=run.param_dtype, non_blocking=True)
            with torch.no_grad():
                x0 = p.autoencoder.encode(x)  # (B, F, C, H, W) -> (B, f, c, h, w) latent
        # Draw t and noise for the whole global micro-batch, keep this rank's rows.
        u = p.vtv(run.global_micro, model_frames(info), generator=gens["t"], device=dev)
        t_all = p.schedule.snap(u)  # (B_global, F)
        noise_all = torch.randn((run.global_micro, *x0.shape[1:]), generator=gens["noise"], device=dev,
                                dtype=x0.dtype)  # (B_global, F, C, H, W): own stream, whatever vtv drew
        if check:
            check_timesteps(t_all, name=f"t from vtv {run.cfg.vtv.name!r} + {run.cfg.noise_schedule.name!r}.snap")
        t, noise = t_all[rows], noise_all[rows]
        y, kwargs = conditioning(run, batch, gens["label"], rows)
        xt = p.schedule.add_noise(x0, noise, t)
        with D.grad_sync(run.model, run.raw, run.fsdp, sync=micro_step == tc.grad_accum - 1):
            with run.autocast():
                out = run.model(xt, p.schedule.timestep_input(t), y, **kwargs)
            per_frame = p.schedule.loss(out.to(run.param_dtype), x0, xt, noise, t)  # (B, F)
            loss = per_frame.mean() if tc.clean_frame_loss else generated_mean(per_frame, t)
            (loss / tc.grad_accum).backward()
        loss_acc += loss.detach().double() / tc.grad_accum
        run.buckets.add(t, per_frame)
    clip = tc.grad_clip if tc.grad_clip is not None else float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(list(run.raw.parameters()), clip)
    return float(D.all_reduce_mean(loss_acc, dinfo)), float(grad_norm)


def generated_mean(per_frame: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Mean of the (B, F) per-frame losses over the frames above level 0 (``train.clean_frame_loss: false``);
    0 with a gradient path when a micro-batch holds only clean frames, so every rank still runs backward."""
    keep = (t > 0).to(per_frame.dtype)  # (B, F)
    return (per_frame * keep).sum() / keep.sum().clamp(min=1.0)


def conditioning(run: Run, batch: dict[str, Any], gen: torch.Generator,
                 rows: slice) -> tuple[torch.Tensor | None, dict[str, Any]]:
    """(class labels (B,) or None, extra backbone kwargs): labels and/or text embeddings, with the guidance
    dropout of each drawn for the global batch from the run's own stream (rank-count invariant, like t)."""
    y, kwargs, dev = None, {}, run.dinfo.device
    if int(run.parts.spec.get("num_classes", 0) or 0) > 0:
        if "label" not in batch:
            raise ValueError(f"the backbone is class-conditional but dataset {run.cfg.data.name!r} yields no 'label'")
        y = batch["label"].to(dev)
        if run.label_dropout > 0:
            kwargs["force_drop"] = (torch.rand(run.global_micro, generator=gen, device=dev) < run.label_dropout)[rows]
    if "text_emb" in batch:  # (B, L, D) embeddings packed with the clips (fvdm data pack --text-encoder)
        emb = batch["text_emb"].to(dev, dtype=run.param_dtype)
        if run.text_dropout > 0:
            drop = (torch.rand(run.global_micro, generator=gen, device=dev) < run.text_dropout)[rows]
            # the empty prompt's embeddings, packed once with the shards (zeros when the dataset has none)
            null = getattr(run.parts.dataset, "null_text", None)
            null = torch.zeros_like(emb) if null is None else null.to(emb).expand_as(emb)
            emb = torch.where(drop[:, None, None], null, emb)
        kwargs["encoder_hidden_states"] = emb
    return y, kwargs


def show_previews(run: Run, step: int) -> None:
    """EMA sample GIFs and ``train.eval_metric`` when due (rank 0; not under FSDP2, whose EMA is sharded)."""
    tc = run.cfg.train
    if not run.dinfo.is_main or run.fsdp:
        return
    if tc.sample_every and step % tc.sample_every == 0:
        with run.logger.paused():
            write_samples(run, step)
    if tc.eval_every and step % tc.eval_every == 0:
        with run.logger.paused():
            evaluate(run, step)
    if tc.validate_every and step % tc.validate_every == 0:
        with run.logger.paused():
            try:
                validate(run, step)
            except Exception as exc:  # validation is a side show: report and keep training
                warn_once("validate_fail", f"validation at step {step} failed ({type(exc).__name__}: {exc}); "
                                           "training continues")


def save(run: Run, state: TrainState) -> None:
    """Write ``step-<N>.pt`` and point ``last.pt`` at it (rank 0; every rank joins the collectives)."""
    model_sd, opt_sd = D.full_state(run.raw, run.opt, run.fsdp)
    ema_sd, _ = D.full_state(run.ema, None, run.fsdp)
    if run.cfg.train.lora is not None:  # adapters only: the base is the pretrained weights, named by fingerprint
        model_sd = {k: v for k, v in model_sd.items() if is_lora_key(k)}
        ema_sd = {k: v for k, v in ema_sd.items() if is_lora_key(k)}
    ranks_rng = D.gather_objects(capture_rng(), run.dinfo)
    if run.dinfo.is_main:
        publish_checkpoint({
            "format": FORMAT, "version": VERSION, "step": state.step, "data_position": state.position,
            "model": model_sd, "ema": ema_sd, "optimizer": opt_sd,
            "rng": {"generator": stream_states(state.gens), "ranks": ranks_rng},
            "config": json.dumps(run.canonical, sort_keys=True), "config_hash": run.chash,
            "data_info": run.parts.info, "model_info": run.parts.spec, "world_size": run.dinfo.world_size,
            "losses": torch.tensor(state.history, dtype=torch.float64),
            "torch_version": str(torch.__version__), "plugin_origins": run.origins,
            "started_from": run.started_from,
        }, run.ckpt_path.parent, state.step, run.cfg.train.keep_last)
    state.last_ckpt_step = state.step
    D.barrier(run.dinfo)
    crash_point(f"train/checkpoint/{state.step}")  # fault-injection tests: killed right after a checkpoint


def refuse(run: Run, state: TrainState, what: str) -> NonFiniteLossError:
    """The error for a step the divergence guard refused, after setting aside the checkpoint it diverged on.

    The refused step ran on the weights after ``state.step``: a checkpoint of that step holds them and is not
    good (renamed ``diverged-step-<N>.pt``, ``last.pt`` back on the good one). Rank 0 moves files; every rank
    makes the same decision from the same state.
    """
    ckpt_dir, good = run.ckpt_path.parent, state.good_ckpt_step
    why_none = "none was written before the run diverged"
    if state.last_ckpt_step == state.step:
        aside = ckpt_dir / f"diverged-{step_file(ckpt_dir, state.step).name}"
        if run.dinfo.is_main:
            aside = set_aside_diverged(ckpt_dir, state.step, good)
        why_none = f"the newest one (step {state.step}) holds the weights that diverged and was set aside as {aside}"
    D.barrier(run.dinfo)  # every rank sees the files as rank 0 left them
    good_path = step_file(ckpt_dir, good) if good is not None else None
    if good_path is not None and not good_path.is_file():
        why_none = (f"{why_none + '; ' if state.last_ckpt_step == state.step else ''}the last good one (step {good}) "
                    f"was deleted to keep train.keep_last={run.cfg.train.keep_last}")
        good_path = None
    return diverged_error(what, run.run_dir, run.cfg.train.lr, good_path, good, why_none)
