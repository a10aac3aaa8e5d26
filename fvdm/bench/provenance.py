"""Where and with what numbers were measured (provenance), and results as plain JSON.

Shared by the benchmark runner, the per-job records of a run (``fvdm.bench.ledger``) and the
stand-alone scripts in ``benchmarks/``.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import random
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping


# -- provenance ------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_revision(path: str | Path | None = None) -> dict[str, Any]:
    """``git rev-parse HEAD`` (and whether the tree is dirty) of the checkout holding fvdm."""
    cwd = Path(path) if path is not None else Path(__file__).resolve().parents[2]  # the checkout: fvdm/bench/..
    out: dict[str, Any] = {"revision": None, "dirty": None}
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if rev.returncode == 0:
            out["revision"] = rev.stdout.strip()
            st = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, timeout=10)
            if st.returncode == 0:
                out["dirty"] = bool(st.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def provenance() -> dict[str, Any]:
    """Where and with what the numbers were measured."""
    import numpy
    import torch

    import fvdm

    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {
        "fvdm_version": fvdm.__version__,
        "torch_version": torch.__version__,
        "numpy_version": numpy.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "nproc": os.cpu_count(),
        "cpu_affinity": affinity,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "env_threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
        "cuda": torch.cuda.is_available(),
        "git": git_revision(),
        "argv": list(sys.argv),
        "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


# -- helpers ---------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    import numpy
    import torch

    random.seed(seed)
    numpy.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_jsonable(obj: Any) -> Any:
    """Tensors/numpy/paths/NaN -> plain JSON values (NaN and inf become strings)."""
    try:
        import numpy
        import torch
    except ImportError:  # pragma: no cover
        numpy = torch = None  # type: ignore[assignment]
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if torch is not None and isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist())
    if numpy is not None and isinstance(obj, numpy.ndarray):
        return to_jsonable(obj.tolist())
    if numpy is not None and isinstance(obj, numpy.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)


def write_json(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as indented JSON, creating parent directories."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")
    return path


def script_provenance(t0: float) -> dict[str, Any]:
    """``provenance()`` plus what a stand-alone benchmark script adds: the diffusers version, the machine's
    load at the end (a busy machine slows timings) and the script's seconds since ``t0`` (perf_counter)."""
    import time

    import diffusers

    return {**provenance(), "diffusers": diffusers.__version__, "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
            "seconds": round(time.perf_counter() - t0, 1)}
