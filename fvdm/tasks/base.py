"""Task API: a ``SamplingContext`` (model + sampling settings) and ``Task.run``.

A task turns user inputs into a sampled video::

    task = plugins["tasks"].build({"name": "image_to_video", "multiplier": 0.0})
    video = task.run(sampling, {"image": img})        # (B, N, C, H, W)

Tasks only build ``(x_init, ctx, ctx_x0, S)`` per window and call
``fvdm.core.sampling.sample_loop``; everything happens in the model's space
(latents when an autoencoder is used; the CLI encodes/decodes).

Common options (``TaskConfig``): ``mode`` (``fvdm`` or the ``vanilla_replacement``
baseline), ``stabilization`` (level at which the model sees context), ``multiplier``
(Pusa noise multiplier of context frames, 0 = frozen exactly), ``window`` (frames per
model call; default the checkpoint's frame count). Inputs may also hold ``labels``
(B,) for class-conditional models and ``multipliers`` ((F,) or (B, F)) per frame.

What a user gives on the command line or in a jobs file is the task's own business:
``Task.Inputs`` (a pydantic model, ``fvdm.tasks.inputs.TaskInputs``) declares it and
``Task.read_inputs(given, reader)`` turns it into the tensors ``run`` takes.
``Task.check_sampling(sampling)`` refuses settings the task cannot sample with before any
input file is read. Build the context with ``fvdm.core.sampling_context`` (``make_context`` for a
checkpoint, ``build_context`` for a model and its parts), never field by field.

Batch: ``batch_of`` gives ``sampling.batch_size`` samples of one given context (different
noise each), or one sample per given context when several are given.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping

import torch
from pydantic import Field

from fvdm.core.interfaces import PluginConfig
from fvdm.core.sampling import make_model_fn, sample_loop
from fvdm.core.sampling_context import SamplingContext  # noqa: F401  (re-exported: tasks type against it)
from fvdm.tasks.inputs import InputReader, TaskInputs

if TYPE_CHECKING:
    from fvdm.core.plugins import FvdmPlugins


class TaskConfig(PluginConfig):
    mode: Literal["fvdm", "vanilla_replacement"] = Field(
        "fvdm", description="fvdm: context at its own level; vanilla_replacement: re-noise it each step (baseline)")
    stabilization: float = Field(0.0, ge=0, lt=1, description="level at which the model sees hard context")
    multiplier: float = Field(0.0, ge=0, le=1, description="Pusa noise multiplier of context frames; 0 = frozen")
    window: int | None = Field(None, ge=1, description="frames per model call; default: the checkpoint's count")


class Task:
    """Base class: subclasses implement ``run(sampling, inputs) -> (B, N, C, H, W)``."""

    Config = TaskConfig
    Inputs = TaskInputs  # what a user gives (files, indices); read by ``read_inputs``
    needs: tuple[str, ...] = ()  # input keys ``run`` requires: what ``require(inputs)`` checks by default
    #: generates without given frames: a class-conditional checkpoint gets labels 0, 1, ... (cycled) when the
    #: user gives none, instead of the null (unconditional) label
    default_labels: bool = False
    #: conditions on given frames (False: unconditional generation; history guidance is refused up front)
    uses_context: bool = True

    def __init__(self, cfg: TaskConfig):
        self.cfg = cfg

    def run(self, sampling: SamplingContext, inputs: Mapping[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def check_sampling(self, sampling: SamplingContext) -> None:
        """Refuse, in one line naming the fix, settings this task cannot sample with (the model, the window,
        the sampling options). The CLI calls it before any input file is read; ``run`` may call it too.
        The base checks that the window fits the checkpoint; a subclass adds its own checks."""
        self.window(sampling)

    def read_inputs(self, given: TaskInputs, reader: InputReader) -> dict[str, Any]:
        """Validated user inputs (``self.Inputs``) -> the ``inputs`` mapping of ``run`` (model space).

        The base reads the class labels; subclasses call it and add what they read with ``reader``.
        """
        if given.label is not None:
            return {"labels": torch.tensor(given.label, dtype=torch.long)}
        if self.default_labels and reader.num_classes > 0:
            return {"labels": torch.arange(reader.batch_size) % reader.num_classes}
        return {}

    # -- helpers -------------------------------------------------------------------
    def window_size(self, num_frames: int) -> int:
        """Frames per window for a checkpoint of ``num_frames`` frames (``window`` option, default all)."""
        w = self.cfg.window or num_frames
        if w > num_frames:
            raise ValueError(f"window of {w} frames exceeds the checkpoint's frame count {num_frames}; "
                             f"use a window <= {num_frames} (e.g. --window {num_frames})")
        return w

    def window(self, sampling: SamplingContext) -> int:
        return self.window_size(sampling.num_frames)

    def require(self, inputs: Mapping[str, Any], *keys: str) -> None:
        """Raise naming the missing ones unless ``inputs`` holds every key (default: ``needs``)."""
        missing = [k for k in keys or self.needs if inputs.get(k) is None]
        if missing:
            raise ValueError(f"task {type(self).__name__} needs input(s) {', '.join(missing)}; "
                             f"got {', '.join(k for k, v in inputs.items() if v is not None) or 'none'}")

    def labels(self, sampling: SamplingContext, inputs: Mapping[str, Any], batch: int) -> torch.Tensor | None:
        y = inputs.get("labels")
        if y is None:
            return None
        y = torch.as_tensor(y, dtype=torch.long, device=sampling.device).reshape(-1)
        if y.numel() == 1:
            y = y.expand(batch)
        if y.numel() != batch:
            raise ValueError(f"labels has {y.numel()} entries but the batch has {batch}")
        if sampling.num_classes <= 0:
            raise ValueError("labels given but the model is unconditional (num_classes = 0); drop --label")
        if int(y.min()) < 0 or int(y.max()) >= sampling.num_classes:
            raise ValueError(f"labels must be in [0, {sampling.num_classes - 1}], got {y.tolist()}")
        return y


def as_frames(v: Any, shape: tuple[int, int, int], name: str, *, single: bool = False) -> torch.Tensor:
    """Given frames -> (B, n, C, H, W) float; ``single``: an image (C,H,W)/(B,C,H,W) -> (B, 1, C, H, W)."""
    x = torch.as_tensor(v)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be float in [-1, 1] (model space), got {x.dtype}")
    if single:
        x = x.unsqueeze(0) if x.ndim == 3 else x
        if x.ndim != 4:
            raise ValueError(f"{name} must be an image (C, H, W) or (B, C, H, W), got {tuple(x.shape)}")
        x = x.unsqueeze(1)
    else:
        x = x.unsqueeze(0) if x.ndim == 4 else x
        if x.ndim != 5:
            raise ValueError(f"{name} must be frames (n, C, H, W) or (B, n, C, H, W), got {tuple(x.shape)}")
    if tuple(x.shape[2:]) != tuple(shape):
        raise ValueError(f"{name} frames have shape (C, H, W) = {tuple(x.shape[2:])} but the model expects "
                         f"{tuple(shape)}; resize them (the CLI does with --on-mismatch resize)")
    return x.float()


def sample_window(
    task: Task, sampling: SamplingContext, *, num_frames: int, batch: int, ctx_x0: torch.Tensor | None = None,
    ctx: torch.Tensor | None = None, y: torch.Tensor | None = None, multipliers: Any = None,
    matrix: Any = None, window_index: int = 0, num_windows: int = 1,
) -> torch.Tensor:
    """Sample one window of ``num_frames`` frames; context ``ctx`` (F,) with values ``ctx_x0`` (B, F, ...)."""
    C, H, W = sampling.shape
    builder = matrix if matrix is not None else sampling.matrix
    ctx_mask = None if ctx is None else torch.as_tensor(ctx, dtype=torch.bool)
    S = builder(sampling.steps, num_frames, context=ctx_mask,
                num_timesteps=getattr(sampling.schedule, "num_timesteps", None))
    noise = draw_noise(sampling, (batch, num_frames, C, H, W))
    has_ctx = ctx_mask is not None and bool(ctx_mask.any())
    hg = float(sampling.history_guidance)
    if hg != 1.0 and not has_ctx and num_windows == 1:  # a rollout's first window may lack context; its others not
        raise ValueError(f"history guidance ({hg:g}) needs context frames and task {type(task).__name__} has none "
                         f"here; drop --history-guidance or use a task with given frames "
                         f"({', '.join(context_tasks(sampling.plugins)) or 'none registered'})")
    if multipliers is None and ctx_mask is not None and task.cfg.multiplier > 0:
        multipliers = task.cfg.multiplier
    model_fn = context_model_fn(sampling, sampling.model, y)
    cb = window_callback(sampling, window_index, num_windows)
    with torch.no_grad():
        return sample_loop(
            model_fn, noise, S.to(sampling.device), sampler=sampling.sampler, schedule=sampling.schedule,
            ctx=None if ctx_mask is None else ctx_mask.to(sampling.device),
            ctx_x0=None if ctx_x0 is None else ctx_x0.to(sampling.device),
            stabilization=task.cfg.stabilization, multipliers=multipliers,
            vanilla_replacement=task.cfg.mode == "vanilla_replacement", generator=sampling.generator, callback=cb,
            history_guidance=hg if has_ctx else 1.0, history_level=sampling.history_level,
        )


def draw_noise(sampling: SamplingContext, shape: tuple[int, ...]) -> torch.Tensor:
    """Starting noise of ``shape`` from the context's generator, on the sampling device.

    Drawn on the generator's own device (a CUDA generator cannot fill a CPU tensor), then moved."""
    g = sampling.generator
    return torch.randn(shape, generator=g, device=g.device if g is not None else "cpu").to(sampling.device)


def context_model_fn(sampling: SamplingContext, model: Callable[..., torch.Tensor], y: torch.Tensor | None) -> Any:
    """``make_model_fn`` for ``model`` with the context's schedule, text and classifier-free guidance."""
    text = None if sampling.text is None else sampling.text.to(sampling.device)
    null_text = None if sampling.null_text is None else sampling.null_text.to(sampling.device)
    return make_model_fn(model, sampling.schedule, y=y, cfg_scale=sampling.cfg_scale,
                         null_label=sampling.num_classes if sampling.num_classes > 0 else None,
                         text=text, null_text=null_text, dtype=sampling.model_dtype)


def window_callback(sampling: SamplingContext, index: int, count: int) -> Callable[[dict[str, Any]], None] | None:
    """The context's callback with the window's ``index`` and ``count`` added (None without a callback)."""
    if sampling.callback is None:
        return None
    return lambda info: sampling.callback({**info, "window": index, "num_windows": count})


def place(frames: torch.Tensor, positions: list[int], num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Put given frames (B, n, ...) at ``positions`` of an F-frame window -> (ctx_x0, ctx (F,))."""
    B, n = frames.shape[:2]
    if len(positions) != n:
        raise ValueError(f"{n} given frames but {len(positions)} positions")
    if len(set(positions)) != n or min(positions) < 0 or max(positions) >= num_frames:
        raise ValueError(f"positions {positions} must be distinct frame indices in [0, {num_frames - 1}]")
    ctx_x0 = torch.zeros(B, num_frames, *frames.shape[2:], dtype=frames.dtype, device=frames.device)
    ctx_x0[:, positions] = frames
    ctx = torch.zeros(num_frames, dtype=torch.bool)
    ctx[positions] = True
    return ctx_x0, ctx


def num_windows(total: int, window: int, overlap: int, first_new: int | None = None) -> int:
    """Windows a rollout needs: the first yields ``first_new`` new frames (default ``window``), each next one
    ``window - overlap``."""
    first_new = window if first_new is None else first_new
    if total <= first_new:
        return 1
    return 1 + math.ceil((total - first_new) / (window - overlap))


def rollout(
    task: Task, sampling: SamplingContext, *, total: int, overlap: int, batch: int,
    first: torch.Tensor | None = None, y: torch.Tensor | None = None, matrix: Any = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Sliding-window generation of ``total`` frames: window W, overlap o, stride W - o.

    Window 0 has the given ``first`` frames (B, k, ...) as context (or none); window
    c > 0 takes the previous ``o`` output frames as context at positions 0..o-1 and
    keeps its W - o new frames. Returns (video (B, total, ...), per-window outputs).
    Cost is linear in ``total``: one K-step window per W - o frames.
    """
    W = task.window(sampling)
    if total < 1:
        raise ValueError(f"number of frames must be >= 1 (got {total})")
    k = 0 if first is None else first.shape[1]
    if k >= W:
        raise ValueError(f"{k} context frames leave nothing to generate in a {W}-frame window; "
                         f"give at most {W - 1} context frames")
    if total <= k:
        raise ValueError(f"asked for {total} frames but {k} are already given; ask for more than {k}")
    if not 0 <= overlap < W:
        raise ValueError(f"overlap must be in [0, {W - 1}] for a {W}-frame window (got {overlap})")
    W0 = min(W, total)
    n_win = num_windows(total, W, overlap, first_new=W0)
    windows: list[torch.Tensor] = []
    ctx_x0 = ctx = None
    if first is not None:
        ctx_x0, ctx = place(first, list(range(k)), W0)
    out = sample_window(task, sampling, num_frames=W0, batch=batch, ctx_x0=ctx_x0, ctx=ctx, y=y,
                        matrix=matrix, window_index=0, num_windows=n_win)
    windows.append(out)
    video = out
    for c in range(1, n_win):
        ctx_x0 = ctx = None  # overlap 0: independent windows (an ablation without continuity)
        if overlap > 0:
            ctx_x0, ctx = place(video[:, -overlap:], list(range(overlap)), W)
        out = sample_window(task, sampling, num_frames=W, batch=batch, ctx_x0=ctx_x0, ctx=ctx, y=y,
                            matrix=matrix, window_index=c, num_windows=n_win)
        windows.append(out)
        video = torch.cat([video, out[:, overlap:]], dim=1)
    return video[:, :total], windows


def context_tasks(plugins: FvdmPlugins | None) -> list[str]:
    """Names of the registered tasks that condition on given frames (``uses_context``, default True): what
    a message offers instead of a task without context. Read from the registry, so a plugin's task counts."""
    if plugins is None:
        return []
    return [e.name for e in plugins["tasks"].list() if getattr(e.obj, "uses_context", True)]


def batch_of(inputs: Mapping[str, Any], sampling: SamplingContext, *tensors: torch.Tensor | None) -> int:
    """Samples to draw: the batch of the first given tensor (else of ``labels``), where one given clip (or
    none) is shared by ``sampling.batch_size`` samples, each with its own noise (``expand_batch`` it)."""
    given = next((int(t.shape[0]) for t in tensors if t is not None), None)
    y = inputs.get("labels")
    if given is None and y is not None:
        given = int(torch.as_tensor(y).reshape(-1).numel())
    n = int(sampling.batch_size)
    if given is None or given == 1:
        return n
    if n in (1, given):
        return given
    raise ValueError(f"{given} given clips but batch_size {n}: give one clip (shared by the {n} samples), or "
                     f"batch_size 1 or {given} (one sample per clip)")


def expand_batch(x: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    """``x`` (b, ...) as a batch of ``batch``: as it is, or its one clip shared by every sample (a view)."""
    if x.shape[0] == batch:
        return x
    if x.shape[0] == 1:
        return x.expand(batch, *x.shape[1:])
    raise ValueError(f"{name} has batch {x.shape[0]} but the others have {batch}")
