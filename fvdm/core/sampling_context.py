"""The sampling context and the one way to build it: from a loaded checkpoint, or from a model and its parts.

It lives in core beside the sampling loop, so that training-time validation and previews, the CLI, the
benchmark suites and scripts all reach sampling through it without core importing a layer above it.

    sampling = make_context(loaded, plugins, steps=20, batch_size=4, seed=0)      # a checkpoint
    sampling = build_context(plugins, model=net, schedule=ddpm, num_frames=16,    # parts (tests, benchmarks)
                             shape=(1, 32, 32), sampler="ddim", matrix="standard", steps=10)
    video = plugins["tasks"].build("image_to_video").run(sampling, {"image": img})

``make_context`` fills every setting the caller leaves unset from the checkpoint config's
``sample`` section, so the CLI, ``fvdm eval``, ``fvdm demo``, the benchmark suites and
scripts all sample a checkpoint the same way. ``sample_unconditional`` draws clips from a
checkpoint in seeded chunks (the clips do not depend on the chunking's batch size).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, Union

import torch
from pydantic import BaseModel

if TYPE_CHECKING:
    from fvdm.core.loaded import LoadedModel
    from fvdm.core.interfaces import Backbone, MultistepSampler, NoiseSchedule, Sampler, SamplingSchedule
    from fvdm.core.plugins import FvdmPlugins

#: a plugin by name or spec: ``"ddim"``, ``{"name": "pyramid", "u": 0.5}``, a config's PluginRef
Spec = Union[str, Mapping[str, Any], BaseModel]

#: ``sample.dtype`` (``fvdm sample --dtype``) -> the dtype of the backbone's weights and forward when sampling
SAMPLE_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def sample_dtype(name: str) -> torch.dtype:
    """The torch dtype of a ``sample.dtype`` name; anything else is refused in one line with the choices."""
    if name not in SAMPLE_DTYPES:
        raise ValueError(f"sample.dtype (--dtype) {name!r} is not a sampling dtype: choose one of "
                         f"{', '.join(SAMPLE_DTYPES)}")
    return SAMPLE_DTYPES[name]


@dataclass
class SamplingContext:
    """Everything a task needs to sample; built by ``make_context`` / ``build_context`` below.

    model     : backbone ``model(x (B,F,C,H,W), t_in (B,F), y=None) -> (B,F,C_out,H,W)``
    schedule  : NoiseSchedule (``alpha_sigma``, ``predict_x0_eps``, ``timestep_input``, ...)
    sampler   : registered sampler (``step(model_fn, x, t_from, t_to, *, schedule, generator)``)
    matrix    : sampling-schedule builder ``(K, F, *, context, num_timesteps) -> S``
    num_frames: the checkpoint's frame capacity (largest window)
    shape     : (C, H, W) of one frame in model space
    callback  : gets ``{"window", "num_windows", "step", "num_steps", "x", "t"}`` after each row
    plugins   : plugin manager (tasks that build their own matrix, e.g. df_rollout)
    history_guidance, history_level: history guidance scale (1 = off) and the level the unguided branch
                shows the context at (1 = dropped); used in every window that has context
    text, null_text: prompt embeddings (B or 1, L, D) for a text-conditioned backbone and the negative
                (or empty) prompt's, the unconditional side of classifier-free guidance (``cfg_scale``)
    model_dtype: the backbone's dtype when it differs from the sampler's (bf16, fp16): the model function
                casts x and the text embeddings to it and the prediction back, so the sampler's state, the
                schedule and the noise stay in their own dtype (float32). None: no cast (as before)
    """

    model: Backbone | Callable[..., torch.Tensor]  # a wrapper (a call counter, a cache) is fine
    schedule: NoiseSchedule
    sampler: Sampler | MultistepSampler
    matrix: SamplingSchedule
    num_frames: int
    shape: tuple[int, int, int]
    steps: int = 50
    batch_size: int = 1
    cfg_scale: float = 1.0
    history_guidance: float = 1.0
    history_level: float = 1.0
    num_classes: int = 0
    generator: torch.Generator | None = None
    device: str | torch.device = "cpu"
    callback: Callable[[dict[str, Any]], None] | None = None
    plugins: FvdmPlugins | None = None
    text: torch.Tensor | None = None
    null_text: torch.Tensor | None = None
    model_dtype: torch.dtype | None = None


def torch_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator seeded with ``seed`` (on ``device``: a CUDA generator draws CUDA noise directly)."""
    return torch.Generator(device=device).manual_seed(int(seed))


def _built(registry: Any, value: Any) -> Any:
    """``value`` built by ``registry`` when it is a name or a spec; an object is already built."""
    if isinstance(value, (str, Mapping, BaseModel)):
        return registry.build(value)
    return value


def build_context(
    plugins: FvdmPlugins | None, *, model: Backbone | Callable[..., torch.Tensor], schedule: NoiseSchedule,
    num_frames: int, shape: tuple[int, int, int], sampler: Sampler | MultistepSampler | Spec = "ddim",
    matrix: SamplingSchedule | Spec = "standard",
    steps: int = 50, batch_size: int = 1, cfg_scale: float = 1.0, num_classes: int = 0,
    seed: int | None = 0, generator: torch.Generator | None = None, device: str | torch.device = "cpu",
    callback: Callable[[dict[str, Any]], None] | None = None, history_guidance: float = 1.0,
    history_level: float = 1.0, text: torch.Tensor | None = None, null_text: torch.Tensor | None = None,
    model_dtype: torch.dtype | None = None,
) -> SamplingContext:
    """A ``SamplingContext`` from a model and its noise ``schedule``; ``sampler`` and ``matrix`` (the sampling
    schedule) are names/specs built with ``plugins`` or ready objects.

    The noise comes from ``generator`` when given, else from a new CPU generator seeded with ``seed``; with
    ``seed=None`` and no generator, from torch's global RNG (a caller that sets ``sampling.generator`` later).
    """
    if plugins is None and (isinstance(sampler, (str, Mapping, BaseModel)) or
                            isinstance(matrix, (str, Mapping, BaseModel))):
        raise ValueError("build_context got sampler/matrix by name but no plugin manager to build them: "
                         "pass plugins=load_plugins() or built objects")
    if generator is None and seed is not None:
        generator = torch_generator(seed)
    return SamplingContext(
        model=model, schedule=schedule,
        sampler=_built(plugins["samplers"], sampler) if plugins is not None else sampler,
        matrix=_built(plugins["sampling_schedules"], matrix) if plugins is not None else matrix,
        num_frames=int(num_frames), shape=tuple(shape), steps=int(steps), batch_size=int(batch_size),
        cfg_scale=float(cfg_scale), num_classes=int(num_classes), history_guidance=float(history_guidance),
        history_level=float(history_level), generator=generator, device=device, callback=callback, plugins=plugins,
        text=text, null_text=null_text, model_dtype=model_dtype,
    )


def make_context(
    loaded: LoadedModel, plugins: FvdmPlugins, *, steps: int | None = None,
    sampler: Sampler | MultistepSampler | Spec | None = None, schedule: SamplingSchedule | Spec | None = None,
    cfg_scale: float | None = None, batch_size: int = 1, seed: int | None = 0,
    generator: torch.Generator | None = None, device: str | torch.device = "cpu",
    callback: Callable[[dict[str, Any]], None] | None = None, history_guidance: float | None = None,
    history_level: float | None = None, text: torch.Tensor | None = None, null_text: torch.Tensor | None = None,
    prompt: str | Sequence[str] | None = None, negative_prompt: str | None = None,
) -> SamplingContext:
    """A ``SamplingContext`` for a loaded checkpoint. ``sampler`` and ``schedule`` (the *sampling* schedule:
    the checkpoint's noise schedule is fixed) are specs or built objects; every setting left unset (None)
    comes from the checkpoint config's ``sample`` section (history guidance: off). Noise: as ``build_context``.
    The model runs in the dtype it was loaded in (``loaded.dtype``), the sampler in float32.

    ``prompt`` (one, or one per clip) and ``negative_prompt`` are encoded with the config's text encoder
    (the negative defaults to the empty prompt, the unconditional side of guidance); ``text`` and
    ``null_text`` give embeddings directly instead."""
    if prompt is not None or negative_prompt is not None:
        if text is not None or null_text is not None:
            raise ValueError("give prompts or embeddings (text=, null_text=), not both")
        text, null_text = encode_prompts(loaded, plugins, prompt, negative_prompt)
    sc = loaded.config.sample
    return build_context(
        plugins, model=loaded.model, schedule=loaded.schedule, num_frames=loaded.num_frames,
        shape=(loaded.latent_channels, loaded.latent_height or loaded.latent_resolution,
               loaded.latent_width or loaded.latent_resolution),
        sampler=sampler if sampler is not None else sc.sampler.spec(),
        matrix=schedule if schedule is not None else sc.schedule.spec(),
        steps=int(steps or sc.steps), batch_size=batch_size,
        cfg_scale=float(sc.cfg_scale if cfg_scale is None else cfg_scale), num_classes=loaded.num_classes,
        seed=seed, generator=generator, device=device, callback=callback,
        history_guidance=1.0 if history_guidance is None else history_guidance,
        history_level=1.0 if history_level is None else history_level, text=text, null_text=null_text,
        model_dtype=None if loaded.dtype == torch.float32 else loaded.dtype,
    )


def encode_prompts(loaded: LoadedModel, plugins: FvdmPlugins, prompt: str | Sequence[str] | None,
                   negative_prompt: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(text (B, L, D), null_text (1, L, D)) from the loaded model's text encoder, before any sampling."""
    if prompt is None:
        raise ValueError("--negative-prompt needs --prompt (the negative is the unconditional side of guidance)")
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    encoder = loaded.text_encoder(plugins)  # refuses a model without text, or an encoder of another width
    with torch.no_grad():
        return encoder.encode(prompts), encoder.encode([negative_prompt or ""])


def sample_unconditional(loaded: LoadedModel, plugins: FvdmPlugins, n: int, *, steps: int | None = None,
                         seed: int = 0, chunk: int = 16) -> torch.Tensor:
    """``n`` unconditional clips (n, F, C, H, W) in pixel space, drawn ``chunk`` at a time, chunk ``b`` (the
    clip index it starts at) with its own generator ``seed + b``: the clips do not depend on anything else."""
    task = plugins["tasks"].build({"name": "unconditional"})
    clips = []
    for b in range(0, n, chunk):
        ctx = make_context(loaded, plugins, steps=steps, batch_size=min(chunk, n - b), seed=seed + b)
        with torch.no_grad():
            clips.append(loaded.autoencoder.decode(task.run(ctx, {})))
    return torch.cat(clips)
