"""`fvdm demo --out DIR [--minutes M] [--quick]`: the end-to-end story on CPU.

1. Train ``unet_video`` (a small video U-Net with per-frame timesteps; Latte is the
   paper's backbone, but on a 2-core CPU the U-Net is the one that learns to draw digits
   within minutes, see the README's recipe table) with PTSS on the built-in
   moving-digits data for about ``--minutes`` (time-based: a short probe measures
   steps/s, then resumed runs fill the budget).
2. Sample every task from that one checkpoint: unconditional, image_to_video,
   interpolation, infill, extension, long_video (15 windows), df_rollout; the context
   tasks also run the ``vanilla_replacement`` baseline and are scored against the
   held-out clip (MSE on the generated frames, exactness of the given frames).
3. Sample every task the same way from the committed fine-tuned FVDM model
   (``fvdm/bench/weights/digits_fvdm``: the committed synchronized base fine-tuned far longer than a
   demo can train; ``--model DIR`` another, ``--no-model`` skips it), so the report shows what the
   method does once a model is trained.
4. Score both models next to real clips: digit recognisability of unconditional samples and identity
   F1 with the given frames (image-to-video, extension, interpolation from ``--eval-clips`` held-out
   clips, native sampling, the same noise for both).
5. Write DIR/report.md with settings, timings and the tables, plus a GIF and a PNG grid per task
   (rows: ground truth, FVDM, baseline; ``committed_*`` for the committed model).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from fvdm.commands.argtypes import positive_float, positive_int


#: the recipe, in one file: ``configs/demo.yaml`` links to it, ``fvdm train configs/demo.yaml`` trains it
RECIPE_FILE = Path(__file__).with_name("demo.yaml")
# what the demo changes for a time-budgeted run: it trains until --minutes (not to train.steps), writes
# one checkpoint at the end and no previews or TensorBoard events
TIME_BUDGET: dict[str, Any] = {"steps": 100000, "ckpt_every": 100000, "sample_every": 0, "tensorboard": False}


def demo_config() -> dict[str, Any]:
    """The demo's experiment config: the recipe file with the time-budget changes."""
    import yaml

    data = yaml.safe_load(RECIPE_FILE.read_text())
    data["train"] = {**data["train"], **TIME_BUDGET}
    return data


DEMO_CONFIG: dict[str, Any] = demo_config()

QUICK_OVERRIDES: dict[str, Any] = {
    "data": {"name": "moving_digits", "num_frames": 4, "resolution": 16, "num_clips": 16},
    "train": {"steps": 100000, "batch_size": 2, "lr": 5e-4, "warmup_steps": 0, "log_every": 1, "ckpt_every": 100000,
              "sample_every": 0, "tensorboard": False},
    "sample": {"sampler": {"name": "ddim", "clip_x0": 1.0}, "schedule": "standard", "steps": 2},
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="train a tiny FVDM model on CPU, sample every task, write a report (the README's main job)",
        description="Train a small video U-Net (unet_video) with per-frame timesteps on moving digits for --minutes, then sample every zero-shot task (with the "
                    "vanilla-replacement baseline for context tasks) and write DIR/report.md, GIFs and PNG grids.",
    )
    p.add_argument("--out", default="demo_out", help="report directory (default demo_out)")
    p.add_argument("--minutes", type=positive_float, default=5.0, help="training budget in minutes (default 5)")
    p.add_argument("--steps", type=positive_int, default=None, help="train exactly this many steps instead of --minutes")
    p.add_argument("--sample-steps", type=positive_int, default=None, help="sampling steps K (default 20; quick: 2)")
    p.add_argument("--quick", action="store_true", help="seconds-long smoke run (tiny data, 2 train steps)")
    p.add_argument("--baseline-minutes", type=float, default=0.0,
                   help="also train a synchronized-timestep model this long and compare it (with the replacement "
                        "trick) on the context tasks; 0 = skip (default; --quick: 2 steps)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch threads (default: torch's, i.e. OMP_NUM_THREADS; `make` sets 1: on a shared or busy "
                        "machine more threads than free cores is several times slower)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-clips", type=positive_int, default=None,
                   help="unconditional samples scored for digit recognisability next to as many real clips, "
                        "and held-out clips per context task scored for identity (default 32; quick: 2)")
    p.add_argument("--model", default=None, metavar="DIR",
                   help="the trained FVDM model sampled next to the demo's (an fvdm backbone directory with "
                        "provenance.json; default: the committed fvdm/bench/weights/digits_fvdm)")
    p.add_argument("--no-model", action="store_true", help="skip the committed model (the demo's own model only)")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override the demo config, e.g. -o noise_schedule.prediction=v -o data.num_frames=16")
    p.add_argument("--no-progress", action="store_true",
                   help="log lines instead of a progress bar (the default when stderr is not a terminal)")
    p.set_defaults(func=_run)


def _train(cfg: Any, plugins: Any, run_dir: Path, minutes: float, steps: int | None,
           progress: bool | None) -> dict[str, Any]:
    """Time-budgeted training: a short probe, then resumed runs sized to the remaining budget.

    ``progress``: the engine's (None: a bar on a terminal, log lines otherwise, as ``fvdm train``).

    Each call's rate (the engine's steps/s) and start-up overhead size the next call (at most
    about half the remaining time), so a machine that gets faster or slower mid-way still
    ends close to the budget.
    """
    from fvdm.core.engine import train

    t0 = time.perf_counter()
    probe = steps if steps is not None else 10
    res = train(cfg, plugins, run_dir=run_dir, max_steps=probe, overwrite=True, progress=progress)
    budget = minutes * 60
    overhead = 3.0  # per resumed call: rebuild data + model, load the checkpoint (re-measured below)
    for _ in range(8 if steps is None else 0):
        remaining = budget - (time.perf_counter() - t0) - overhead
        rate = max(float(res.get("steps_per_sec") or 0.0), 1e-3)
        # at most ~half the remaining time per call (>= 30 s), so a changing load is re-measured
        chunk = remaining if remaining < 60 else max(remaining / 2, 30.0)
        more = int(chunk * rate * 0.95)
        if more < 5:
            break
        t_call = time.perf_counter()
        res = train(cfg, plugins, run_dir=run_dir, resume=True, max_steps=more, progress=progress)
        overhead = max(0.0, time.perf_counter() - t_call - more / max(float(res.get("steps_per_sec") or rate), 1e-3))
    res["seconds"] = time.perf_counter() - t0
    return res


def _fast_bf16() -> bool:
    """True where bf16 autocast speeds training up: a CUDA device, or a CPU with native bf16 dot products."""
    import torch

    if torch.cuda.is_available():
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _mse(a: Any, b: Any) -> float:
    return float(((a - b) ** 2).mean())


def _run(args: argparse.Namespace) -> int:
    import torch

    from fvdm.core.loaded import load_for_sampling
    from fvdm.core.config import apply_overrides, parse_config
    from fvdm.core.media import AtomicOutputs
    from fvdm.core.plugins import load_plugins

    t_all = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    out = Path(args.out)
    data = json.loads(json.dumps(DEMO_CONFIG))
    if args.quick:
        data.update(json.loads(json.dumps(QUICK_OVERRIDES)))
    data["seed"] = args.seed
    if data["train"].get("bf16") and not _fast_bf16():
        data["train"]["bf16"] = False  # emulated bf16 is slower than fp32: keep the budget's steps
        print("fvdm demo: this CPU has no native bf16 (avx512_bf16/amx); training in fp32", flush=True)
    data = apply_overrides(data, args.override)
    cfg = parse_config(data, "fvdm demo")
    plugins = load_plugins()
    run_dir = out / "run"
    steps = args.steps if args.steps is not None else (2 if args.quick else None)
    if args.eval_clips is None:
        args.eval_clips = 2 if args.quick else 32
    committed = prov = None
    if not args.no_model:  # checked before any training: a bad --model loses nothing
        from fvdm.commands.demo_committed import COMMITTED_DIR, how_trained, load_committed

        committed, prov = load_committed(args.model or COMMITTED_DIR, plugins)
        print(f"fvdm demo: committed model {args.model or COMMITTED_DIR} (step {prov['step']} of its fine-tune, "
              f"sha256 {prov['sha256'][:12]} verified)", flush=True)
    print(f"fvdm demo: training {cfg.backbone.name} on moving digits ({threads} thread(s), "
          f"{'%d steps' % steps if steps else '%.1f min' % args.minutes}) -> {run_dir}", flush=True)
    # a bar only on a terminal: `make demo > log` gets log lines, not carriage-return frames
    progress = False if args.no_progress else None
    tres = _train(cfg, plugins, run_dir, args.minutes, steps, progress=progress)
    loaded = load_for_sampling(tres["checkpoint"], plugins)
    sync = sres = None
    if args.baseline_minutes > 0:
        # the classic baseline: a synchronized-timestep model (one t per clip) + the replacement trick
        scfg = parse_config({**json.loads(cfg.model_dump_json()), "vtv": {"name": "synchronized"}}, "fvdm demo")
        print(f"fvdm demo: training the synchronized baseline -> {out / 'run_sync'}", flush=True)
        sres = _train(scfg, plugins, out / "run_sync", args.baseline_minutes, steps, progress=progress)
        sync = load_for_sampling(sres["checkpoint"], plugins)
    K = args.sample_steps or cfg.sample.steps
    with AtomicOutputs(out) as o:
        rows = _every_task(o, "", loaded, sync, plugins, K, args)
        rec = _recognisability(loaded, plugins, K, args, o, "")
        scores = {"demo": {"recognisability": rec, **_identity(loaded, plugins, K, args)}}
        if committed is not None:
            rows += _every_task(o, "committed_", committed, None, plugins, K, args, label="committed fvdm")
            scores["committed"] = {"recognisability": _recognisability(committed, plugins, K, args, o, "committed_"),
                                   **_identity(committed, plugins, K, args), "how_trained": how_trained(prov),
                                   "sha256": prov["sha256"], "path": str(args.model or COMMITTED_DIR)}
        total = time.perf_counter() - t_all
        o.add("report.md", lambda p: p.write_text(_report(cfg, tres, sres, K, rows, total, threads, args, scores)))
        o.add("results.json", lambda p: p.write_text(json.dumps(
            {"train": {k: tres[k] for k in ("step", "final_loss", "seconds", "steps_per_sec", "checkpoint")},
             "baseline_train": {k: sres[k] for k in ("step", "final_loss", "seconds", "checkpoint")} if sres else None,
             "sample_steps": K, "rows": rows, "recognisability": rec, "models": scores,
             "total_seconds": round(total, 1), "threads": threads}, indent=2)))
    print(f"fvdm demo: done in {time.perf_counter() - t_all:.0f}s -> {out / 'report.md'}")
    return 0


def _every_task(o: Any, prefix: str, loaded: Any, sync: Any, plugins: Any, K: int, args: argparse.Namespace,
                label: str = "fvdm") -> list[dict[str, Any]]:
    """Sample every task from ``loaded`` (context tasks from 2 held-out clips of its own data, with the
    vanilla-replacement baseline, and ``sync`` + replacement when given); grids and GIFs as PREFIX{task}."""
    import torch

    from fvdm.core.media import auto_scale, write_gif, write_png_grid
    from fvdm.core.sampling_context import make_context

    W = loaded.num_frames
    # held-out clips (val split) give the context frames and the ground truth
    val = plugins["datasets"].build({**loaded.config.data.spec(), "split": "val", "num_clips": 4})
    gt = torch.stack([val[i]["video"] for i in range(2)])  # (2, W, C, H, W) pixel space
    z_gt = loaded.autoencoder.encode(gt)
    half = W // 2
    given = torch.zeros(W, dtype=torch.bool)
    given[::2] = True
    long_n = 4 * W if args.quick else (W + 14 * (W - half))  # 15 windows
    jobs: list[tuple[str, dict[str, Any], dict[str, Any], Any]] = [
        # (task, task options, inputs, mask of frames scored against ground truth or None)
        ("unconditional", {}, {}, None),
        ("image_to_video", {}, {"image": z_gt[:, 0]}, "gen"),
        ("interpolation", {}, {"first": z_gt[:, 0], "last": z_gt[:, -1]}, "gen"),
        ("infill", {}, {"video": z_gt, "mask": given}, "gen"),
        ("extension", {"num_frames": W}, {"video": z_gt[:, :half]}, "gen"),
        ("long_video", {"num_frames": long_n, "overlap": half}, {}, None),
        ("df_rollout", {"num_frames": 2 * W if args.quick else 4 * W, "overlap": half,
                        "schedule": {"name": "pyramid", "u": 1.0}}, {}, None),
    ]
    if loaded.num_classes > 0:
        jobs.insert(1, ("class_conditional", {}, {"labels": torch.arange(2) % loaded.num_classes}, None))
    known = {"image_to_video": [0], "interpolation": [0, W - 1], "infill": given.nonzero().flatten().tolist(),
             "extension": list(range(half))}
    rows: list[dict[str, Any]] = []
    for name, opts, inputs, scored in jobs:
        runs = [(label, loaded, "fvdm")]
        if scored:
            runs.append(("vanilla_replacement" if not prefix else f"{label} + vanilla_replacement", loaded,
                         "vanilla_replacement"))
            if sync is not None:
                runs.append(("synchronized model + vanilla_replacement", sync, "vanilla_replacement"))
        clips = [gt] if scored else []
        for mode_label, model, mode in runs:
            task = plugins["tasks"].build({"name": name, "mode": mode, **opts})
            ctx = make_context(model, plugins, steps=K, batch_size=2, seed=args.seed)
            t0 = time.perf_counter()
            with torch.no_grad():
                video = model.autoencoder.decode(task.run(ctx, inputs))
            sec = time.perf_counter() - t0
            row = {"task": name, "mode": mode_label, "frames": int(video.shape[1]), "batch": int(video.shape[0]),
                   "seconds": round(sec, 2), "file": f"{prefix}{name}"}
            if scored:
                gen = [f for f in range(W) if f not in known[name]]
                row["mse_generated"] = round(_mse(video[:, gen], gt[:, gen]), 4)
                row["given_exact"] = bool(torch.equal(video[:, known[name]], gt[:, known[name]]))
            rows.append(row)
            clips.append(video)
            print(f"fvdm demo: {name} [{mode_label}] {row['batch']}x{row['frames']} frames in {sec:.1f}s", flush=True)
        both = torch.cat(clips, dim=0)  # rows: ground truth, fvdm, baseline
        scale = auto_scale(both.shape[-2])  # nearest-neighbour: frames shown at >= 96 px
        o.add(f"{prefix}{name}.gif", lambda p, v=both, s=scale: write_gif(v, p, fps=6, scale=s))
        o.add(f"{prefix}{name}.png", lambda p, v=both, s=scale: write_png_grid(v, p, scale=s))
    return rows


def _identity(loaded: Any, plugins: Any, K: int, args: argparse.Namespace) -> dict[str, Any]:
    """Identity F1 with the given frames of ``--eval-clips`` held-out clips per context task (native sampling,
    the same noise for every model), next to the real clips' own score."""
    from fvdm.bench.context_identity import copy_identity, held_out, real_identity, sample_tasks, score_tasks

    t0 = time.perf_counter()
    gt = held_out(plugins, loaded.config.data.spec(), args.eval_clips)
    tasks = score_tasks(plugins, sample_tasks(loaded, plugins, gt, K, seed=args.seed), gt)
    sec = time.perf_counter() - t0
    print("fvdm demo: identity F1 with the given frames " + ", ".join(
        f"{k} {v['identity_f1']:.3f}" for k, v in tasks.items()) + f" ({len(gt)} clips each, {sec:.0f}s)", flush=True)
    return {"identity": tasks, "real_identity": real_identity(plugins, gt), "copy_identity": copy_identity(plugins, gt),
            "identity_clips": len(gt)}


def _recognisability(loaded: Any, plugins: Any, K: int, args: argparse.Namespace, o: Any, prefix: str
                     ) -> dict[str, Any]:
    """``--eval-clips`` unconditional samples and as many held-out real clips of the model's data, scored by the
    per-frame digit detector (``digit_recognisability``); writes PREFIXsamples.png/gif (the first 8 samples)."""
    import torch

    from fvdm.core.sampling_context import sample_unconditional
    from fvdm.core.media import auto_scale, write_gif, write_png_grid

    n = args.eval_clips  # positive_int at the parser
    t0 = time.perf_counter()
    # fixed chunks of 16, each with its own seed: the samples do not depend on a batch-size choice
    fake_v = sample_unconditional(loaded, plugins, n, steps=K, seed=args.seed + 1000, chunk=16)  # (n, F, C, H, W)
    sec = time.perf_counter() - t0
    val = plugins["datasets"].build({**loaded.config.data.spec(), "split": "val", "num_clips": n})
    real_v = torch.stack([val[i]["video"] for i in range(n)])
    ev = plugins["evaluators"].build({"name": "digit_recognisability"})
    gen, real = ev.evaluate(fake_v.clamp(-1, 1)), ev.evaluate(real_v)  # a sampler without x0 clipping may overshoot
    scale = auto_scale(fake_v.shape[-2])
    o.add(f"{prefix}samples.png", lambda p, v=fake_v[:8], s=scale: write_png_grid(v, p, scale=s))
    o.add(f"{prefix}samples.gif", lambda p, v=fake_v[:8], s=scale: write_gif(v, p, fps=6, scale=s))
    res = {"clips": n, "seconds": round(sec, 1), "threshold": gen["threshold"],
           "generated": {k: round(gen[k], 4) for k in ("value", "mean_confidence", "digits_per_frame")},
           "real": {k: round(real[k], 4) for k in ("value", "mean_confidence", "digits_per_frame")},
           "weights_sha256": gen["weights_sha256"]}
    print(f"fvdm demo: {n} unconditional samples in {sec:.1f}s; digit recognisability {res['generated']['value']:.3f} "
          f"(held-out real clips {res['real']['value']:.3f})", flush=True)
    return res


def _report(cfg: Any, tres: dict[str, Any], sres: dict[str, Any] | None, K: int, rows: list[dict[str, Any]],
            total: float, threads: int, args: argparse.Namespace, scores: dict[str, Any]) -> str:
    d = cfg.data.spec()
    committed = scores.get("committed")
    lines = [
        "# fvdm demo report", "",
        f"One {cfg.backbone.name} model trained here with per-frame timesteps (FVDM, PTSS p=0.2) on moving digits, "
        "then every zero-shot task sampled from it by choosing per-frame schedules only"
        + (", and the same tasks from the committed fine-tuned FVDM model (trained far longer than a demo can)."
           if committed else "."), "",
        "## Settings", "",
        f"- data: moving_digits, {d.get('num_frames')} frames, {d.get('resolution')}x{d.get('resolution')}, "
        f"{d.get('num_clips')} clips; backbone {cfg.backbone.spec()}; noise schedule {cfg.noise_schedule.spec()}; "
        f"VTV {cfg.vtv.spec()}",
        f"- demo model: trained here from scratch, {tres['step']} steps, batch {cfg.train.batch_size}, lr "
        f"{cfg.train.lr}, final loss {tres['final_loss']:.4f}, {tres['seconds']:.0f} s ({tres['steps_per_sec']:.2f} "
        "steps/s)",
        (f"- committed model (`{committed['path']}`): {committed['how_trained']}" if committed else
         "- committed model: skipped (--no-model)"),
        (f"- baseline: the same model trained with synchronized timesteps, {sres['step']} steps, final loss "
         f"{sres['final_loss']:.4f}, {sres['seconds']:.0f} s" if sres else
         "- baseline: vanilla_replacement on the FVDM model (train a synchronized model too with --baseline-minutes)"),
        f"- sampling: {cfg.sample.sampler.name} K={K}, standard matrix (df_rollout: pyramid u=1), EMA weights, "
        "context frames re-imposed after every step (multiplier 0)",
        f"- machine: {platform.machine()} {platform.system()}, {os.cpu_count()} cores, torch threads {threads}; "
        f"total demo time {total:.0f} s" + (" (--quick)" if args.quick else ""), "",
        *_scores_table(scores),
        "## Tasks", "",
        "Scored tasks use a held-out clip: MSE is over the generated frames only (pixels in [-1, 1]); "
        "`given exact` checks the context frames equal the input bit for bit. `vanilla_replacement` is the classic "
        "zero-shot baseline (re-noise the known frames to the current level every step).", "",
        "| task | mode | frames | batch | seconds | MSE generated | given exact |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['task']} | {r['mode']} | {r['frames']} | {r['batch']} | {r['seconds']} | "
                     f"{r.get('mse_generated', '')} | {r.get('given_exact', '')} |")
    lines += ["", "## Samples", "",
              "Rows of each grid: ground truth (scored tasks), FVDM, baseline; columns: frames. `committed_*`: the "
              "committed fine-tuned model.", "",
              "![samples](samples.png) " + ("![committed samples](committed_samples.png)" if committed else ""), ""]
    for file in dict.fromkeys(r["file"] for r in rows):
        lines += [f"### {file}", "", f"![{file}]({file}.gif)", "", f"![{file} grid]({file}.png)", ""]
    lines += ["Checkpoint: `run/checkpoints/last.pt`; sample more with "
              "`fvdm sample --checkpoint run/checkpoints/last.pt --task TASK --out DIR`.", ""]
    return "\n".join(lines)


def _scores_table(scores: dict[str, Any]) -> list[str]:
    """Both models next to real clips: recognisable unconditional digits, and given digits kept."""
    demo = scores["demo"]
    rec, n = demo["recognisability"], demo["identity_clips"]
    tasks = list(demo["identity"])
    real = demo["real_identity"]
    lines = ["## What each model can do", "",
             f"Unconditional: {rec['clips']} samples, the fraction of frames in which the bundled per-frame digit "
             f"detector (`digit_recognisability`) puts >= {rec['threshold']} of its probability on one digit in one "
             f"place. Identity: {n} held-out clips per task, native sampling with the given frames at level 0; per "
             "generated frame, F1 of the digit classes found against those of the given frames (`digit_identity`; "
             "about 0.18 when the digits are unrelated to the given ones). Real clips score both against themselves.",
             "", "| model | unconditional: recognised frames | " + " | ".join(f"identity F1: {t}" for t in tasks)
             + " |", "|---|---|" + "---|" * len(tasks),
             f"| real clips (val split) | {rec['real']['value']:.3f} | " + " | ".join(f"{real[t]:.3f}" for t in tasks)
             + " |",
             "| copy the nearest given frame (no model; digits kept, motion lost) | - | "
             + " | ".join(f"{demo['copy_identity'][t]:.3f}" for t in tasks) + " |"]
    for key, label in (("demo", "demo model (trained here)"), ("committed", "committed fine-tuned FVDM model")):
        if key in scores:
            s = scores[key]
            lines.append(f"| {label} | {s['recognisability']['generated']['value']:.3f} | "
                         + " | ".join(f"{s['identity'][t]['identity_f1']:.3f}" for t in tasks) + " |")
    best = {t: max(scores[k]["identity"][t]["identity_f1"] for k in ("demo", "committed") if k in scores)
            for t in tasks}
    if any(best[t] < demo["copy_identity"][t] for t in tasks):  # say it where the numbers are, not only in a README
        lines += ["", "Read this honestly: where a model's identity F1 is below the copy's, it does not yet carry the "
                  "given digits forward as well as keeping them still does; the generated frames drift into other "
                  "digits (see the grids)."]
    if "committed" in scores and scores["committed"]["real_identity"] != real:
        lines += ["", "The committed model's own data (its held-out clips) scores real identity "
                  + ", ".join(f"{t} {v:.3f}" for t, v in scores["committed"]["real_identity"].items()) + "."]
    return lines + [""]
