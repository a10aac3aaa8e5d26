"""`fvdm sample`'s planning: settings layers -> resolved, validated plans -> sampled outputs.

A job is a mapping of option names (the command line's, or one entry of a jobs file layered
on it). ``plan_job`` resolves it without sampling: the task, sampler and schedule specs with
every parameter, the sampling context (``fvdm.core.sampling_context.make_context``), the task's own
checks (``Task.check_sampling``) and its inputs read into model space, so every job of a
file fails before the first one samples. ``run_plan`` samples one plan and writes its
outputs atomically; NAME.json records what the sample was made from, with the origin
(built-in, or distribution and version) of every plugin involved.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from fvdm.commands.specs import as_spec, config_errors, merge_spec, resolve_spec

if TYPE_CHECKING:
    from fvdm.core.loaded import LoadedModel
    from fvdm.core.interfaces import Task
    from fvdm.core.plugins import FvdmPlugins
    from fvdm.core.sampling_context import SamplingContext

#: flags that belong to the task: each goes to the task's Config or Inputs field of this name
TASK_FLAGS = ("image", "last", "video", "given", "context_frames", "label", "frames", "overlap", "window",
              "multiplier", "stabilization", "mode", "cache", "chunk")
#: a flag whose task field has another name
FLAG_FIELDS = {"frames": "num_frames"}
#: settings of the run itself (sampling context and outputs)
RUN_KEYS = ("checkpoint", "config", "out", "name", "steps", "seed", "batch_size", "cfg_scale", "history_guidance",
            "history_level", "prompt", "negative_prompt", "on_mismatch", "formats", "fps", "device", "no_ema", "dtype")
#: keys holding a spec (a name or a mapping), and the shorthand flags for one parameter of them
SPEC_KEYS = ("task", "sampler", "schedule")
SHORTHANDS = {"eta": ("sampler", "eta"), "u": ("schedule", "u")}
#: keys a job (YAML mapping) may have
JOB_KEYS = RUN_KEYS + SPEC_KEYS + TASK_FLAGS + tuple(SHORTHANDS) + ("inputs",)


def merge_layers(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: specs are layered (``merge_spec``), inputs merged, other keys replaced.
    The shorthands (``eta``, ``u``) become parameters of their spec in the layer that gives them."""
    over = dict(over)
    for key, (spec_key, param) in SHORTHANDS.items():
        if over.get(key) is not None:
            over[spec_key] = merge_spec(over.get(spec_key), {param: over.pop(key)}, spec_key)
        over.pop(key, None)
    merged = dict(base)
    for key, value in over.items():
        if key in SPEC_KEYS:
            merged[key] = merge_spec(base.get(key), value, key)
        elif key == "inputs":
            if not isinstance(value, dict):
                raise ValueError(f"inputs must be a mapping of the task's input fields, got {value!r}")
            merged[key] = {**(base.get(key) or {}), **value}
        else:
            merged[key] = value
    return merged


def load_jobs(path: str, defaults: dict[str, Any]) -> list[dict[str, Any]]:
    """The jobs of a YAML file, each layered on the command line's ``defaults``."""
    import difflib

    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"jobs file not found: {path}")
    data = yaml.safe_load(p.read_text())
    if isinstance(data, dict) and "jobs" in data:
        data = data["jobs"]
    if not isinstance(data, list) or not all(isinstance(j, dict) for j in data):
        raise ValueError(f"{path}: expected a YAML list of jobs (mappings with at least 'task')")
    jobs = []
    for i, raw in enumerate(data):
        job = {k.replace("-", "_"): v for k, v in raw.items() if v is not None}
        unknown = sorted(set(job) - set(JOB_KEYS))
        if unknown:
            close = {u: difflib.get_close_matches(u, JOB_KEYS, n=1) for u in unknown}
            hints = "".join(f" Did you mean {c[0]!r} for {u!r}?" for u, c in close.items() if c)
            raise ValueError(f"{path}: job {i}: unknown key(s) {unknown}.{hints} Allowed: {', '.join(JOB_KEYS)}")
        try:
            merged = merge_layers(defaults, job)
        except ValueError as exc:
            raise ValueError(f"{path}: job {i}: {exc}") from None
        merged["out"] = str(Path(defaults["out"]) / str(job["out"])) if job.get("out") else defaults.get("out")
        task = as_spec(merged.get("task"), "task") or {}
        merged.setdefault("name", f"{i:02d}_{task.get('name', 'job')}")
        jobs.append(merged)
    return jobs


@dataclass
class Plan:
    """One job, resolved and validated, ready to sample: what NAME.json records comes from here."""

    job: dict[str, Any]
    loaded: LoadedModel
    task: Task
    task_spec: dict[str, Any]  # name + every option, defaults filled in
    sampler: dict[str, Any]  # likewise
    schedule: dict[str, Any]  # the schedule the task samples with
    context_schedule: dict[str, Any]  # the sampling context's (differs when the task has its own)
    sampling: SamplingContext  # built from the specs above; the callback is added when it runs
    inputs: dict[str, Any]  # run()'s inputs, model space
    inputs_record: dict[str, Any]  # the user's inputs, files with their sha256
    formats: list[str]
    provenance: dict[str, Any]  # where each plugin involved comes from (and what trained the checkpoint)

    @property
    def stem(self) -> str:
        return str(self.job.get("name") or self.task_spec["name"])


def route_task_flags(job: dict[str, Any], entry: Any, input_model: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(task spec, raw inputs) of a job: each task flag goes to the task's option or input field of its name;
    a flag the task has no field for is an error, never dropped."""
    task_spec = dict(as_spec(job.get("task"), "task") or {})
    options = set(entry.config.model_fields) if entry.config is not None else set()
    raw_inputs = dict(job.get("inputs") or {})
    for flag in TASK_FLAGS:
        if job.get(flag) is None:
            continue
        field = FLAG_FIELDS.get(flag, flag)
        if field in options:
            task_spec.setdefault(field, job[flag])  # an explicit spec parameter wins over a flag
        elif field in input_model.model_fields:
            raw_inputs.setdefault(field, job[flag])
        else:
            raise ValueError(f"task {entry.name!r} takes no --{flag.replace('_', '-')} (options: "
                             f"{', '.join(sorted(options))}; inputs: {', '.join(input_model.model_fields)}); "
                             f"see `fvdm sample --task {entry.name} --describe`")
    return task_spec, raw_inputs


def resolve_schedules(job: dict[str, Any], entry: Any, task_spec: dict[str, Any], plugins: FvdmPlugins,
                      checkpoint_schedule: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the schedule the task samples with, the sampling context's), both resolved in full. A task whose Config
    has a ``schedule`` field samples with it and takes the job's schedule there (``task_spec`` is updated)."""
    registry = plugins["sampling_schedules"]
    _, context = resolve_spec(registry, checkpoint_schedule.spec(), "sample.schedule")
    if entry.config is not None and "schedule" in entry.config.model_fields:
        default = entry.config.model_fields["schedule"].get_default(call_default_factory=True)
        spec = merge_spec(merge_spec(default, task_spec.get("schedule")), job.get("schedule"), "schedule")
        _, task_spec["schedule"] = resolve_spec(registry, spec, "schedule")
        return task_spec["schedule"], context
    try:
        _, schedule = resolve_spec(registry, merge_spec(checkpoint_schedule.spec(), job.get("schedule")), "schedule")
    except ValueError as exc:
        if "name" in (as_spec(job.get("schedule"), "schedule") or {"name": None}):
            raise
        raise ValueError(f"{exc} (parameters without --schedule NAME apply to the checkpoint's schedule "
                         f"{checkpoint_schedule.name!r}; add --schedule NAME)") from None
    return schedule, schedule


def check_history_guidance(job: dict[str, Any], task_name: str, task: Any, plugins: FvdmPlugins) -> None:
    """--history-guidance / --history-level: in range, and only for a task that has context (``uses_context``,
    read from the task, so a plugin's task is treated like a built-in), before any sampling."""
    from fvdm.tasks.base import context_tasks

    hg, level = job.get("history_guidance"), job.get("history_level")
    if level is not None and not 0.0 < float(level) <= 1.0:
        raise ValueError(f"--history-level must be in (0, 1] (got {level}); 1 drops the context, smaller noises it")
    if hg is None or float(hg) == 1.0:
        return
    if float(hg) < 0:
        raise ValueError(f"--history-guidance must be >= 0 (got {hg}); 1 is off, > 1 strengthens the context")
    if not getattr(task, "uses_context", True):
        raise ValueError(f"--history-guidance {float(hg):g} needs context frames and task {task_name!r} has none; "
                         f"drop it, or use a task with given frames ({', '.join(context_tasks(plugins))})")


def load_cached(job: dict[str, Any], plugins: FvdmPlugins, cache: dict[str, Any]) -> LoadedModel:
    """The job's model, loaded once per (source, weights, device): a checkpoint, or a config naming pretrained
    weights (sampled without a training run)."""
    from fvdm.core.loaded import load_for_sampling, load_from_config
    from fvdm.core.sampling_context import sample_dtype

    device = job.get("device") or "cpu"
    dtype = job.get("dtype")  # None: the config's sample.dtype
    if dtype is not None:
        sample_dtype(str(dtype))  # a bad name: one line with the choices, before anything is read
    if job.get("config") and not job.get("checkpoint"):
        from fvdm.core.config import load_config

        key = f"config|{job['config']}|{device}|{dtype}"
        if key not in cache:
            cache[key] = load_from_config(load_config(job["config"], plugins), plugins, device=device, dtype=dtype)
        return cache[key]
    ckpt = str(job["checkpoint"])
    key = f"{ckpt}|{bool(job.get('no_ema'))}|{device}|{dtype}"
    if key not in cache:
        if not Path(ckpt).is_file():
            raise FileNotFoundError(f"checkpoint not found: {ckpt}; train one with `fvdm train` or `fvdm demo`")
        cache[key] = load_for_sampling(ckpt, plugins, use_ema=not job.get("no_ema"), device=device, dtype=dtype)
    return cache[key]


def training_origins(path: str | Path) -> dict[str, Any]:
    """The checkpoint's record of what trained it: config field -> ``{kind, name, origin, plugin}`` (empty when
    it has none). Memory-mapped: the weights are not read again."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return dict(ckpt.get("plugin_origins") or {})


def base_record(model: Any) -> dict[str, Any] | None:
    """Where a sample's weights came from when they came from elsewhere (a pretrained directory, a LoRA base):
    the directory's record with its ``directory_fingerprint`` (config, index, file names and sizes: which
    download) and the ``base_fingerprint`` (every base weight tensor's bytes: which weights), the same value a
    LoRA checkpoint and ``fvdm export``'s adapter_config.json record. None for a model trained from scratch."""
    from fvdm.core.lora import base_fingerprint, has_lora

    info = getattr(model, "pretrained_info", None)
    if info is None and not has_lora(model):
        return None
    out = {k: v for k, v in (info or {}).items() if k != "fingerprint"}
    if info is not None and "fingerprint" in info:
        out["directory_fingerprint"] = info["fingerprint"]
    return {**out, "base_fingerprint": base_fingerprint(model)}


def provenance(plugins: FvdmPlugins, task_name: str, sampler: dict[str, Any], schedule: dict[str, Any],
               training: dict[str, Any]) -> dict[str, Any]:
    """Where each plugin that made a sample comes from (``builtin`` or ``<distribution> <version>``): the task,
    sampler and sampling schedule now, and what trained the checkpoint (as the checkpoint recorded it)."""
    return {"task": {"name": task_name, "origin": plugins.origin("tasks", task_name)},
            "sampler": {"name": sampler["name"], "origin": plugins.origin("samplers", sampler["name"])},
            "schedule": {"name": schedule["name"], "origin": plugins.origin("sampling_schedules", schedule["name"])},
            "training": training}


def plan_job(job: dict[str, Any], plugins: FvdmPlugins, cache: dict[str, Any]) -> Plan:
    """Resolve and validate one job without sampling: the task, sampler and schedule specs with every
    parameter, the sampling context and the task's checks of it, the task's inputs (files checked, then read
    into model space) and the output settings."""
    from pydantic import ValidationError

    from fvdm.core.media import WRITERS
    from fvdm.core.sampling_context import make_context
    from fvdm.tasks.inputs import InputReader, TaskInputs, inputs_record

    name = (as_spec(job.get("task"), "task") or {}).get("name")
    if not name:
        raise ValueError("give --task NAME (or a 'task' in every job)")
    entry = plugins["tasks"].get(name)  # unknown task: a close match, before any work
    input_model = getattr(entry.obj, "Inputs", TaskInputs)
    task_spec, raw_inputs = route_task_flags(job, entry, input_model)
    try:
        given = input_model.model_validate(raw_inputs)  # a missing input file fails here, before loading
    except ValidationError as exc:
        raise ValueError(f"task {entry.name!r} inputs: {config_errors(exc, input_model)}") from None
    formats = [f.strip() for f in str(job.get("formats") or "gif,png,mp4").split(",") if f.strip()]
    bad = [f for f in formats if f not in WRITERS]
    if bad:
        raise ValueError(f"unknown output format(s) {bad}; choose from {', '.join(WRITERS)}")
    if not job.get("checkpoint") and not job.get("config"):
        raise ValueError("give --checkpoint (or --config naming pretrained weights; or one of them in every job)")
    if job.get("checkpoint") and job.get("config"):
        raise ValueError("give --checkpoint or --config, not both (a checkpoint holds its own config)")
    if not job.get("out"):
        raise ValueError("give --out DIR")

    loaded = load_cached(job, plugins, cache)
    sc = loaded.config.sample
    _, sampler = resolve_spec(plugins["samplers"], merge_spec(sc.sampler.spec(), job.get("sampler")), "sampler")
    schedule, context_schedule = resolve_schedules(job, entry, task_spec, plugins, sc.schedule)
    _, task_spec = resolve_spec(plugins["tasks"], task_spec, "task")
    task = plugins["tasks"].build(task_spec)
    check_history_guidance(job, entry.name, task, plugins)
    batch_size = int(job.get("batch_size") or 1)
    sampling = make_context(loaded, plugins, steps=job.get("steps"), sampler=sampler, schedule=context_schedule,
                            cfg_scale=job.get("cfg_scale"), history_guidance=job.get("history_guidance"),
                            history_level=job.get("history_level"), batch_size=batch_size,
                            seed=int(job.get("seed") or 0), device=job.get("device") or "cpu",
                            prompt=job.get("prompt"), negative_prompt=job.get("negative_prompt"))
    check = getattr(task, "check_sampling", None)
    if callable(check):  # a --window too large, a cache the backbone cannot keep, ...: before any file is read
        check(sampling)
    reader = InputReader(shape=(loaded.channels, loaded.height or loaded.resolution, loaded.width or loaded.resolution),
                         num_frames=loaded.num_frames, num_classes=loaded.num_classes, batch_size=batch_size,
                         encode=loaded.autoencoder.encode, on_mismatch=job.get("on_mismatch") or "resize",
                         autoencoder=loaded.autoencoder)
    origins_key = f"origins|{job.get('checkpoint')}"
    if origins_key not in cache:
        cache[origins_key] = training_origins(job["checkpoint"]) if job.get("checkpoint") else {}
        base = base_record(loaded.model)
        if base is not None or not job.get("checkpoint"):
            cache[origins_key]["pretrained"] = base
    return Plan(job=job, loaded=loaded, task=task, task_spec=task_spec, sampler=sampler, schedule=schedule,
                context_schedule=context_schedule, sampling=sampling, inputs=task.read_inputs(given, reader),
                inputs_record=inputs_record(given), formats=formats,
                provenance=provenance(plugins, entry.name, sampler, schedule, cache[origins_key]))


def run_plan(plan: Plan, *, callback: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Sample one planned job and write its outputs atomically; returns its summary (with ``video``).

    With ``--batch-size N`` a task with context draws N samples of the given context (the grid's rows),
    each from its own noise; NAME.json says so (``samples_per_context``)."""
    import torch

    from fvdm.core.media import WRITERS, AtomicOutputs
    from fvdm.core.sampling_context import SAMPLE_DTYPES

    job, loaded, stem = plan.job, plan.loaded, plan.stem
    ctx = dataclasses.replace(plan.sampling, callback=callback)
    t0 = time.perf_counter()
    with torch.no_grad():
        video = loaded.autoencoder.decode(plan.task.run(ctx, plan.inputs))
    seconds = time.perf_counter() - t0
    formats = plan.formats
    summary = {"task": plan.task_spec["name"], "task_spec": plan.task_spec, "inputs": plan.inputs_record,
               "checkpoint": str(job["checkpoint"]) if job.get("checkpoint") else None,
               "config": str(job["config"]) if job.get("config") and not job.get("checkpoint") else None,
               "prompt": job.get("prompt"), "negative_prompt": job.get("negative_prompt"),
               "ema": not job.get("no_ema") and bool(job.get("checkpoint")),
               "frames": int(video.shape[1]), "batch": int(video.shape[0]), "steps": ctx.steps,
               "sampler": plan.sampler, "schedule": plan.schedule, "cfg_scale": ctx.cfg_scale,
               "history_guidance": ctx.history_guidance, "history_level": ctx.history_level,
               "seed": int(job.get("seed") or 0), "seconds": round(seconds, 3),
               "dtype": {v: k for k, v in SAMPLE_DTYPES.items()}[loaded.dtype],
               "provenance": plan.provenance, "files": [f"{stem}.{f}" for f in formats] + [f"{stem}.json"]}
    if getattr(plan.task, "uses_context", True):  # the command line gives one context: every sample shares it
        summary["samples_per_context"] = int(video.shape[0])
    fps = int(job.get("fps") or 8)
    with AtomicOutputs(Path(job["out"])) as o:
        for f in formats:
            o.add(f"{stem}.{f}", lambda p, f=f: WRITERS[f](video, p, **({} if f == "png" else {"fps": fps})))
        o.add(f"{stem}.json", lambda p: p.write_text(json.dumps(summary, indent=2) + "\n"))
    summary["video"] = video
    return summary
