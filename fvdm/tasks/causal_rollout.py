"""Causal rollout: a video generated chunk by chunk (frame by frame by default) by a causal backbone.

Each chunk of ``chunk`` frames is denoised over the sampling matrix with every earlier frame as clean
context; causal temporal attention means the earlier frames' features do not depend on the new ones.
With ``cache`` (the default) the backbone keeps the keys and values of finished frames
(``model.new_kv_cache()``) and each model call runs only the new chunk: a video costs time linear in
its length. Without it every call recomputes the whole past (the reference the cache must equal).
The backbone must have causal temporal attention with relative positions (unet_video with
``temporal_attention: causal, temporal_positions: rope``; ``temporal_window`` bounds how far back a
frame looks, and so the memory and time per frame). History guidance here guides between the
prediction with the past and with the new frames alone (the past dropped).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from fvdm.core.sampling import guide, sample_loop
from fvdm.tasks.base import TaskConfig, as_frames, batch_of, context_model_fn, draw_noise, window_callback
from fvdm.tasks.long_video import StartVideoTask


def check_cacheable(model: Any) -> None:
    """A one-line error naming the fix unless ``model`` can keep a key/value cache."""
    if not callable(getattr(model, "new_kv_cache", None)):
        raise ValueError(f"--cache needs a backbone with a key/value cache ({type(model).__name__} has none): "
                         "use unet_video with causal rope temporal attention, or --no-cache")
    model.new_kv_cache()  # raises for full attention or absolute positions, naming the settings


class CausalRolloutConfig(TaskConfig):
    num_frames: int = Field(64, ge=1, description="total frames N (any length: positions are relative)")
    chunk: int = Field(1, ge=1, description="frames denoised together (each at the matrix's levels)")
    cache: bool = Field(True, description="reuse finished frames' keys/values instead of recomputing the past")


class CachedModel:
    """The backbone seen through a key/value cache: calls attend to the cached frames; ``committing`` appends."""

    def __init__(self, model: Any):
        self.model, self.cache, self.committing = model, model.new_kv_cache(), False
        self.num_classes = getattr(model, "num_classes", 0)

    def __call__(self, x: torch.Tensor, t_in: torch.Tensor, y: torch.Tensor | None = None, **cond: Any) -> torch.Tensor:
        return self.model(x, t_in, y, kv_cache=self.cache, commit=self.committing, **cond)

    def add(self, model_fn: Any, frames: torch.Tensor, t: torch.Tensor) -> None:
        """Append finished ``frames`` (B, c, ...) at levels ``t`` (B, c) through ``model_fn`` (so guided branches
        cache their own keys): one forward, its output unused."""
        self.committing = True
        try:
            model_fn(frames, t)
        finally:
            self.committing = False


class PrefixModel:
    """The same rollout without a cache: every call runs the finished frames again in front of the new ones."""

    def __init__(self, model: Any, schedule: Any):
        self.model, self.schedule = model, schedule
        self.num_classes = getattr(model, "num_classes", 0)
        self.past: torch.Tensor | None = None  # (B, L, C, H, W)
        self.past_t: torch.Tensor | None = None  # (B, L) levels

    def __call__(self, x: torch.Tensor, t_in: torch.Tensor, y: torch.Tensor | None = None, **cond: Any) -> torch.Tensor:
        """``cond``: text embeddings (``encoder_hidden_states``), the same for the past and the new frames."""
        if self.past is None:
            return self.model(x, t_in, y, **cond)
        k = x.shape[0] // self.past.shape[0]  # guided batches stack k copies of the clips
        past, past_in = self.past.repeat(k, 1, 1, 1, 1), self.schedule.timestep_input(self.past_t).repeat(k, 1)
        out = self.model(torch.cat([past, x], dim=1), torch.cat([past_in.to(t_in.dtype), t_in], dim=1), y, **cond)
        return out[:, past.shape[1]:]

    def add(self, model_fn: Any, frames: torch.Tensor, t: torch.Tensor) -> None:
        self.past = frames if self.past is None else torch.cat([self.past, frames], dim=1)
        self.past_t = t if self.past_t is None else torch.cat([self.past_t, t], dim=1)


class CausalRollout(StartVideoTask):
    """Generate N frames chunk by chunk with a causal backbone (inputs: optional ``video`` first frames)."""

    Config = CausalRolloutConfig

    def check_sampling(self, sampling):
        """The options that do not apply, history guidance with a re-noised past, and a cache the backbone
        cannot keep: each one line before any input is read or any frame sampled."""
        super().check_sampling(sampling)
        cfg = self.cfg
        if cfg.mode != "fvdm" or cfg.stabilization > 0 or cfg.multiplier > 0:
            raise ValueError("causal_rollout shows finished frames clean (level 0) to the next ones; "
                             "mode, stabilization and multiplier do not apply: drop them")
        if float(sampling.history_guidance) != 1.0 and float(sampling.history_level) != 1.0:
            raise ValueError("causal_rollout's history guidance drops the past (history level 1): the past lives in "
                             "the cache and cannot be re-noised; drop --history-level or use df_rollout")
        if cfg.cache:
            check_cacheable(sampling.model)

    def run(self, sampling, inputs):
        cfg = self.cfg
        self.check_sampling(sampling)
        hg = float(sampling.history_guidance)
        total = int(inputs.get("num_frames") or cfg.num_frames)
        first = inputs.get("video")
        first = None if first is None else as_frames(first, sampling.shape, "video").to(sampling.device)
        batch = batch_of(inputs, sampling, first)
        y = self.labels(sampling, inputs, batch)
        model = sampling.model
        past = CachedModel(model) if cfg.cache else PrefixModel(model, sampling.schedule)
        with_past = context_model_fn(sampling, past, y)
        model_fn = with_past
        if hg != 1.0:  # history guidance: the unguided branch sees the new frames alone (the past dropped)
            alone = context_model_fn(sampling, model, y)
            model_fn = lambda x, t: guide(sampling.schedule, with_past(x, t), alone(x, t), hg)  # noqa: E731
        C, H, W = sampling.shape
        frames = []
        with torch.no_grad():
            if first is not None:
                first = first.expand(batch, *first.shape[1:])
                past.add(with_past, first, torch.zeros(first.shape[:2], device=sampling.device))
                frames.append(first)
            done = 0 if first is None else first.shape[1]
            n_chunks = -(-(total - done) // cfg.chunk) if total > done else 0
            for i in range(n_chunks):
                c = min(cfg.chunk, total - done)
                S = sampling.matrix(sampling.steps, c, num_timesteps=getattr(sampling.schedule, "num_timesteps", None))
                x = sample_loop(model_fn, draw_noise(sampling, (batch, c, C, H, W)), S.to(sampling.device),
                                sampler=sampling.sampler, schedule=sampling.schedule, generator=sampling.generator,
                                callback=window_callback(sampling, i, n_chunks))
                if done + c < total:  # the last chunk is never attended to
                    past.add(with_past, x, torch.zeros(x.shape[:2], device=sampling.device))
                frames.append(x)
                done += c
        return torch.cat(frames, dim=1)[:, :total]
