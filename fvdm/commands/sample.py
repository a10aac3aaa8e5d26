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
specs with every parameter, each input file's path and sha256, and where every plugin
involved comes from (``provenance``: built-in, or distribution and version).

Planning (layers -> validated plans -> outputs) lives in ``fvdm.commands.jobs``; this
module is the command line. ``--batch-size N`` draws N samples; a task with context
draws all N from the one given context, each with its own noise.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from fvdm.commands.argtypes import device_arg, nonnegative_int, positive_int
from fvdm.commands.jobs import RUN_KEYS, SHORTHANDS, SPEC_KEYS, TASK_FLAGS, load_jobs, merge_layers, plan_job, run_plan
from fvdm.commands.specs import describe_model, parse_params

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
    p.add_argument("--config", help="instead of --checkpoint: a config whose backbone names pretrained weights "
                                    "(backbone: {name: wan, pretrained: DIR}); samples them without a training run")
    p.add_argument("--prompt", help="text prompt (text-conditioned backbones; the config's text_encoder encodes it)")
    p.add_argument("--negative-prompt", help="the unconditional side of --cfg-scale guidance (default: the empty "
                                             "prompt)")
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
    p.add_argument("--frames", type=positive_int, help="total frames to output (long_video default 128); for a latent model (wan_vae) these are "
                        "latent frames: each decodes to 4 pixel frames, the first to 1")
    p.add_argument("--steps", type=positive_int, help="sampling steps K (default: the checkpoint config's sample.steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=positive_int, default=1,
                   help="samples to draw; a task with context draws them all from the one given context")
    p.add_argument("--sampler", help="sampler name, e.g. ddim (default: the checkpoint config's)")
    p.add_argument("--sampler-param", action="append", metavar="KEY=VALUE",
                   help="a sampler parameter (value parsed as YAML), e.g. eta=0.5; repeatable")
    p.add_argument("--eta", type=float, help="shorthand for --sampler-param eta=E")
    p.add_argument("--schedule", help="sampling schedule name, e.g. pyramid (default: the checkpoint config's)")
    p.add_argument("--schedule-param", action="append", metavar="KEY=VALUE",
                   help="a sampling-schedule parameter (value parsed as YAML), e.g. u=0.5; repeatable")
    p.add_argument("--u", type=float, help="shorthand for --schedule-param u=U (pyramid, trapezoid)")
    p.add_argument("--cfg-scale", type=float, help="classifier-free guidance scale: class labels against the null "
                                                   "label, a prompt against --negative-prompt (Wan: 5.0)")
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
    p.add_argument("--dtype", help="fp32 | bf16 | fp16: the model's weights and forward (default: the config's "
                                   "sample.dtype, fp32); the sampler's arithmetic stays float32. bf16 halves the "
                                   "weights' memory; Wan reads its shards straight into it")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress output (default: a bar on a terminal, one line per window otherwise)")
    p.set_defaults(func=_run)


# -- the command line as one settings layer (planning: fvdm.commands.jobs) ---------------------------------

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
        if not args.task or not (args.checkpoint or args.config):
            raise ValueError("give --checkpoint (or --config with pretrained weights) and --task (or --jobs jobs.yaml)")
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
        report = progress_reporter(plan.stem, not args.no_progress)
        try:
            s = run_plan(plan, callback=report)
        finally:
            report(None)
        print(f"fvdm sample: {s['task']}: {s['batch']}x{s['frames']} frames in {s['seconds']:.1f}s -> "
              f"{', '.join(str(Path(plan.job['out']) / f) for f in s['files'])}")
    return 0
