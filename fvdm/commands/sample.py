"""`fvdm sample --checkpoint C --task T [...] --out DIR`: run a zero-shot task, write GIF / PNG grid / mp4.

Batch mode: ``--jobs jobs.yaml`` holds a list of jobs, each a mapping of the same
option names (``task``, ``image``, ``frames``, ``steps``, ``seed``, ``out`` ...);
options given on the command line are the defaults of every job. All jobs are
validated before the first one runs. Outputs are written to a temporary directory
and renamed into place, so a failed job leaves no partial files.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from fvdm.commands.argtypes import device_arg, nonnegative_int, positive_int


#: task -> what it reads from the command line (for --help and messages)
TASK_INPUTS = {
    "unconditional": "--frames (<= window)",
    "class_conditional": "--label",
    "image_to_video": "--image (or the first frame of --video)",
    "interpolation": "--image and --last (or first/last frame of --video)",
    "infill": "--video (window frames) and --given (indices of the given frames)",
    "extension": "--video, --context-frames k, --frames N (total)",
    "prediction": "same as extension",
    "long_video": "--frames N, --overlap o (optional --video + --context-frames to start from)",
    "df_rollout": "--frames N, --overlap o, --u (pyramid); optional --video start",
}

#: job keys (YAML) = argparse dests
JOB_KEYS = ("checkpoint", "task", "image", "last", "video", "frames", "steps", "seed", "out", "batch_size",
            "sampler", "eta", "schedule", "u", "cfg_scale", "label", "overlap", "window", "context_frames", "given",
            "multiplier", "stabilization", "mode", "on_mismatch", "formats", "fps", "device", "no_ema", "name")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample", help="sample a task (i2v, interpolation, infill, extension, long video, ...) from a checkpoint",
        description="Run a zero-shot task with a trained FVDM checkpoint and write NAME.gif, NAME.png (grid: "
                    "rows = samples, columns = frames), NAME.mp4 and NAME.json (settings, timing) into --out.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="task inputs:\n" + "\n".join(f"  {k:18s} {v}" for k, v in TASK_INPUTS.items()) + "\n\nexamples:\n"
               "  fvdm sample --checkpoint C --task image_to_video --image first.png --out out\n"
               "  fvdm sample --checkpoint C --task long_video --frames 128 --overlap 8 --steps 25 --out out\n"
               "  fvdm sample --checkpoint C --jobs jobs.yaml --out out",
    )
    p.add_argument("--checkpoint", help="checkpoint file (runs/NAME/checkpoints/last.pt)")
    p.add_argument("--task", help="task name (fvdm plugins --kind tasks)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--jobs", help="YAML list of jobs (batch mode); CLI options are their defaults")
    p.add_argument("--image", help="first frame image (image_to_video, interpolation)")
    p.add_argument("--last", help="last frame image (interpolation)")
    p.add_argument("--video", help="context video (mp4/webm/gif): extension, infill, interpolation, long_video")
    p.add_argument("--frames", type=positive_int, help="total frames to output (long_video default 128)")
    p.add_argument("--steps", type=positive_int, help="sampling steps K (default: the checkpoint config's sample.steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=positive_int, default=1, help="samples per task (unconditional tasks)")
    p.add_argument("--sampler", help="ddim | ddpm | euler | heun (default: the checkpoint config's)")
    p.add_argument("--eta", type=float, help="DDIM eta")
    p.add_argument("--schedule", help="sampling-matrix builder: standard | pyramid | autoregressive | trapezoid")
    p.add_argument("--u", type=float, help="pyramid/trapezoid uncertainty scale")
    p.add_argument("--cfg-scale", type=float, help="classifier-free guidance scale (class-conditional models)")
    p.add_argument("--label", type=int, nargs="+", help="class label(s)")
    p.add_argument("--overlap", type=nonnegative_int, help="frames shared by consecutive windows (default window/2)")
    p.add_argument("--window", type=positive_int, help="frames per window (default and maximum: the checkpoint's)")
    p.add_argument("--context-frames", type=positive_int, help="frames of --video used as context (extension: default window/2)")
    p.add_argument("--given", help="infill: comma-separated indices of given frames (default: even frames)")
    p.add_argument("--multiplier", type=float, help="noise multiplier of context frames (0 = frozen, Pusa ~0.2)")
    p.add_argument("--stabilization", type=float, help="level at which the model sees context (Diffusion Forcing)")
    p.add_argument("--mode", choices=["fvdm", "vanilla_replacement"], help="vanilla_replacement = baseline")
    p.add_argument("--on-mismatch", choices=["resize", "error"], default="resize",
                   help="input image/video of another size or channel count: resize with a warning, or fail")
    p.add_argument("--formats", default="gif,png,mp4",
                   help="comma list of gif,png,mp4,npz (npz: every sample as its own clip, for fvdm eval --fake)")
    p.add_argument("--fps", type=positive_int, default=8)
    p.add_argument("--name", help="output file stem (default: the task name)")
    p.add_argument("--device", type=device_arg, default="cpu")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run)


# -- library functions (used by `fvdm demo` and benchmarks) ----------------------------------------------

def make_context(loaded: Any, plugins: Any, *, steps: int | None = None, sampler: Any = None, schedule: Any = None,
                 cfg_scale: float | None = None, batch_size: int = 1, seed: int = 0, device: str = "cpu",
                 callback: Any = None) -> Any:
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


def task_spec(plugins: Any, task: str, job: dict[str, Any]) -> dict[str, Any]:
    """{"name": task, **options the task's Config has} from a job."""
    entry = plugins["tasks"].get(task)
    fields = set(entry.config.model_fields) if entry.config is not None else set()
    mapping = {"mode": "mode", "stabilization": "stabilization", "multiplier": "multiplier", "window": "window",
               "overlap": "overlap", "u": "u", "frames": "num_frames"}
    spec: dict[str, Any] = {"name": task}
    for key, field in mapping.items():
        if job.get(key) is not None and field in fields:
            spec[field] = job[key]
    return spec


def encode(loaded: Any, frames: Any) -> Any:
    """Pixel frames (B, F, C, H, W) -> model space."""
    import torch

    with torch.no_grad():
        return loaded.autoencoder.encode(frames)


def task_inputs(loaded: Any, task: str, job: dict[str, Any], window: int) -> dict[str, Any]:
    """Read the files a job names and build the task's inputs (model space)."""
    import torch

    from fvdm.core.media import read_image, read_video

    shape = (loaded.channels, loaded.resolution, loaded.resolution)
    mis = job.get("on_mismatch") or "resize"
    base = task.replace("prediction", "extension")
    inputs: dict[str, Any] = {}
    if job.get("label") is not None:
        inputs["labels"] = torch.tensor(job["label"] if isinstance(job["label"], list) else [job["label"]])
    video = None
    if base in ("infill",):
        need = window
    elif base in ("extension", "long_video", "df_rollout"):
        need = int(job.get("context_frames") or (window // 2 if base == "extension" else 1))
    else:
        need = 1
    if job.get("video"):
        video = read_video(job["video"], shape, min_frames=need, on_mismatch=mis)[None]  # (1, F, C, H, W)
    if base == "image_to_video":
        if job.get("image"):
            img = read_image(job["image"], shape, mis)[None, None]
        elif video is not None:
            img = video[:, :1]
        else:
            raise ValueError("image_to_video needs --image first.png (or --video to take its first frame)")
        inputs["image"] = encode(loaded, img)[:, 0]
    elif base == "interpolation":
        if job.get("image") and job.get("last"):
            pair = torch.stack([read_image(job["image"], shape, mis), read_image(job["last"], shape, mis)])[None]
        elif video is not None and video.shape[1] >= 2:
            pair = video[:, [0, -1]]
        else:
            raise ValueError("interpolation needs --image first.png and --last last.png (or --video with >= 2 frames)")
        z = encode(loaded, pair)
        inputs["first"], inputs["last"] = z[:, 0], z[:, 1]
    elif base == "infill":
        if video is None:
            raise ValueError(f"infill needs --video with at least {window} frames and --given indices")
        given = job.get("given")
        idx = ([int(i) for i in str(given).split(",") if i.strip() != ""] if given is not None
               else list(range(0, window, 2)))
        if not idx or min(idx) < 0 or max(idx) >= window:
            raise ValueError(f"--given must list frame indices in [0, {window - 1}], got {given!r}")
        mask = torch.zeros(window, dtype=torch.bool)
        mask[idx] = True
        inputs["video"], inputs["mask"] = encode(loaded, video[:, :window]), mask
    elif base in ("extension", "long_video", "df_rollout"):
        if video is not None:
            inputs["video"] = encode(loaded, video[:, :need])
        elif base == "extension":
            raise ValueError("extension/prediction needs --video context.mp4 (its first --context-frames frames)")
        if job.get("frames"):
            inputs["num_frames"] = int(job["frames"])
    elif base in ("unconditional", "class_conditional"):
        if job.get("frames"):
            inputs["num_frames"] = int(job["frames"])
    return inputs


def run_job(job: dict[str, Any], plugins: Any, cache: dict[str, Any], *, progress: bool = True) -> dict[str, Any]:
    """Run one job: load (cached) checkpoint, sample, write outputs atomically; returns a summary."""
    import torch

    from fvdm.core.checkpoint import load_for_sampling
    from fvdm.core.media import WRITERS, AtomicOutputs

    task = job["task"]
    plugins["tasks"].get(task)  # unknown task: clear error before any work
    formats = [f.strip() for f in str(job.get("formats") or "gif,png,mp4").split(",") if f.strip()]
    bad = [f for f in formats if f not in WRITERS]
    if bad:
        raise ValueError(f"unknown output format(s) {bad}; choose from {', '.join(WRITERS)}")
    ckpt = str(job["checkpoint"])
    key = f"{ckpt}|{bool(job.get('no_ema'))}|{job.get('device') or 'cpu'}"
    if key not in cache:
        if not Path(ckpt).is_file():
            raise FileNotFoundError(f"checkpoint not found: {ckpt}; train one with `fvdm train` or `fvdm demo`")
        cache[key] = load_for_sampling(ckpt, plugins, use_ema=not job.get("no_ema"), device=job.get("device") or "cpu")
    loaded = cache[key]
    window = int(job.get("window") or loaded.num_frames)
    if window > loaded.num_frames:
        raise ValueError(f"--window {window} exceeds the checkpoint's frame count {loaded.num_frames}; "
                         f"use --window <= {loaded.num_frames}")
    sampler = None
    if job.get("sampler") or job.get("eta") is not None:
        sampler = {"name": job.get("sampler") or loaded.config.sample.sampler.name}
        if job.get("eta") is not None:
            sampler["eta"] = job["eta"]
    schedule = None
    if job.get("schedule") or (job.get("u") is not None and task != "df_rollout"):
        schedule = {"name": job.get("schedule") or "pyramid"}
        if job.get("u") is not None and schedule["name"] in ("pyramid", "trapezoid"):
            schedule["u"] = job["u"]
    spec = task_spec(plugins, task, job)
    task_obj = plugins["tasks"].build(spec)
    inputs = task_inputs(loaded, task, job, window)
    if task in ("unconditional", "class_conditional", "long_video", "df_rollout") and "labels" not in inputs \
            and loaded.num_classes > 0:
        inputs["labels"] = torch.arange(int(job.get("batch_size") or 1)) % loaded.num_classes

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc=f"{task}", unit="window", file=sys.stderr, leave=False,
                   bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")

    def callback(info: dict[str, Any]) -> None:  # progress over windows (chunks) and rows (steps)
        if bar is None:
            return
        bar.total = info["num_windows"]
        bar.set_description_str(f"{task}: window {info['window'] + 1}/{info['num_windows']} "
                                f"step {info['step']}/{info['num_steps']}", refresh=False)
        bar.update(info["window"] + info["step"] / info["num_steps"] - bar.n)

    ctx = make_context(loaded, plugins, steps=job.get("steps"), sampler=sampler, schedule=schedule,
                       cfg_scale=job.get("cfg_scale"), batch_size=int(job.get("batch_size") or 1),
                       seed=int(job.get("seed") or 0), device=job.get("device") or "cpu", callback=callback)
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            z = task_obj.run(ctx, inputs)
            video = loaded.autoencoder.decode(z)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    stem = job.get("name") or task
    out = Path(job["out"])
    summary = {"task": task, "task_spec": spec, "checkpoint": ckpt, "frames": int(video.shape[1]),
               "batch": int(video.shape[0]), "steps": ctx.steps,
               "sampler": sampler or loaded.config.sample.sampler.spec(),
               "schedule": schedule or loaded.config.sample.schedule.spec(), "seed": int(job.get("seed") or 0), "seconds": round(seconds, 3),
               "files": [f"{stem}.{f}" for f in formats] + [f"{stem}.json"]}
    fps = int(job.get("fps") or 8)
    with AtomicOutputs(out) as o:
        for f in formats:
            o.add(f"{stem}.{f}", lambda p, f=f: WRITERS[f](video, p, **({} if f == "png" else {"fps": fps})))
        o.add(f"{stem}.json", lambda p: p.write_text(json.dumps(summary, indent=2) + "\n"))
    summary["video"] = video
    return summary


def load_jobs(path: str, defaults: dict[str, Any]) -> list[dict[str, Any]]:
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
        job = {k.replace("-", "_"): v for k, v in raw.items()}
        unknown = sorted(set(job) - set(JOB_KEYS))
        if unknown:
            raise ValueError(f"{path}: job {i}: unknown key(s) {unknown}; allowed: {', '.join(JOB_KEYS)}")
        merged = {**defaults, **{k: v for k, v in job.items() if v is not None}}
        if not merged.get("task"):
            raise ValueError(f"{path}: job {i} has no 'task'")
        if not merged.get("checkpoint"):
            raise ValueError(f"{path}: job {i} has no 'checkpoint' (give --checkpoint or a per-job one)")
        merged["out"] = str(Path(defaults["out"]) / str(job["out"])) if job.get("out") else defaults["out"]
        merged.setdefault("name", f"{i:02d}_{merged['task']}" if not job.get("name") else job["name"])
        jobs.append(merged)
    return jobs


def _run(args: argparse.Namespace) -> int:
    from fvdm.core.plugins import load_plugins

    plugins = load_plugins()
    defaults = {k: getattr(args, k) for k in JOB_KEYS if getattr(args, k, None) is not None}
    if args.jobs:
        jobs = load_jobs(args.jobs, defaults)
    else:
        if not args.task or not args.checkpoint:
            raise ValueError("give --checkpoint and --task (or --jobs jobs.yaml)")
        jobs = [defaults]
    for job in jobs:  # validate names before any work
        plugins["tasks"].get(job["task"])
    cache: dict[str, Any] = {}
    for job in jobs:
        s = run_job(job, plugins, cache, progress=not args.no_progress)
        print(f"fvdm sample: {s['task']}: {s['batch']}x{s['frames']} frames in {s['seconds']:.1f}s -> "
              f"{', '.join(str(Path(job['out']) / f) for f in s['files'])}")
    return 0
