"""The one sampling loop: walk x through the rows of a sampling matrix S.

``sample_loop`` steps x (B, F, C, H, W) from row k to row k+1 of S (K+1, F) or
(B, K+1, F) with any registered sampler. Context frames (``ctx``) are handled here,
the same way for every task:

- hard context (multiplier m = 0): the frame is re-imposed exactly after every step;
  with ``stabilization`` > 0 the model sees it noised to that small level (Diffusion
  Forcing), its stored value stays clean.
- soft context (m > 0, Pusa): the frame starts at ``m·base_0`` and follows the level
  ``m·base_k`` (base_k = the highest level of the generated frames in row k); it is
  denoised by the model like the others and not re-imposed.
- ``vanilla_replacement`` (baseline for synchronized-timestep models): every context
  frame is re-noised to ``base_k`` before each step, so all frames share one level
  (the classic replacement trick); the clean values are put back at the end.

``make_model_fn`` turns a backbone into ``model_fn(x, t)`` (timestep conversion,
class label, classifier-free guidance on the prediction channels). ``history_guidance``
(Diffusion Forcing Transformer's history guidance) guides between the prediction with the
context as given and with the context noised to ``history_level`` (1 = dropped).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from fvdm.core.interfaces import ModelFn, MultistepSampler, NoiseSchedule, Sampler
from fvdm.core.tensor import append_dims, check_video


def check_matrix(S: torch.Tensor, num_frames: int | None = None, batch_size: int | None = None) -> torch.Tensor:
    """Validate a sampling matrix and return it as (B or 1, K+1, F) float."""
    if not isinstance(S, torch.Tensor) or S.ndim not in (2, 3):
        shape = tuple(S.shape) if isinstance(S, torch.Tensor) else type(S).__name__
        raise ValueError(f"sampling matrix S must be (K+1, F) or (B, K+1, F), got {shape}")
    S3 = S.unsqueeze(0) if S.ndim == 2 else S
    if not S3.is_floating_point():
        raise TypeError(f"S must be float levels in [0, 1], got {S.dtype}")
    if S3.shape[1] < 2:
        raise ValueError(f"S has {S3.shape[1]} row(s); it needs K+1 >= 2 rows (K >= 1 steps)")
    if num_frames is not None and S3.shape[2] != num_frames:
        raise ValueError(f"S has {S3.shape[2]} frame columns but x has F={num_frames} frames; "
                         "build S with the same number of frames")
    if batch_size is not None and S3.shape[0] not in (1, batch_size):
        raise ValueError(f"S has batch {S3.shape[0]} but x has B={batch_size}")
    if bool(S3.isnan().any()) or float(S3.min()) < 0 or float(S3.max()) > 1:
        raise ValueError("S levels must lie in [0, 1] (0 = clean, 1 = pure noise)")
    if bool((S3[:, 1:] > S3[:, :-1]).any()):
        raise ValueError("every column of S must be non-increasing (a frame's level never goes up)")
    return S3


def alpha_sigma(
    schedule: NoiseSchedule, t: torch.Tensor, ndim: int, dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, sigma) at per-frame levels ``t`` (B, F), shaped for ``ndim`` via append_dims.

    Computed in float64 and returned in ``dtype`` (default ``t.dtype``). A level of
    exactly 0 is clean data, (1, 0), whatever the schedule's grid says at n = 0
    (DDIM's ``set_alpha_to_one``): a frame's last step lands on x0_hat.
    """
    a, s = schedule.alpha_sigma(t.to(torch.float64))
    a, s = a.to(torch.float64), s.to(torch.float64)
    clean = t == 0
    a = torch.where(clean, torch.ones_like(a), a)
    s = torch.where(clean, torch.zeros_like(s), s)
    dtype = dtype or t.dtype
    return append_dims(a, ndim).to(dtype), append_dims(s, ndim).to(dtype)


def _per_frame(v: Any, B: int, F: int, name: str, device: Any) -> torch.Tensor:
    t = torch.as_tensor(v, dtype=torch.float32, device=device)
    if t.ndim == 0:
        t = t.expand(F)
    if t.ndim == 1:
        t = t.unsqueeze(0)
    if t.ndim != 2 or t.shape[1] != F or t.shape[0] not in (1, B):
        raise ValueError(f"{name} must be a scalar, (F,) or (B, F) with F={F}, B={B}; got {tuple(t.shape)}")
    return t.expand(B, F)


def effective_matrix(
    S: torch.Tensor, ctx: torch.Tensor, multipliers: torch.Tensor, *, stabilization: float = 0.0,
    vanilla_replacement: bool = False,
) -> torch.Tensor:
    """(B, K+1, F) levels actually fed to the sampler, context columns filled in."""
    B, F = ctx.shape
    S3 = S.expand(B, *S.shape[1:]).clone()
    gen = ~ctx
    if not bool(gen.any(dim=1).all()):
        raise ValueError("context covers every frame of a sample: nothing to generate; leave a frame unknown")
    base = torch.where(gen[:, None, :], S3, torch.zeros_like(S3)).amax(dim=2, keepdim=True)  # (B, K+1, 1)
    soft = ctx & (multipliers > 0)
    hard = ctx & ~soft
    if vanilla_replacement:
        S3 = torch.where(ctx[:, None, :], base.expand_as(S3), S3)
        return S3
    S3 = torch.where(soft[:, None, :], (multipliers[:, None, :] * base).clamp(0, 1), S3)
    S3 = torch.where(hard[:, None, :], torch.full_like(S3, float(stabilization)), S3)
    return S3


def sample_loop(
    model_fn: ModelFn,
    x: torch.Tensor,
    S: torch.Tensor,
    *,
    sampler: Sampler | MultistepSampler,
    schedule: NoiseSchedule,
    ctx: torch.Tensor | None = None,
    ctx_x0: torch.Tensor | None = None,
    stabilization: float = 0.0,
    multipliers: Any = None,
    vanilla_replacement: bool = False,
    generator: torch.Generator | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    state: Any = None,
    history_guidance: float = 1.0,
    history_level: float = 1.0,
) -> torch.Tensor:
    """Sample by stepping x through the rows of S; returns x at the last row (B, F, C, H, W).

    ``x`` is the start: noise at row 0 for generated frames; for context frames it is
    the noise used to bring ``ctx_x0`` to its starting level. ``ctx`` (B, F) or (F,)
    bool marks context frames, ``ctx_x0`` (B, F, C, H, W) holds their clean values
    (other frames ignored). ``multipliers``: scalar, (F,) or (B, F) noise multipliers
    of context frames (0 = hard, exact). ``callback`` gets a dict with ``step``
    (1-based), ``num_steps``, ``x``, ``t`` (and ``state``) after each row.

    Multistep samplers (those needing earlier steps' predictions) keep that history in
    an explicit state object instead of hidden counters: a sampler with
    ``init_state(x)`` gets ``state=`` in every ``step`` and returns ``(x, new_state)``;
    the loop hands each step the state the previous step returned. ``state`` starts
    from ``sampler.init_state(x)`` unless given. Stateless samplers (no ``init_state``)
    are called exactly as before.

    ``history_guidance`` w != 1 replaces the model by ``u + w·(c - u)``: c the prediction with
    the context as the loop shows it, u with every context frame noised to ``history_level``
    (1 = dropped, the frame is pure noise). It needs context frames; it composes with class
    guidance already inside ``model_fn`` (each branch is then class-guided).
    """
    check_video(x)
    B, F = x.shape[:2]
    if not 0.0 <= float(stabilization) < 1.0:
        raise ValueError(f"stabilization must be in [0, 1) (got {stabilization}); 0 shows context clean")
    S3 = check_matrix(S, F, B).to(device=x.device, dtype=torch.float32)
    if ctx is None:
        ctx_b = torch.zeros(B, F, dtype=torch.bool, device=x.device)
    else:
        ctx_b = torch.as_tensor(ctx, dtype=torch.bool, device=x.device)
        ctx_b = (ctx_b.unsqueeze(0) if ctx_b.ndim == 1 else ctx_b).expand(B, F)
    has_ctx = bool(ctx_b.any())
    if has_ctx:
        if ctx_x0 is None:
            raise ValueError("ctx marks context frames but ctx_x0 (their clean values) is missing")
        if ctx_x0.shape != x.shape:
            raise ValueError(f"ctx_x0 must have the shape of x {tuple(x.shape)}, got {tuple(ctx_x0.shape)}")
        ctx_x0 = ctx_x0.to(device=x.device, dtype=x.dtype)
    m = _per_frame(0.0 if multipliers is None else multipliers, B, F, "multipliers", x.device)
    if bool((m < 0).any()):
        raise ValueError("noise multipliers must be >= 0 (0 freezes a context frame exactly)")
    if float(history_guidance) != 1.0:
        if not has_ctx:
            raise ValueError(f"history guidance (scale {history_guidance:g}) needs context frames and this sample has "
                             "none; drop it (scale 1) or give context (a task with given frames)")
        model_fn = history_guided(model_fn, schedule, ctx_b, ctx_x0, float(history_guidance), float(history_level),
                                  generator)
    Se = effective_matrix(S3, ctx_b, m, stabilization=stabilization, vanilla_replacement=vanilla_replacement)
    hard = append_dims(ctx_b & ((m == 0) | vanilla_replacement), x.ndim)  # re-imposed frames
    renoise = has_ctx and (vanilla_replacement or stabilization > 0)

    if has_ctx:  # context frames start at their row-0 level, from ctx_x0 and the given noise
        a0, s0 = alpha_sigma(schedule, Se[:, 0], x.ndim, x.dtype)
        ctx5 = append_dims(ctx_b, x.ndim)
        x = torch.where(ctx5, a0 * ctx_x0 + s0 * x, x)
        x = torch.where(hard, ctx_x0, x) if not renoise else x
    multistep = callable(getattr(sampler, "init_state", None))
    if multistep and state is None:
        state = sampler.init_state(x)
    elif state is not None and not multistep:
        raise ValueError(f"state was given but sampler {type(sampler).__name__} keeps none (it has no init_state); "
                         "drop state= or use a multistep sampler")
    K = Se.shape[1] - 1
    for k in range(K):
        t_from, t_to = Se[:, k], Se[:, k + 1]
        if not torch.equal(t_from, t_to):
            if renoise:  # show hard context at its (stabilization or synchronized) level
                a, s = alpha_sigma(schedule, t_from, x.ndim, x.dtype)
                noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x = torch.where(hard, a * ctx_x0 + s * noise, x)
            if multistep:
                x, state = sampler.step(model_fn, x, t_from, t_to, schedule=schedule, generator=generator,
                                        state=state)
            else:
                x = sampler.step(model_fn, x, t_from, t_to, schedule=schedule, generator=generator)
            if has_ctx:
                x = torch.where(hard, ctx_x0, x)
        if callback is not None:
            callback({"step": k + 1, "num_steps": K, "x": x, "t": t_to, "state": state})
    return torch.where(hard, ctx_x0, x) if has_ctx else x


def make_model_fn(
    model: Callable[..., torch.Tensor], schedule: Any, *, y: torch.Tensor | None = None, cfg_scale: float = 1.0,
    null_label: int | None = None, text: torch.Tensor | None = None, null_text: torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> ModelFn:
    """Backbone -> ``model_fn(x, t)`` on levels t (B, F) in [0, 1].

    The backbone gets ``schedule.timestep_input(t)``, the class labels ``y`` (B,) and/or the text
    embeddings ``text`` (B, L, D) as ``encoder_hidden_states``. With ``cfg_scale != 1``,
    classifier-free guidance runs cond and uncond in one doubled batch and mixes only the
    prediction channels, ``uncond + s·(cond - uncond)`` (learned-variance channels come from the
    conditional pass, as DiT/Latte): the uncond pass takes label ``null_label`` (the class-dropout
    embedding, default ``num_classes``) and the embeddings ``null_text`` (a negative prompt's, or
    the empty prompt's). History guidance wraps the result, so the two compose.

    ``dtype``: the backbone's when it runs in half precision: x and the embeddings are cast to it, the
    timesteps are not (diffusers' Wan casts them inside, after the sinusoidal features), and the prediction
    comes back in x's dtype, so the sampler's update, schedule and noise stay float32 as in diffusers'
    pipelines (their scheduler upcasts the model output).
    """
    to_input = getattr(schedule, "timestep_input", lambda t: t)
    if text is not None and text.ndim != 3:
        raise ValueError(f"text embeddings must be (B, L, D), got {tuple(text.shape)}")

    def call(x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None, emb: torch.Tensor | None) -> torch.Tensor:
        xin = x if dtype is None else x.to(dtype)
        args = (xin, to_input(t)) if labels is None else (xin, to_input(t), _tiled(labels, x.shape[0]))
        if emb is None:
            out = model(*args)
        else:
            out = model(*args, encoder_hidden_states=_tiled(emb if dtype is None else emb.to(dtype), x.shape[0]))
        return out if dtype is None else out.to(x.dtype)

    if cfg_scale == 1.0 or (y is None and text is None):
        return lambda x, t: call(x, t, y, text)
    y_null = None
    if y is not None:
        if null_label is None:
            null_label = int(getattr(model, "num_classes", 0))
            if null_label <= 0:
                raise ValueError("classifier-free guidance needs a class-conditional model (num_classes > 0) "
                                 "or an explicit null_label")
        y_null = torch.full_like(y, null_label)
    if text is not None:
        if null_text is None:
            raise ValueError("classifier-free guidance on text needs the unconditional embeddings: pass null_text "
                             "(the negative prompt's, or the empty prompt's: --negative-prompt '')")
        if null_text.shape != text.shape and null_text.shape[1:] != text.shape[1:]:
            raise ValueError(f"null_text {tuple(null_text.shape)} does not match text {tuple(text.shape)}: "
                             "encode both with the same text encoder (same max_length)")
        null_text = null_text.expand_as(text)

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        labels = None if y is None else torch.cat([_tiled(y, x.shape[0]), _tiled(y_null, x.shape[0])])
        emb = None if text is None else torch.cat([_tiled(text, x.shape[0]), _tiled(null_text, x.shape[0])])
        out = call(torch.cat([x, x]), torch.cat([t, t]), labels, emb)
        return guide(schedule, *out.chunk(2, dim=0), cfg_scale)

    return guided


def _tiled(y: torch.Tensor, batch: int) -> torch.Tensor:
    """Labels (B,) or embeddings (B, L, D) for a batch of k·B stacked copies (history guidance runs its
    branches as one batch)."""
    if batch == y.shape[0]:
        return y
    if batch % y.shape[0]:
        raise ValueError(f"a batch of {batch} clips cannot take {y.shape[0]} conditions; give one per clip")
    return y.repeat(batch // y.shape[0], *([1] * (y.ndim - 1)))


def guide(schedule: Any, cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """``uncond + scale·(cond - uncond)`` on the prediction channels; learned-variance channels from ``cond``."""
    if getattr(schedule, "learn_sigma", False):
        pc, var = schedule.split_output(cond)
        pu, _ = schedule.split_output(uncond)
        return torch.cat([pu + scale * (pc - pu), var], dim=2)
    return uncond + scale * (cond - uncond)


def history_guided(
    model_fn: ModelFn, schedule: NoiseSchedule, ctx: torch.Tensor, ctx_x0: torch.Tensor, scale: float,
    level: float, generator: torch.Generator | None = None,
) -> ModelFn:
    """History guidance (Song et al. 2025, DFoT): guide by how much the prediction depends on the context.

    Both branches run in one doubled batch: the context frames ``ctx`` (B, F) as given, and the same
    frames re-drawn from their clean values ``ctx_x0`` at ``level`` with fresh noise (frames already
    noisier than that keep theirs). A model trained with independent per-frame levels (PTSS,
    diffusion forcing) has seen such inputs; with ``level`` 1 the context is simply absent.
    """
    if not 0.0 < level <= 1.0:
        raise ValueError(f"history_level must be in (0, 1] (got {level}); 1 drops the context, smaller noises it")

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        noised = ctx & (t < level)  # (B, F)
        t_u = torch.where(noised, torch.full_like(t, level), t)
        a, s = alpha_sigma(schedule, t_u, x.ndim, x.dtype)
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_u = torch.where(append_dims(noised, x.ndim), a * ctx_x0 + s * z, x)
        out = model_fn(torch.cat([x, x_u]), torch.cat([t, t_u]))
        return guide(schedule, *out.chunk(2, dim=0), scale)

    return guided
