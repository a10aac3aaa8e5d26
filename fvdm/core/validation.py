"""Validation while training (``train.validate_every``): fixed held-out tasks, same noise every time.

Fine-tuning a model into an FVDM model should show, as it runs, what it gains (tasks with given
frames) and what it loses (generating from nothing). Every ``validate_every`` steps the EMA model
samples the same ``validate_clips`` held-out clips (the data's test split when its Config has a
``split``, else the first clips of the training data) through each task of ``validate_tasks`` with
the same seed, so two validations differ only by the weights. Each writes one PNG grid
(``validation/step_<N>.png``: per clip a row of the real clip, then one row per task) and the same
grid to TensorBoard, and logs per task the mean absolute error of the generated frames to the real
clip's (pixel space, [-1, 1] scale; the given frames are left out), into ``metrics.jsonl``.

A text-conditioned model gets the held-out clips' packed embeddings when the data has them, else
the prompts of ``validate_prompts`` (cycled over the clips) through the config's text encoder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from einops import rearrange

from fvdm.core.build import model_frames
from fvdm.core.errors import ConfigError, warn_once

#: task -> (inputs from the held-out latents (B, F, C, H, W), the mask of generated frames (F,))
TaskInputs = Callable[[torch.Tensor], tuple[dict[str, Any], torch.Tensor]]


def _given(frames: int, given: list[int]) -> torch.Tensor:
    mask = torch.ones(frames, dtype=torch.bool)
    mask[given] = False
    return mask


#: the tasks validation knows how to feed from held-out clips
TASK_INPUTS: dict[str, TaskInputs] = {
    "unconditional": lambda z: ({}, _given(z.shape[1], [])),
    "image_to_video": lambda z: ({"image": z[:, 0]}, _given(z.shape[1], [0])),
    "extension": lambda z: ({"video": z[:, : max(1, z.shape[1] // 2)]},
                            _given(z.shape[1], list(range(max(1, z.shape[1] // 2))))),
    "interpolation": lambda z: ({"first": z[:, 0], "last": z[:, -1]}, _given(z.shape[1], [0, z.shape[1] - 1])),
}


def check_validation(cfg: Any) -> None:
    """The validation settings, refused before training starts."""
    unknown = [t for t in cfg.train.validate_tasks if t not in TASK_INPUTS]
    if unknown:
        raise ConfigError([("train.validate_tasks", f"{unknown} cannot be validated from held-out clips; "
                                                    f"choose from {', '.join(TASK_INPUTS)}")])


def held_out(cfg: Any, plugins: Any, dataset: Any, n: int) -> list[dict[str, Any]]:
    """``n`` held-out items: the first of the ``validation`` data when the config names one (held-out shards),
    else the test split when the data has one, else the first training items (warned). A stream (webdataset)
    is read from its start, once: the run keeps the items, so every validation sees the same clips."""
    entry = plugins["datasets"].get(cfg.data.name)
    if cfg.validation is not None:
        source = plugins["datasets"].build(cfg.validation.spec(), plugins=plugins)
    elif entry.config is not None and "split" in entry.config.model_fields:
        source = plugins["datasets"].build({**cfg.data.spec(), "split": "test"}, plugins=plugins)
    else:
        warn_once("val_split", f"dataset {cfg.data.name!r} has no split: validation uses its first {n} clips "
                               "(seen in training)")
        source = dataset
    if not isinstance(source, torch.utils.data.IterableDataset) and hasattr(source, "__len__"):
        # (an IterableDataset inherits a __getitem__ that only raises: it is read as the stream it is)
        return [source[i] for i in range(min(n, len(source)))]
    items = []
    for item in source:
        items.append(item)
        if len(items) == n:
            break
    return items


@torch.no_grad()
def validate(run: Any, step: int) -> dict[str, float]:
    """Sample every validation task on the held-out clips with the EMA model; write the grid and the scores."""
    from fvdm.core.media import to_uint8, write_png_grid
    from fvdm.core.sampling_context import build_context

    cfg, p, dev = run.cfg, run.parts, run.dinfo.device
    tc, info = cfg.train, p.info
    cache = run.validation_cache  # held-out clips and prompt embeddings, read once per run
    if "items" not in cache:
        cache["items"] = held_out(cfg, run.plugins, p.dataset, tc.validate_clips)
    items = cache["items"]
    if "latent" in items[0]:
        z = torch.stack([it["latent"] for it in items]).to(dev)
        real = p.autoencoder.decode(z) if "video" not in items[0] else torch.stack([it["video"] for it in items])
    else:
        real = torch.stack([it["video"] for it in items]).to(dev)  # (B, F, C, H, W) in [-1, 1]
        z = p.autoencoder.encode(real)
    text, null_text = conditioning_text(run, items, z.shape[0])
    rows, scores = [real.cpu()], {}
    for name in tc.validate_tasks:
        inputs, generated = TASK_INPUTS[name](z)
        sampling = build_context(
            run.plugins, model=run.ema, schedule=p.schedule, num_frames=model_frames(info),
            shape=tuple(z.shape[2:]), sampler=cfg.sample.sampler.spec(), matrix=cfg.sample.schedule.spec(),
            steps=cfg.sample.steps, batch_size=z.shape[0], seed=cfg.seed + 424242, device=dev,
            cfg_scale=cfg.sample.cfg_scale if text is not None else 1.0, text=text, null_text=null_text)
        video = p.autoencoder.decode(run.plugins["tasks"].build(name).run(sampling, inputs))
        if video.shape == real.shape and real.shape[1] == generated.numel():  # per-frame autoencoders
            scores[name] = float((video - real)[:, generated].abs().mean())
        elif video.shape == real.shape:  # a temporal VAE: generated latents cover pixel spans; score all frames
            scores[name] = float((video - real).abs().mean())
        rows.append(video.cpu())
    # per clip: the real row, then one row per task -> (clips * (1 + tasks), F, C, H, W)
    grid = rearrange(torch.stack(rows), "r b f c h w -> (b r) f c h w")
    path = Path(run.run_dir) / "validation" / f"step_{step:07d}.png"
    write_png_grid(grid, path, pad=1)
    run.logger.image("validation/grid", rearrange(to_uint8(grid), "n f c h w -> c (n h) (f w)"), step)
    for name, value in scores.items():
        run.logger.evaluation(step, f"val_{name}_l1_to_real", value, z.shape[0])
    return scores


def conditioning_text(run: Any, items: list[dict[str, Any]], n: int) -> tuple[torch.Tensor | None, Any]:
    """(text (B, L, D), null text (1, L, D)) for a text-conditioned model, else (None, None)."""
    dev = run.dinfo.device
    if "text_emb" in items[0]:
        text = torch.stack([it["text_emb"] for it in items]).to(dev)
        null = getattr(run.parts.dataset, "null_text", None)
        return text, (torch.zeros_like(text[:1]) if null is None else null[None].to(dev))
    prompts = run.cfg.train.validate_prompts
    if not prompts:
        return None, None
    if "text" not in run.validation_cache:
        from fvdm.core.build import build_plugin

        if run.cfg.text_encoder is None:
            raise ConfigError([("train.validate_prompts", "prompts need a text encoder: add text_encoder to the "
                                                          "config")])
        enc = build_plugin(run.plugins, "text_encoders", run.cfg.text_encoder.spec(), "text_encoder")
        run.validation_cache["text"] = (enc.encode([prompts[i % len(prompts)] for i in range(n)]).to(dev),
                                        enc.encode([""]).to(dev))
    return run.validation_cache["text"]
