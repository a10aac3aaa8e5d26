"""`fvdm sample --checkpoint C --task T [...] --out DIR`: run a zero-shot task, write GIF / PNG grid / mp4 / JSON.

Nothing here knows a task, sampler or schedule by name. Each is a *spec*, a plugin
name plus parameters validated by that plugin's Config (``--schedule middle_first
--schedule-param center=0``; in a jobs file ``schedule: {name: middle_first, center: 0}``).
A task declares what the user gives it (``Task.Inputs``) and reads it
(``Task.read_inputs``); the convenience flags (``--image``, ``--frames``, ``--overlap``
...) go to the task's Config or Inputs field of that name, and one that neither has is
an error, never silently dropped. A task whose Config has a ``schedule`` field
(df_rollout) takes ``--schedule`` itself; otherwise it sets the sampling context's.

Batch mode: ``--jobs jobs.yaml`` holds a list of jobs, each a mapping of the same
option names plus ``inputs: {...}``; options given on the command line are the
defaults of every job (specs are layered: see ``fvdm.commands.specs``). Every job is
resolved and validated (plugins, parameters, input files) before the first one runs.
Outputs are written to a temporary directory and renamed into place, so a failed job
leaves no partial files. NAME.json records the resolved task, sampler and schedule
specs with every parameter, and each input file's path and sha256.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fvdm.commands.argtypes import device_arg, nonnegative_int, positive_int
from fvdm.commands.specs import as_spec, config_errors, describe_model, merge_spec, parse_params, resolve_spec

#: flags that belong to the task: each goes to the task's Config or Inputs field of this name
TASK_FLAGS = ("image", "last", "video", "given", "context_frames", "label", "frames", "overlap", "window",
              "multiplier", "stabilization", "mode", "cache", "chunk")
#: a flag whose task field has another name
FLAG_FIELDS = {"frames": "num_frames"}
#: settings of the run itself (sampling context and outputs)
RUN_KEYS = ("checkpoint", "out", "name", "steps", "seed", "batch_size", "cfg_scale", "history_guidance",
            "history_level", "on_mismatch", "formats", "fps", "device", "no_ema")
#: keys holding a spec (a name or a mapping), and the shorthand flags for one parameter of them
SPEC_KEYS = ("task", "sampler", "schedule")
SHORTHANDS = {"eta": ("sampler", "eta"), "u": ("schedule", "u")}
#: keys a job (YAML mapping) may have
JOB_KEYS = RUN_KEYS + SPEC_KEYS + TASK_FLAGS + tuple(SHORTHANDS) + ("inputs",)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample", help="sample a task (i2v, interpolation, infill, extension, long video, ...) from a checkpoint",
        description="Run a zero-shot task with a trained FVDM checkpoint and write NAME.gif, NAME.png (grid: "
                    "rows = samples, columns = frames), NAME.mp4 and NAME.json (resolved settings, input hashes, "
                    "timing) into --out.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="task inputs and options: `fvdm sample --task T --describe` (also lists --sampler/--schedule "
               "parameters)\n\nexamples:\n"
               "  fvdm sample --checkpoint C --task image_to_video --image first.png --out out\n"
               "  fvdm sample --checkpoint C --task long_video --frames 128 --overlap 8 --steps 25 --out out\n"
               "  fvdm sample --checkpoint C --task unconditional --schedule pyramid --schedule-param u=0.5 --out out\n"
               "  fvdm sample --checkpoint C --task my_task --input mask=m.png --task-param strength=2 --out out\n"
               "  fvdm sample --checkpoint C --jobs jobs.yaml --out out",
    )
    p.add_argument("--checkpoint", help="checkpoint file (runs/NAME/checkpoints/last.pt)")
    p.add_argument("--task", help="task name (fvdm plugins --kind tasks)")
    p.add_argument("--task-param", action="append", metavar="KEY=VALUE",
                   help="a task option (its Config field; value parsed as YAML); repeatable")
    p.add_argument("--input", action="append", metavar="KEY=VALUE",
                   help="a task input (its Inputs field, e.g. a file path); repeatable")
    p.add_argument("--out", help="output directory")
    p.add_argument("--jobs", help="YAML list of jobs (batch mode); CLI options are their defaults")
    p.add_argument("--describe", action="store_true",
                   help="print the options and inputs of --task and the parameters of --sampler/--schedule, exit")
    p.add_argument("--image", help="first frame image (image_to_video, interpolation)")
    p.add_argument("--last", help="last frame image (interpolation)")
    p.add_argument("--video", help="context video (mp4/webm/gif): extension, infill, interpolation, long_video")
    p.add_argument("--frames", type=positive_int, help="total frames to output (long_video default 128)")
    p.add_argument("--steps", type=positive_int, help="sampling steps K (default: the checkpoint config's sample.steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=positive_int, default=1, help="samples per task (unconditional tasks)")
    p.add_argument("--sampler", help="sampler name, e.g. ddim (default: the checkpoint config's)")
    p.add_argument("--sampler-param", action="append", metavar="KEY=VALUE",
                   help="a sampler parameter (value parsed as YAML), e.g. eta=0.5; repeatable")
    p.add_argument("--eta", type=float, help="shorthand for --sampler-param eta=E")
    p.add_argument("--schedule", help="sampling schedule name, e.g. pyramid (default: the checkpoint config's)")
    p.add_argument("--schedule-param", action="append", metavar="KEY=VALUE",
                   help="a sampling-schedule parameter (value parsed as YAML), e.g. u=0.5; repeatable")
    p.add_argument("--u", type=float, help="shorthand for --schedule-param u=U (pyramid, trapezoid)")
    p.add_argument("--cfg-scale", type=float, help="classifier-free guidance scale (class-conditional models)")
    p.add_argument("--history-guidance", type=float, metavar="S",
                   help="history guidance scale (1 = off): guide between the prediction with the given context and "
                        "with it noised to --history-level; tasks with context only")
    p.add_argument("--history-level", type=float, metavar="L",
                   help="level (0, 1] the unguided branch shows the context at (default 1 = dropped)")
    p.add_argument("--label", type=int, nargs="+", help="class label(s)")
    p.add_argument("--overlap", type=nonnegative_int, help="frames shared by consecutive windows (default window/2)")
    p.add_argument("--window", type=positive_int, help="frames per window (default and maximum: the checkpoint's)")
    p.add_argument("--context-frames", type=positive_int, help="frames of --video used as context (extension: default window/2)")
    p.add_argument("--given", help="infill: comma-separated indices of given frames (default: even frames)")
    p.add_argument("--multiplier", type=float, help="noise multiplier of context frames (0 = frozen, Pusa ~0.2)")
    p.add_argument("--stabilization", type=float, help="level at which the model sees context (Diffusion Forcing)")
    p.add_argument("--mode", choices=["fvdm", "vanilla_replacement"], help="vanilla_replacement = baseline")
    p.add_argument("--cache", action="store_true", default=None,
                   help="causal_rollout: reuse finished frames' keys/values (causal rope backbones)")
    p.add_argument("--no-cache", dest="cache", action="store_false",
                   help="causal_rollout: recompute the past at every call (the reference the cache equals)")
    p.add_argument("--chunk", type=positive_int, help="causal_rollout: frames generated together (default 1)")
    p.add_argument("--on-mismatch", choices=["resize", "error"], default="resize",
                   help="input image/video of another size or channel count: resize with a warning, or fail")
    p.add_argument("--formats", default="gif,png,mp4",
                   help="comma list of gif,png,mp4,npz (npz: every sample as its own clip, for fvdm eval --fake)")
    p.add_argument("--fps", type=positive_int, default=8)
    p.add_argument("--name", help="output file stem (default: the task name)")
    p.add_argument("--device", type=device_arg, default="cpu")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress output (default: a bar on a terminal, one line per window otherwise)")
    p.set_defaults(func=_run)


# -- library functions (used by `fvdm demo` and benchmarks) ----------------------------------------------

def make_context(loaded: Any, plugins: Any, *, steps: int | None = None, sampler: Any = None, schedule: Any = None,
                 cfg_scale: float | None = None, batch_size: int = 1, seed: int = 0, device: str = "cpu",
                 callback: Any = None, history_guidance: float | None = None, history_level: float | None = None
                 ) -> Any:
    """A ``SamplingContext`` for a loaded checkpoint; unset settings come from its config's ``sample``."""
    from fvdm.tasks.base import SamplingContext

    sc = loaded.config.sample
    return SamplingContext(
        model=loaded.model, schedule=loaded.schedule,
        sampler=plugins["samplers"].build(sampler if sampler is not None else sc.sampler.spec()),
        matrix=plugins["sampling_schedules"].build(schedule if schedule is not None else sc.schedule.spec()),
        num_frames=loaded.num_frames,
        shape=(loaded.latent_channels, loaded.latent_resolution, loaded.latent_resolution),
        steps=int(steps or sc.steps), batch_size=batch_size,
        cfg_scale=float(sc.cfg_scale if cfg_scale is None else cfg_scale), num_classes=loaded.num_classes,
        history_guidance=float(1.0 if history_guidance is None else history_guidance),
        history_level=float(1.0 if history_level is None else history_level),
        generator=torch_generator(seed), device=device, callback=callback, plugins=plugins,
    )


def sample_unconditional(loaded: Any, plugins: Any, n: int, *, steps: int | None = None, seed: int = 0,
                         chunk: int = 16) -> Any:
    """``n`` unconditional clips (n, F, C, H, W) in pixel space, drawn ``chunk`` at a time, chunk ``b`` (the
    clip index it starts at) with its own generator ``seed + b``: the clips do not depend on anything else."""
    import torch

    task = plugins["tasks"].build({"name": "unconditional"})
    clips = []
    for b in range(0, n, chunk):
        ctx = make_context(loaded, plugins, steps=steps, batch_size=min(chunk, n - b), seed=seed + b)
        with torch.no_grad():
            clips.append(loaded.autoencoder.decode(task.run(ctx, {})))
    return torch.cat(clips)


def torch_generator(seed: int) -> Any:
    import torch

    return torch.Generator().manual_seed(int(seed))


# -- jobs: settings layers -> resolved, validated plans -> outputs ------------------------------------------

def cli_layer(args: argparse.Namespace) -> dict[str, Any]:
    """The command line as one settings layer: the defaults of every job."""
    layer = {k: getattr(args, k) for k in RUN_KEYS + TASK_FLAGS + tuple(SHORTHANDS) if getattr(args, k, None) is not None}
    for key in SPEC_KEYS:
        params = parse_params(getattr(args, f"{key}_param"), f"--{key}-param")
        name = getattr(args, key)
        if name or params:
            layer[key] = {**({"name": name} if name else {}), **params}
    if args.input:
        layer["inputs"] = parse_params(args.input, "--input")
    return layer


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


@dataclass
class Plan:
    """One job, resolved and validated, ready to sample: what NAME.json records comes from here."""

    job: dict[str, Any]
    loaded: Any  # the checkpoint (LoadedModel)
    task: Any
    task_spec: dict[str, Any]  # name + every option, defaults filled in
    sampler: dict[str, Any]  # likewise
    schedule: dict[str, Any]  # the schedule the task samples with
    context_schedule: dict[str, Any]  # the sampling context's (differs when the task has its own)
    inputs: dict[str, Any]  # run()'s inputs, model space
    inputs_record: dict[str, Any]  # the user's inputs, files with their sha256
    formats: list[str]


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


def resolve_schedules(job: dict[str, Any], entry: Any, task_spec: dict[str, Any], plugins: Any,
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


def plan_job(job: dict[str, Any], plugins: Any, cache: dict[str, Any]) -> Plan:
    """Resolve and validate one job without sampling: the task, sampler and schedule specs with every
    parameter, the task's inputs (files checked, then read into model space) and the output settings."""
    from pydantic import ValidationError

    from fvdm.core.media import WRITERS
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
    if not job.get("checkpoint"):
        raise ValueError("give --checkpoint (or a 'checkpoint' in every job)")
    if not job.get("out"):
        raise ValueError("give --out DIR")

    loaded = load_cached(job, plugins, cache)
    sc = loaded.config.sample
    _, sampler = resolve_spec(plugins["samplers"], merge_spec(sc.sampler.spec(), job.get("sampler")), "sampler")
    schedule, context_schedule = resolve_schedules(job, entry, task_spec, plugins, sc.schedule)
    _, task_spec = resolve_spec(plugins["tasks"], task_spec, "task")
    task = plugins["tasks"].build(task_spec)
    if hasattr(task, "window_size"):
        task.window_size(loaded.num_frames)  # a --window too large: one line before any file is read
    check_history_guidance(job, entry.name, task)
    if getattr(task.cfg, "cache", False):  # a cache on a backbone without one: one line before any sampling
        from fvdm.tasks.causal_rollout import check_cacheable

        check_cacheable(loaded.model)
    reader = InputReader(shape=(loaded.channels, loaded.resolution, loaded.resolution),
                         num_frames=loaded.num_frames, num_classes=loaded.num_classes,
                         batch_size=int(job.get("batch_size") or 1), encode=loaded.autoencoder.encode,
                         on_mismatch=job.get("on_mismatch") or "resize")
    return Plan(job=job, loaded=loaded, task=task, task_spec=task_spec, sampler=sampler, schedule=schedule,
                context_schedule=context_schedule, inputs=task.read_inputs(given, reader),
                inputs_record=inputs_record(given), formats=formats)


def check_history_guidance(job: dict[str, Any], task_name: str, task: Any) -> None:
    """--history-guidance / --history-level: in range, and only for a task that has context, before any sampling."""
    hg, level = job.get("history_guidance"), job.get("history_level")
    if level is not None and not 0.0 < float(level) <= 1.0:
        raise ValueError(f"--history-level must be in (0, 1] (got {level}); 1 drops the context, smaller noises it")
    if hg is None or float(hg) == 1.0:
        return
    if float(hg) < 0:
        raise ValueError(f"--history-guidance must be >= 0 (got {hg}); 1 is off, > 1 strengthens the context")
    if not getattr(task, "uses_context", True):
        raise ValueError(f"--history-guidance {float(hg):g} needs context frames and task {task_name!r} has none; "
                         "drop it, or use a task with given frames (image_to_video, interpolation, infill, extension, "
                         "long_video, df_rollout, causal_rollout)")


def load_cached(job: dict[str, Any], plugins: Any, cache: dict[str, Any]) -> Any:
    from fvdm.core.checkpoint import load_for_sampling

    ckpt = str(job["checkpoint"])
    device = job.get("device") or "cpu"
    key = f"{ckpt}|{bool(job.get('no_ema'))}|{device}"
    if key not in cache:
        if not Path(ckpt).is_file():
            raise FileNotFoundError(f"checkpoint not found: {ckpt}; train one with `fvdm train` or `fvdm demo`")
        cache[key] = load_for_sampling(ckpt, plugins, use_ema=not job.get("no_ema"), device=device)
    return cache[key]


def run_plan(plan: Plan, plugins: Any, *, progress: bool = True) -> dict[str, Any]:
    """Sample one planned job and write its outputs atomically; returns its summary (with ``video``)."""
    import torch

    from fvdm.core.media import WRITERS, AtomicOutputs

    job, loaded, task_name = plan.job, plan.loaded, plan.task_spec["name"]
    stem = job.get("name") or task_name
    report = progress_reporter(stem, progress)
    ctx = make_context(loaded, plugins, steps=job.get("steps"), sampler=plan.sampler,
                       schedule=plan.context_schedule, cfg_scale=job.get("cfg_scale"),
                       history_guidance=job.get("history_guidance"), history_level=job.get("history_level"),
                       batch_size=int(job.get("batch_size") or 1), seed=int(job.get("seed") or 0),
                       device=job.get("device") or "cpu", callback=report)
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            video = loaded.autoencoder.decode(plan.task.run(ctx, plan.inputs))
    finally:
        report(None)
    seconds = time.perf_counter() - t0
    formats = plan.formats
    summary = {"task": task_name, "task_spec": plan.task_spec, "inputs": plan.inputs_record,
               "checkpoint": str(job["checkpoint"]), "ema": not job.get("no_ema"),
               "frames": int(video.shape[1]), "batch": int(video.shape[0]), "steps": ctx.steps,
               "sampler": plan.sampler, "schedule": plan.schedule, "cfg_scale": ctx.cfg_scale,
               "history_guidance": ctx.history_guidance, "history_level": ctx.history_level,
               "seed": int(job.get("seed") or 0), "seconds": round(seconds, 3),
               "files": [f"{stem}.{f}" for f in formats] + [f"{stem}.json"]}
    fps = int(job.get("fps") or 8)
    with AtomicOutputs(Path(job["out"])) as o:
        for f in formats:
            o.add(f"{stem}.{f}", lambda p, f=f: WRITERS[f](video, p, **({} if f == "png" else {"fps": fps})))
        o.add(f"{stem}.json", lambda p: p.write_text(json.dumps(summary, indent=2) + "\n"))
    summary["video"] = video
    return summary


def progress_reporter(label: str, enabled: bool) -> Any:
    """The sampling callback: a tqdm bar over windows on a terminal, one line per finished window otherwise
    (a carriage-return bar in a log file is unreadable); ``report(None)`` closes it."""
    if not enabled:
        return lambda info: None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(desc=label, unit="window", file=sys.stderr, leave=False,
                   bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")

        def report(info: dict[str, Any] | None) -> None:
            if info is None:
                bar.close()
                return
            bar.total = info["num_windows"]
            bar.set_description_str(f"{label}: window {info['window'] + 1}/{info['num_windows']} "
                                    f"step {info['step']}/{info['num_steps']}", refresh=False)
            bar.update(info["window"] + info["step"] / info["num_steps"] - bar.n)

        return report
    t0 = time.perf_counter()

    def log(info: dict[str, Any] | None) -> None:
        if info is not None and info["step"] == info["num_steps"]:
            print(f"fvdm sample: {label}: window {info['window'] + 1}/{info['num_windows']} done "
                  f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)

    return log


def load_jobs(path: str, defaults: dict[str, Any]) -> list[dict[str, Any]]:
    """The jobs of a YAML file, each layered on the command line's ``defaults``."""
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
            import difflib

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


def describe(args: argparse.Namespace, plugins: Any) -> int:
    """Print what --task takes (options, inputs) and the parameters of --sampler/--schedule."""
    from fvdm.tasks.inputs import TaskInputs

    if not (args.task or args.sampler or args.schedule):
        raise ValueError("--describe needs --task, --sampler or --schedule NAME")
    if args.task:
        entry = plugins["tasks"].get(args.task)
        print(f"task {entry.name} ({entry.origin}): {entry.description}")
        print("  options (--task-param KEY=VALUE, or the flag of the same name):")
        print("\n".join(describe_model(entry.config, "    ")))
        print("  inputs (--input KEY=VALUE, or the flag of the same name; a jobs file's 'inputs'):")
        print("\n".join(describe_model(getattr(entry.obj, "Inputs", TaskInputs), "    ")))
    for kind, flag in (("samplers", "sampler"), ("sampling_schedules", "schedule")):
        name = getattr(args, flag)
        if name:
            entry = plugins[kind].get(name)
            print(f"{flag} {entry.name} ({entry.origin}): {entry.description}")
            print(f"  parameters (--{flag}-param KEY=VALUE):")
            print("\n".join(describe_model(entry.config, "    ")))
    return 0


def _run(args: argparse.Namespace) -> int:
    from fvdm.core.plugins import load_plugins

    plugins = load_plugins()
    if args.describe:
        return describe(args, plugins)
    if not args.out:
        raise ValueError("give --out DIR (where the samples are written)")
    defaults = cli_layer(args)
    if args.jobs:
        jobs = load_jobs(args.jobs, defaults)
    else:
        if not args.task or not args.checkpoint:
            raise ValueError("give --checkpoint and --task (or --jobs jobs.yaml)")
        jobs = [merge_layers({}, defaults)]
    cache: dict[str, Any] = {}
    plans = []
    for i, job in enumerate(jobs):  # every job resolved and its inputs read before the first one samples
        try:
            plans.append(plan_job(job, plugins, cache))
        except (ValueError, FileNotFoundError) as exc:
            if len(jobs) == 1:
                raise
            raise ValueError(f"job {i} ({job.get('name')}): {exc}") from exc
    for plan in plans:
        s = run_plan(plan, plugins, progress=not args.no_progress)
        print(f"fvdm sample: {s['task']}: {s['batch']}x{s['frames']} frames in {s['seconds']:.1f}s -> "
              f"{', '.join(str(Path(plan.job['out']) / f) for f in s['files'])}")
    return 0
