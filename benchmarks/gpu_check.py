"""GPU check (``make gpu-check``): what a lent accelerator should confirm, in <= 8 minutes on one H200.

  (a) attention parity: every registered attention kernel (math, sdpa, xformers, flex, plugins')
      against the math kernel, fp16 and bf16, forward and backward (dq, dk, dv), max abs errors;
      kernels that cannot run here are listed as skipped with the reason
  (b) bf16 training step (autocast forward, fp32 MSE, backward, AdamW) of latte_s_2 and of the
      digits suite's default backbone: steps/s, FLOPs per step (FlopCounterMode) and MFU against
      ``--peak-tflops`` (default 989: H200 dense bf16, no sparsity)
  (c) the quick digits suite on this device, run through the CLI (``fvdm bench run digits_zero_shot
      --quick``) in a subprocess; its results path and exit status are recorded

Writes OUT/gpu_check.json and OUT/gpu_check.md. ``--device cpu --smoke`` runs tiny shapes in seconds
(math vs sdpa parity in float32/bf16, a latte_tiny step, no digits suite) for the test suite.

    python -m benchmarks.gpu_check [--device cuda] [--out bench_out/gpu_check] [--smoke] [--skip-digits]
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

#: H200 SXM dense bf16 tensor-core peak (NVIDIA datasheet: 1979 TFLOP/s with 2:4 sparsity, half dense)
H200_BF16_PEAK_TFLOPS = 989.0
#: wall-clock budget of the whole check; the digits suite gets what parity and train steps leave
BUDGET_S = 8 * 60

# attention shapes (B, N, H, D): latte_s_2 at 16x32x32 latents, batch 2 -> spatial N=256 over B*F=32
# sequences, temporal N=16 over B*N=512 sequences (causal: the temporal blocks' causal option)
FULL_SHAPES = {"spatial": ((32, 256, 6, 64), False), "temporal_causal": ((512, 16, 6, 64), True)}
SMOKE_SHAPES = {"spatial": ((2, 16, 2, 8), False), "temporal_causal": ((4, 8, 2, 8), True)}

TRAIN_FULL = [dict(backbone={"name": "latte_s_2"}, batch=2, frames=16, channels=4, size=32),
              dict(backbone={"name": "latte_s_2"}, batch=16, frames=16, channels=4, size=32),
              dict(backbone="digits")]
TRAIN_SMOKE = [dict(backbone={"name": "latte_tiny"}, batch=1, frames=4, channels=1, size=8)]


def _dtype_name(dt: torch.dtype) -> str:
    return str(dt).removeprefix("torch.")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- (a) attention parity -----------------------------------------------------------------------
def _run_kernel(fn: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grad_out: torch.Tensor,
                causal: bool, backward: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """out (B, N, H, D) and [dq, dk, dv] (empty without backward) of one kernel on leaf copies."""
    leaves = [t.detach().clone().requires_grad_(backward) for t in (q, k, v)]
    with torch.set_grad_enabled(backward):
        out = fn(*leaves, mask=None, causal=causal, scale=None)
    if not backward:
        return out.detach(), []
    out.backward(grad_out.to(out.dtype))
    return out.detach(), [t.grad.detach() for t in leaves]


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def attention_parity(plugins: Any, device: torch.device, dtypes: list[torch.dtype],
                     shapes: dict[str, Any]) -> dict[str, Any]:
    """{kernel: {dtype: {shape: errors}}}: each kernel vs math in the same dtype and vs math in fp32.

    The fp32 math result on the same (rounded) inputs is the ground truth; math's own error against
    it is reported too, so a kernel's error reads against what the reference kernel itself loses.
    """
    reg = plugins["attention_kernels"]
    math_fn = reg.get("math").obj
    res: dict[str, Any] = {}
    for name in reg.names():
        entry = reg.get(name)
        res[name] = {}
        for dt in dtypes:
            fwd_ok = entry.availability(device=device, dtype=dt, requires_grad=False)
            bwd_ok = entry.availability(device=device, dtype=dt, requires_grad=True)
            cell: dict[str, Any] = {}
            if not fwd_ok:
                res[name][_dtype_name(dt)] = {"status": "skipped", "reason": fwd_ok.reason}
                continue
            for sname, (shape, causal) in shapes.items():
                g = torch.Generator().manual_seed(0)
                q, k, v, go = (torch.randn(shape, generator=g).to(device=device, dtype=dt) for _ in range(4))
                backward = bool(bwd_ok)
                try:
                    out, grads = _run_kernel(entry.obj, q, k, v, go, causal, backward)
                    m_out, m_grads = _run_kernel(math_fn, q, k, v, go, causal, backward)
                    r_out, r_grads = _run_kernel(math_fn, q.double(), k.double(), v.double(), go.double(), causal,
                                                 backward)  # fp64 on the same rounded inputs: the truth
                except Exception as exc:  # one kernel's failure is a finding, not the end of the check
                    cell[sname] = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
                    continue
                c: dict[str, Any] = {"status": "ok", "shape_bnhd": list(shape), "causal": causal,
                                     "max_abs_err_fwd_vs_math": _max_err(out, m_out),
                                     "max_abs_err_fwd_vs_fp64": _max_err(out, r_out),
                                     "math_max_abs_err_fwd_vs_fp64": _max_err(m_out, r_out)}
                if backward:
                    for gname, a, b, r in zip(("dq", "dk", "dv"), grads, m_grads, r_grads):
                        c[f"max_abs_err_{gname}_vs_math"] = _max_err(a, b)
                        c[f"max_abs_err_{gname}_vs_fp64"] = _max_err(a, r)
                        c[f"math_max_abs_err_{gname}_vs_fp64"] = _max_err(b, r)
                else:
                    c["backward"] = f"skipped: {bwd_ok.reason}"
                cell[sname] = c
            res[name][_dtype_name(dt)] = cell
    return res


# -- (b) bf16 training step ---------------------------------------------------------------------
def _digits_spec() -> dict[str, Any]:
    """The digits suite's default backbone and data shape, read from its Config (fallback: latte_tiny p4)."""
    spec = dict(backbone={"name": "latte_tiny", "patch_size": 4}, frames=16, channels=1, size=32, batch=16,
                source="fallback (digits suite config unreadable)")
    try:
        from fvdm.bench.suites.digits_zero_shot import DigitsZeroShotSuite

        cfg = DigitsZeroShotSuite.Config()
        spec.update(backbone=dict(cfg.backbone), frames=int(cfg.num_frames), size=int(cfg.resolution),
                    batch=int(getattr(cfg, "batch_size", 16)), source="DigitsZeroShotSuite.Config defaults")
        spec["channels"] = int(dict(cfg.dataset).get("channels", 1))
    except Exception as exc:  # the suite is being reworked elsewhere; the check must not depend on its internals
        spec["source"] += f": {type(exc).__name__}: {exc}"
    return spec


def _build_backbone(plugins: Any, spec: dict[str, Any], frames: int, channels: int, size: int) -> torch.nn.Module:
    """Build a registered backbone, filling the data-shape fields its config has (as the engine does)."""
    spec = dict(spec)
    entry = plugins["backbones"].get(spec["name"])
    fields = set(entry.config.model_fields) if entry.config is not None else set()
    for key, val in (("in_channels", channels), ("input_size", size), ("num_frames", frames), ("num_classes", 0)):
        if key in fields and key not in spec:
            spec[key] = val
    return plugins["backbones"].build(spec)


def _randomize_zero_init(model: torch.nn.Module) -> None:
    """adaLN-Zero / zero output layers make a trivial first step; give them small values."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().max() == 0:
                p.copy_(torch.randn(p.shape, generator=g).to(p) * 0.02)


def train_step_bench(plugins: Any, device: torch.device, case: dict[str, Any], steps: int, warmup: int,
                     peak_flops: float) -> dict[str, Any]:
    """steps/s, FLOPs per step and MFU of a bf16-autocast train step (forward, fp32 MSE, backward, AdamW)."""
    from torch.utils.flop_counter import FlopCounterMode

    from fvdm.core.attention import select_attention_kernel

    if case.get("backbone") == "digits":
        case = _digits_spec()
    B, Fr, C, S = case["batch"], case["frames"], case["channels"], case["size"]
    model = _build_backbone(plugins, case["backbone"], Fr, C, S).to(device).train()
    _randomize_zero_init(model)
    kernel = None
    if hasattr(model, "set_attention_kernel"):  # what the engine installs for train.bf16
        kernel = select_attention_kernel(plugins, "auto", device=device, dtype=torch.bfloat16)
        model.set_attention_kernel(kernel)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(B, Fr, C, S, S, device=device, generator=g)  # (B, F, C, H, W)
    t_in = torch.randint(0, 1000, (B, Fr), device=device, generator=g).float()  # per-frame timesteps

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = model(x, t_in)
        loss = F.mse_loss(out.float(), torch.zeros_like(out, dtype=torch.float32))
        loss.backward()
        opt.step()
        return loss.detach()

    with FlopCounterMode(display=False) as counter:
        loss0 = step()
    flops = int(counter.get_total_flops())
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    _sync(device)
    dt = (time.perf_counter() - t0) / steps
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"backbone": case["backbone"], "batch": B, "frames": Fr, "channels": C, "size": S,
            "spec_source": case.get("source", "gpu_check"), "params": sum(p.numel() for p in model.parameters()),
            "attention": getattr(kernel, "name", None), "steps_timed": steps, "s_per_step": dt,
            "steps_per_s": 1.0 / dt, "flops_per_step": flops, "achieved_tflops": flops / dt / 1e12,
            "mfu": flops / dt / peak_flops, "loss_finite": bool(torch.isfinite(loss0) and torch.isfinite(loss)),
            "peak_mem_gib": mem}


def _cpu_bf16_peak(n: int = 512) -> float:
    """Measured bf16 matmul FLOP/s (the CPU smoke run's MFU denominator; there is no datasheet number)."""
    a = torch.randn(n, n, dtype=torch.bfloat16)
    a @ a
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


# -- (c) quick digits suite ---------------------------------------------------------------------
def _fvdm_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("fvdm")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "fvdm.cli"]


def digits_suite(device: torch.device, out: Path, timeout_s: float) -> dict[str, Any]:
    """``fvdm bench run digits_zero_shot --quick`` on ``device`` in a subprocess; how the device is passed
    (``--device`` if the CLI has it, else ``--set device=...``) is read from the CLI's help."""
    base = _fvdm_cmd()
    helptext = subprocess.run(base + ["bench", "run", "--help"], capture_output=True, text=True).stdout
    dev = ["--device", str(device)] if "--device" in helptext else ["--set", f"device={device}"]
    suite_out = out / "digits_zero_shot_quick"
    cmd = base + ["bench", "run", "digits_zero_shot", "--quick", *dev, "--out", str(suite_out)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout_s, 1))
        rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-3000:]
    except subprocess.TimeoutExpired as exc:
        rc = None
        tail = ((exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or ""))
        tail = f"timed out after {timeout_s:.0f} s; " + tail[-3000:]
    results = next((str(p) for p in (suite_out / "results.json", suite_out / "results.md") if p.exists()), None)
    return {"command": " ".join(cmd), "returncode": rc, "wall_s": time.perf_counter() - t0,
            "status": "ok" if rc == 0 else ("timeout" if rc is None else "error"),
            "results_path": results, "out_dir": str(suite_out), "output_tail": tail}


# -- report -------------------------------------------------------------------------------------
def _markdown(res: dict[str, Any]) -> str:
    lines = [f"# gpu-check ({res['device_name']}, torch {res['torch']})", "",
             f"Mode: {'smoke' if res['smoke'] else 'full'}; MFU against {res['peak_tflops']:.1f} TFLOP/s "
             f"({res['peak_source']}); total {res['wall_s']:.0f} s.", "", "## Attention parity vs math", "",
             "| kernel | dtype | shape | fwd vs math | fwd vs fp64 (math's own) | dq/dk/dv vs math | status |",
             "|---|---|---|---|---|---|---|"]
    for kname, per_dt in res["attention_parity"].items():
        for dname, cell in per_dt.items():
            if cell.get("status") == "skipped":
                lines.append(f"| {kname} | {dname} | | | | | skipped: {cell['reason']} |")
                continue
            for sname, c in cell.items():
                if c.get("status") != "ok":
                    lines.append(f"| {kname} | {dname} | {sname} | | | | {c.get('status')}: {c.get('reason')} |")
                    continue
                bwd = ("/".join(f"{c[f'max_abs_err_{g}_vs_math']:.2e}" for g in ("dq", "dk", "dv"))
                       if "max_abs_err_dq_vs_math" in c else c.get("backward", ""))
                lines.append(f"| {kname} | {dname} | {sname} | {c['max_abs_err_fwd_vs_math']:.2e} | "
                             f"{c['max_abs_err_fwd_vs_fp64']:.2e} ({c['math_max_abs_err_fwd_vs_fp64']:.2e}) | "
                             f"{bwd} | ok |")
    lines += ["", "## bf16 train step (forward, fp32 MSE, backward, AdamW)", "",
              "| backbone | batch | F x C x H x W | steps/s | TFLOP/step | TFLOP/s | MFU | peak mem GiB |",
              "|---|---|---|---|---|---|---|---|"]
    for r in res["train_step"]:
        if r.get("status") == "error":
            lines.append(f"| {r.get('backbone')} | | | error: {r['reason']} | | | | |")
            continue
        mem = f"{r['peak_mem_gib']:.1f}" if r.get("peak_mem_gib") is not None else ""
        lines.append(f"| {r['backbone'].get('name')} | {r['batch']} | {r['frames']}x{r['channels']}x{r['size']}x"
                     f"{r['size']} | {r['steps_per_s']:.2f} | {r['flops_per_step'] / 1e12:.3f} | "
                     f"{r['achieved_tflops']:.1f} | {100 * r['mfu']:.1f}% | {mem} |")
    d = res["digits_quick"]
    lines += ["", "## Quick digits suite", "",
              f"{d.get('status')}" + (f": {d.get('reason')}" if d.get("reason") else "")
              + (f"; results: `{d['results_path']}`" if d.get("results_path") else "")
              + (f"; {d['wall_s']:.0f} s; `{d['command']}`" if "command" in d else ""), ""]
    return "\n".join(lines)


def run(device: str = "cuda", out: str | Path = "bench_out/gpu_check", smoke: bool = False, skip_digits: bool = False,
        peak_tflops: float | None = None, steps: int | None = None, threads: int | None = None) -> dict[str, Any]:
    from fvdm.bench.runner import write_json
    from fvdm.core.plugins import load_plugins

    t_start = time.perf_counter()
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"gpu_check: --device {device} but torch {torch.__version__} sees no CUDA device; "
                         "install a CUDA torch build or run with --device cpu --smoke")
    if threads is not None:
        torch.set_num_threads(threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plugins = load_plugins()
    if peak_tflops is not None:
        peak, source = peak_tflops * 1e12, "--peak-tflops"
    elif dev.type == "cuda":
        peak, source = H200_BF16_PEAK_TFLOPS * 1e12, "H200 dense bf16 datasheet (989 TFLOP/s), whatever the GPU"
    else:
        peak, source = _cpu_bf16_peak(), "measured CPU bf16 matmul peak (512^3, this thread count)"
    dtypes = [torch.float16, torch.bfloat16] if dev.type == "cuda" else [torch.float32, torch.bfloat16]
    shapes = SMOKE_SHAPES if smoke else FULL_SHAPES
    t0 = time.perf_counter()
    parity = attention_parity(plugins, dev, dtypes, shapes)
    parity_s = time.perf_counter() - t0
    train = []
    t0 = time.perf_counter()
    for case in TRAIN_SMOKE if smoke else TRAIN_FULL:
        try:
            train.append(train_step_bench(plugins, dev, case, steps=steps or (2 if smoke else 20),
                                          warmup=1 if smoke else 5, peak_flops=peak))
        except Exception as exc:  # e.g. out of memory for one case; the others still report
            train.append({"backbone": case.get("backbone"), "status": "error", "reason": f"{type(exc).__name__}: {exc}"})
    train_s = time.perf_counter() - t0
    if smoke or skip_digits:
        digits = {"status": "skipped", "reason": "--smoke" if smoke else "--skip-digits"}
    else:
        digits = digits_suite(dev, out, timeout_s=BUDGET_S - (time.perf_counter() - t_start))
    res = {
        "benchmark": "gpu_check", "device": str(dev), "smoke": smoke,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "cuda": torch.version.cuda, "threads": torch.get_num_threads(),
        "platform": platform.platform(), "peak_tflops": peak / 1e12, "peak_source": source,
        "dtypes": [_dtype_name(d) for d in dtypes],
        "attention_parity": parity, "attention_parity_s": parity_s,
        "train_step": train, "train_step_s": train_s,
        "digits_quick": digits,
        "wall_s": time.perf_counter() - t_start,
        "budget_s": BUDGET_S,
    }
    write_json(res, out / "gpu_check.json")
    (out / "gpu_check.md").write_text(_markdown(res))
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda, cuda:1, or cpu (with --smoke, for tests)")
    ap.add_argument("--out", default="bench_out/gpu_check", help="writes gpu_check.json and gpu_check.md here")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, a latte_tiny step, no digits suite")
    ap.add_argument("--skip-digits", action="store_true", help="skip (c), the quick digits suite")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help=f"MFU denominator (default: {H200_BF16_PEAK_TFLOPS} on CUDA, measured on CPU)")
    ap.add_argument("--steps", type=int, default=None, help="timed train steps per case (default 20; smoke 2)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args(argv)
    res = run(args.device, args.out, smoke=args.smoke, skip_digits=args.skip_digits, peak_tflops=args.peak_tflops,
              steps=args.steps, threads=args.threads)
    print(_markdown(res))
    print(f"wrote {Path(args.out) / 'gpu_check.json'} and gpu_check.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
