"""Do a model's context tasks keep the given digits? Identity F1 of zero-shot samples on held-out clips.

One scoring, shared by the demo (the committed fine-tuned model next to the model it just trained)
and ``benchmarks/train_digits_fvdm.py`` (the fine-tuning learning curve): image-to-video (frame 0
given), extension (the first half given) and interpolation (first + last given) from held-out
moving-digits clips, native sampling (the given frames at level 0, re-imposed every step), the same
noise for every model (chunk ``b`` draws from generator ``seed + b``). Each task is scored by
``digit_identity`` (per generated frame, F1 of the digit classes the bundled detector finds against
those found in the given frames) and ``digit_recognisability``; ``real_identity`` scores the real
clips the same way, the ceiling set by the detector's own error.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

#: task -> its given frame indices for a clip of F frames
GIVEN: dict[str, Callable[[int], list[int]]] = {
    "image_to_video": lambda f: [0],
    "extension": lambda f: list(range(f // 2)),
    "interpolation": lambda f: [0, f - 1],
}


def task_inputs(task: str, z: torch.Tensor) -> dict[str, torch.Tensor]:
    """z (B, F, C, H, W) latents of the held-out clips -> the task's inputs (its given frames)."""
    f = z.shape[1]
    if task == "image_to_video":
        return {"image": z[:, 0]}
    if task == "extension":
        return {"video": z[:, : f // 2]}
    if task == "interpolation":
        return {"first": z[:, 0], "last": z[:, -1]}
    raise ValueError(f"no identity scoring for task {task!r}; choose from {sorted(GIVEN)}")


def held_out(plugins: Any, data: dict[str, Any], n: int, split: str = "val") -> torch.Tensor:
    """The first ``n`` clips (n, F, C, H, W) in [-1, 1] of ``split`` of the dataset ``data`` (a spec dict);
    ``train`` is the overfitting check (the clips a run on ``num_clips: n`` trains on), not a held-out score."""
    val = plugins["datasets"].build({**data, "split": split, "num_clips": n})
    return torch.stack([val[i]["video"] for i in range(n)])


def sample_tasks(loaded: Any, plugins: Any, gt: torch.Tensor, steps: int, *, seed: int = 0,
                 chunk: int = 16, schedule: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """task -> (n, F, C, H, W) native zero-shot samples in [-1, 1] from ``gt``'s given frames; ``schedule``: a
    sampling-schedule spec (None: the checkpoint's, e.g. standard: every generated frame at one level)."""
    from fvdm.core.sampling_context import make_context

    f = gt.shape[1]
    z_gt = loaded.autoencoder.encode(gt)
    out = {}
    for name in GIVEN:
        task = plugins["tasks"].build({"name": name, "mode": "fvdm",
                                       **({"num_frames": f} if name == "extension" else {})})
        clips = []
        for b in range(0, len(gt), chunk):
            z = z_gt[b:b + chunk]
            ctx = make_context(loaded, plugins, steps=steps, batch_size=len(z), seed=seed + b, schedule=schedule)
            with torch.no_grad():
                clips.append(loaded.autoencoder.decode(task.run(ctx, task_inputs(name, z))))
        out[name] = torch.cat(clips).clamp(-1, 1)  # a sampler without x0 clipping may overshoot
    return out


def score_tasks(plugins: Any, videos: dict[str, torch.Tensor], gt: torch.Tensor) -> dict[str, dict[str, float]]:
    """task -> {identity_f1, recognisability} of ``videos`` (from ``sample_tasks``) against ``gt``'s given frames."""
    ident = plugins["evaluators"].build({"name": "digit_identity"})
    recog = plugins["evaluators"].build({"name": "digit_recognisability"})
    f = gt.shape[1]
    return {name: {"identity_f1": round(float(ident.evaluate(v, gt, context=GIVEN[name](f))["value"]), 4),
                   "recognisability": round(float(recog.evaluate(v)["value"]), 4)} for name, v in videos.items()}


def real_identity(plugins: Any, gt: torch.Tensor) -> dict[str, float]:
    """The ceiling: the real clips scored against their own given frames, per task."""
    return {name: s["identity_f1"] for name, s in score_tasks(plugins, {n: gt for n in GIVEN}, gt).items()}


def copy_nearest(gt: torch.Tensor, given: list[int]) -> torch.Tensor:
    """Every frame of ``gt`` (N, F, C, H, W) replaced by its nearest given frame (ties: the earlier one): what
    no model at all scores by keeping the given digits still, the floor a model that carries them must beat."""
    src = [min(given, key=lambda g: (abs(g - j), g)) for j in range(gt.shape[1])]
    return gt[:, src]


def copy_identity(plugins: Any, gt: torch.Tensor) -> dict[str, float]:
    """The floor: copies of the nearest given frame scored against the given frames, per task."""
    f = gt.shape[1]
    copies = {name: copy_nearest(gt, GIVEN[name](f)) for name in GIVEN}
    return {name: s["identity_f1"] for name, s in score_tasks(plugins, copies, gt).items()}
