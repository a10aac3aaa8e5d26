"""fvdm's train step timed against the public FVDM code's own LatteVIDEO-S/2, side by side.

Issue 13's throughput target is "our bf16 step <= 0.4x the public code's fp32 step". The overhead
benchmark (``train_step_overhead.py``) can only compare against ``per_token``, fvdm's imitation of
the public code's modulation layout; this one imports the public model itself from a local checkout
that you name (nothing is downloaded, nothing of it is copied into fvdm), gives both models the same
weights (the public state dict goes through fvdm's checkpoint importer), checks they compute the same
function, and times, interleaved in one process on the same thread count:

  public_fp32   public LatteVIDEO-S/2, fp32                      (the target's denominator)
  fvdm_fp32     fvdm latte_s_2, fp32, the engine's ``attention: auto`` kernel
  fvdm_bf16     fvdm latte_s_2 under the engine's ``train.bf16`` path (bf16 autocast forward)
  public_bf16   public LatteVIDEO-S/2 under the same bf16 autocast (``--no-public-bf16`` skips it)

A step is forward + MSE (fp32) + backward + AdamW, shapes as the README's speed row: B=2, 16 frames
x 4 channels x 32x32 latents, per-frame timesteps t (B, F). The public file imports ``timm``,
``einops`` and ``ipdb``; a missing one is reported in one line and nothing is stubbed (timm itself
imports torchvision, so the public code runs only in an environment that has it).

    python -m benchmarks.speed_public_fvdm --public-dir /path/to/FVDM [--threads 1] [--rounds 30] --out DIR
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

PUBLIC_REPO = "https://github.com/Yaofang-Liu/FVDM"
PUBLIC_FILE = "models/latte_video.py"
PUBLIC_CLASS = "LatteVIDEO_S_2"
#: issue 13, part 5: bf16 step <= this fraction of the public code's fp32 LatteVIDEO-S/2 step
TARGET_VS_PUBLIC = 0.4

FULL = dict(model="latte_s_2", public_class=PUBLIC_CLASS, batch=2, frames=16, channels=4, size=32,
            rounds=30, warmup=1)
VARIANTS = ("public_fp32", "fvdm_fp32", "fvdm_bf16", "public_bf16")
#: (numerator, denominator) pairs reported as ratio of medians and median of per-round ratios
RATIOS = (("fvdm_bf16", "public_fp32"), ("fvdm_fp32", "public_fp32"), ("fvdm_bf16", "fvdm_fp32"),
          ("public_bf16", "public_fp32"), ("fvdm_bf16", "public_bf16"))


class PublicCodeError(RuntimeError):
    """The public checkout is missing, incomplete or cannot be imported here (one-line message)."""


def check_public_dir(public_dir: str | os.PathLike, public_class: str = PUBLIC_CLASS) -> Path:
    """The checkout's ``models/latte_video.py``; one-line PublicCodeError naming what is wrong."""
    root = Path(public_dir).expanduser()
    if not root.is_dir():
        raise PublicCodeError(f"--public-dir {root} is not a directory: pass a local checkout of the "
                              f"public FVDM code ({PUBLIC_REPO})")
    path = root / PUBLIC_FILE
    if not path.is_file():
        raise PublicCodeError(f"{path} not found: --public-dir must be a checkout of the public FVDM code "
                              f"({PUBLIC_REPO}), whose {PUBLIC_FILE} defines {public_class}")
    return path


def import_public(public_dir: str | os.PathLike, public_class: str = PUBLIC_CLASS) -> Any:
    """Import the checkout's ``models/latte_video.py`` and return its ``public_class`` constructor.

    The checkout goes on sys.path only for the import (the public repo's own ``models`` package
    ``__init__`` pulls in text-to-video code and more, so the file is loaded on its own, under a
    private module name that cannot shadow anything).
    """
    path = check_public_dir(public_dir, public_class)
    root = str(path.parent.parent.resolve())
    name = "_fvdm_public_latte_video"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    sys.path.insert(0, root)
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as exc:
        raise PublicCodeError(
            f"{path} needs {exc.name!r}, which is not importable here ({exc}): install the public code's "
            f"dependencies (timm needs torchvision) in this environment; nothing is stubbed") from None
    except Exception as exc:  # a syntax error or an import-time failure in the public file
        raise PublicCodeError(f"importing {path} failed: {type(exc).__name__}: {exc}") from None
    finally:
        sys.path[:] = saved
    cls = getattr(module, public_class, None)
    if cls is None:
        raise PublicCodeError(f"{path} defines no {public_class}: is --public-dir the public FVDM code "
                              f"({PUBLIC_REPO})?")
    return cls


def public_provenance(public_dir: str | os.PathLike) -> dict[str, Any]:
    """Commit of the checkout (None when it is not a git work tree) and the model file's sha256."""
    path = check_public_dir(public_dir)
    try:
        commit = subprocess.run(["git", "-C", str(path.parent.parent), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):  # an exported archive: the sha256 still pins the file
        commit = None
    return {"dir": str(Path(public_dir).resolve()), "file": PUBLIC_FILE, "commit": commit,
            "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "repo": PUBLIC_REPO}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build(public_cls: Any, spec: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Both models with the same weights, their optimisers and inputs; plus the equivalence check."""
    import copy

    from benchmarks.train_step_overhead import _randomize_zero_init, engine_bf16_kernel
    from fvdm.core.attention import select_attention_kernel
    from fvdm.core.plugins import load_plugins
    from fvdm.plugins.backbones.latte import build_latte
    from fvdm.plugins.backbones.latte_import import import_latte_state_dict

    C, S, Fr, B = spec["channels"], spec["size"], spec["frames"], spec["batch"]
    torch.manual_seed(0)
    public = public_cls(input_size=S, in_channels=C, num_frames=Fr, learn_sigma=True)
    _randomize_zero_init(public)  # adaLN-Zero: timing (and the equivalence check) need non-zero gates
    ours = build_latte(spec["model"], in_channels=C, input_size=S, num_frames=Fr, learn_sigma=True)
    report = import_latte_state_dict(ours, public.state_dict(), strict=False)
    if not report.ok:  # one line: counts and the first offender, not the importer's full listing
        first = (report.mismatched or report.missing or report.unexpected)[0]
        raise PublicCodeError(f"the public {spec['public_class']} does not map onto fvdm's {spec['model']}: "
                              f"{len(report.mismatched)} shape mismatches, {len(report.missing)} missing, "
                              f"{len(report.unexpected)} unexpected tensors (first: {first}); is it Latte-S/2?")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, Fr, C, S, S, generator=g)
    t = torch.randint(0, 1000, (B, Fr), generator=g).float()  # one timestep per frame (FVDM)
    target = torch.randn(B, Fr, ours.out_channels, S, S, generator=g)

    plugins = load_plugins()
    ours.set_attention_kernel(select_attention_kernel(plugins, "auto", device="cpu", dtype=torch.float32))
    with torch.no_grad():  # same weights, same inputs: the two must compute the same function
        a, b = public.eval()(x, t), ours.eval()(x, t)
    check = {
        "trainable_params": {"public": _trainable(public), "fvdm": _trainable(ours)},
        # the public code keeps its fixed sin-cos tables as frozen Parameters, fvdm as buffers
        "all_parameters": {"public": sum(p.numel() for p in public.parameters()),
                           "fvdm": sum(p.numel() for p in ours.parameters())},
        "import_layout": report.layout, "tensors_loaded": len(report.loaded),
        "kept_fixed_tables": report.kept_fixed,
        "output_shape": list(a.shape), "max_abs_diff_fp32": float((a - b).abs().max()),
        "output_abs_max": float(a.abs().max()),
    }
    check["same_trainable_params"] = check["trainable_params"]["public"] == check["trainable_params"]["fvdm"]

    variants: dict[str, dict[str, Any]] = {}
    for name in VARIANTS if spec.get("public_bf16", True) else VARIANTS[:3]:
        base = public if name.startswith("public") else ours
        model = copy.deepcopy(base).train()
        if name == "fvdm_bf16":
            model.set_attention_kernel(engine_bf16_kernel())
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
        variants[name] = dict(model=model, opt=opt, x=x, t_in=t, target=target, bf16=name.endswith("bf16"))
    return variants, check


def paired(times: dict[str, list[float]], num: str, den: str) -> dict[str, float]:
    """Ratio of medians, and the median and spread of per-round ratios (rounds adjacent in time)."""
    per_round = sorted(a / b for a, b in zip(times[num], times[den]))
    q = statistics.quantiles(per_round, n=4) if len(per_round) >= 2 else per_round * 3
    return {"ratio_of_medians": statistics.median(times[num]) / statistics.median(times[den]),
            "median_paired": statistics.median(per_round), "paired_q1": q[0], "paired_q3": q[-1],
            "paired_min": per_round[0], "paired_max": per_round[-1]}


def run(public_dir: str | os.PathLike, threads: int = 1, rounds: int | None = None,
        spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """Time the variants interleaved (rotated order each round); return a JSON-able result."""
    from benchmarks.train_step_overhead import cpu_flags, train_step

    spec = dict(FULL, **(spec or {}))
    if rounds is not None:
        spec["rounds"] = rounds
    if spec["rounds"] < 1:
        raise ValueError(f"rounds={spec['rounds']} must be >= 1")
    public_cls = import_public(public_dir, spec["public_class"])  # fail before building anything
    torch.set_num_threads(threads)
    load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    variants, check = build(public_cls, spec)
    errors: dict[str, str] = {}
    for name in list(variants):  # warm-up; a variant that cannot run (e.g. public bf16) is dropped, reported
        try:
            for _ in range(max(1, spec["warmup"])):
                train_step(variants[name])
        except Exception as exc:
            if name != "public_bf16":
                raise
            errors[name] = f"{type(exc).__name__}: {exc}"
            del variants[name]
    names = tuple(variants)
    cpu: dict[str, list[float]] = {n: [] for n in names}
    wall: dict[str, list[float]] = {n: [] for n in names}
    for r in range(spec["rounds"]):
        k = r % len(names)
        for name in names[k:] + names[:k]:  # rotate so no variant always runs first
            c0, t0 = time.process_time(), time.perf_counter()
            train_step(variants[name])
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    # CPU seconds of the process: on a shared machine waiting for a core is not counted; with
    # threads=1 it equals wall time on an idle machine. Ratios use it; wall figures are kept too.
    ratios = {f"{a}/{b}": paired(cpu, a, b) for a, b in RATIOS if a in cpu and b in cpu}
    wall_ratios = {f"{a}/{b}": paired(wall, a, b)["ratio_of_medians"] for a, b in RATIOS if a in wall and b in wall}
    headline = ratios["fvdm_bf16/public_fp32"]
    return {
        "benchmark": "speed_public_fvdm",
        "spec": spec,
        "threads": threads,
        "rounds": spec["rounds"],
        "machine": {"cpu_model": cpu_model(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch": torch.__version__, "python": platform.python_version(), "cpu_flags": cpu_flags(),
                    "loadavg_start": load_start,
                    "loadavg_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "public": public_provenance(public_dir),
        "check": check,
        "clock": "process_time (CPU seconds of this process)",
        "median_s": {n: statistics.median(ts) for n, ts in cpu.items()},
        "median_wall_s": {n: statistics.median(ts) for n, ts in wall.items()},
        "ratios": ratios,
        "wall_ratio_of_medians": wall_ratios,
        "target_vs_public": TARGET_VS_PUBLIC,
        f"pass_bf16_le_{TARGET_VS_PUBLIC}_public_fp32": max(headline["ratio_of_medians"],
                                                          headline["median_paired"]) <= TARGET_VS_PUBLIC,
        "errors": errors,
        "cpu_s": cpu,
        "wall_s": wall,
    }


def write_results(res: dict[str, Any], out: str | os.PathLike, argv: list[str]) -> Path:
    from fvdm.bench.runner import write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    res = dict(res, command="python -m benchmarks.speed_public_fvdm " + " ".join(argv),
               date=time.strftime("%Y-%m-%d %H:%M:%S %z"))
    write_json(res, out / "results.json")
    return out / "results.json"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--public-dir", required=True, help=f"local checkout of {PUBLIC_REPO}")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=None, help=f"interleaved rounds (default {FULL['rounds']})")
    ap.add_argument("--no-public-bf16", action="store_true", help="skip the public model under bf16 autocast")
    ap.add_argument("--out", default=None, help="write DIR/results.json")
    args = ap.parse_args(argv)
    try:
        res = run(args.public_dir, threads=args.threads, rounds=args.rounds,
                  spec={"public_bf16": not args.no_public_bf16})
    except PublicCodeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    s, c = res["spec"], res["check"]
    print(f"public {s['public_class']} ({res['public']['commit'] or res['public']['file_sha256'][:12]}) vs fvdm "
          f"{s['model']}: B={s['batch']} F={s['frames']} C={s['channels']} {s['size']}x{s['size']}, "
          f"threads={res['threads']}, rounds={res['rounds']} interleaved; {res['machine']['cpu_model']}, "
          f"torch {res['machine']['torch']}")
    print(f"  trainable params {c['trainable_params']} (same: {c['same_trainable_params']}); "
          f"max |out diff| fp32 {c['max_abs_diff_fp32']:.2e} (|out| max {c['output_abs_max']:.2f})")
    for n, m in res["median_s"].items():
        print(f"  {n:12s} {m:8.3f} CPU-s/step (wall {res['median_wall_s'][n]:.3f})")
    for k, r in res["ratios"].items():
        print(f"  {k:24s} {r['ratio_of_medians']:.3f} (paired median {r['median_paired']:.3f}, "
              f"IQR {r['paired_q1']:.3f}-{r['paired_q3']:.3f}, range {r['paired_min']:.3f}-{r['paired_max']:.3f})")
    print(f"  target fvdm_bf16 <= {TARGET_VS_PUBLIC} x public_fp32: "
          f"{'met' if res[f'pass_bf16_le_{TARGET_VS_PUBLIC}_public_fp32'] else 'not met'}; "
          f"load avg {res['machine']['loadavg_start']} -> {res['machine']['loadavg_end']}; errors {res['errors']}")
    if args.out:
        print(f"  wrote {write_results(res, args.out, argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
