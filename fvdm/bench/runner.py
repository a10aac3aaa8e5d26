"""Run one registered benchmark suite and write its results with provenance.

A suite is any registered ``benchmarks`` plugin: a class with a nested pydantic
``Config`` built as ``cls(cfg)`` whose ``run(out_dir, *, quick=False, seed=0)``
returns a JSON-able dict. ``run`` may also take ``plugins`` and ``threads``
keywords; the runner passes them when the signature asks for them.

What a suite returns (every key optional):

    {"metrics": {...nested numbers/strings...},
     "tables":  [{"title": str, "columns": [...], "rows": [[...], ...]}],
     "plots":   [{"name": "file_stem", "title": str, "xlabel": str, "ylabel": str,
                  "x": [...], "series": {"label": [...]}, "kind": "line"|"bar"|"barh",
                  "errors": {"label": [...]} (bar error bars, optional),
                  "logx": bool, "logy": bool}],
     "seeds":   [...], "notes": [...],
     "plugins": {kind: {name: origin}}}   # the plugins the run used: "builtin" or "<dist> <version>"

The runner writes into ``out_dir``:
  results.json   suite, status, metrics, tables, config, seeds, provenance
                 (fvdm/torch/python versions, platform, cpu model, cores, threads,
                 git revision), timing, origin (of the suite) and plugins (the
                 suite's own plus what the suite reports under "plugins")
  results.md     the tables as Markdown (metrics flattened when a suite gives none)
  <name>.png     one per plot when matplotlib is installed (``fvdm[plots]``)
  tb/            TensorBoard scalars of the numeric metrics, when asked for
"""

from __future__ import annotations

import datetime as _dt
import inspect
import json
import math
import os
import platform
import random
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Mapping

from fvdm.core.errors import FvdmError

#: Version of the results.json layout; bump on incompatible changes.
RESULTS_FORMAT = 1


class BenchmarkError(FvdmError, RuntimeError):
    """A suite cannot run here; the message names what is missing and how to get it."""


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


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists of scalars stay as they are."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v == 0 or 1e-3 <= abs(v) < 1e5:
            return f"{v:.4g}" if abs(v) < 1000 else f"{v:.1f}"
        return f"{v:.3e}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt(x) for x in v[:8]) + (", ..." if len(v) > 8 else "") + "]"
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    head = "| " + " | ".join(str(c) for c in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join([head, sep, *body])


def render_markdown(doc: Mapping[str, Any]) -> str:
    prov = doc["provenance"]
    git = prov.get("git") or {}
    rev = (git.get("revision") or "unknown")[:12] + (" (dirty)" if git.get("dirty") else "")
    lines = [
        f"# fvdm bench: {doc['suite']}",
        "",
        f"status: **{doc['status']}**; quick: {doc['quick']}; seeds: {doc['seeds']}; "
        f"elapsed: {doc['elapsed_s']:.1f} s",
        "",
        f"Measured on {prov['cpu_model']} ({prov['nproc']} cores visible, {prov['torch_threads']} torch threads), "
        f"torch {prov['torch_version']}, python {prov['python']}, fvdm {prov['fvdm_version']} at {rev}.",
        "",
    ]
    if doc.get("error"):
        lines += ["```", str(doc["error"]).strip(), "```", ""]
    tables = doc.get("tables") or []
    if not tables and doc.get("metrics"):
        flat = flatten(doc["metrics"])
        tables = [{"title": "metrics", "columns": ["metric", "value"], "rows": [[k, v] for k, v in flat.items()]}]
    for tab in tables:
        if tab.get("title"):
            lines += [f"## {tab['title']}", ""]
        lines += [markdown_table(list(tab["columns"]), [list(r) for r in tab["rows"]]), ""]
    for note in doc.get("notes") or []:
        lines.append(f"- {note}")
    third = [f"{kind} {n} ({origin})" for kind, names in (doc.get("plugins") or {}).items()
             for n, origin in names.items() if origin != "builtin"]
    if third:  # where the numbers came from when not from fvdm itself
        lines.append("- plugins from outside fvdm: " + ", ".join(third))
    if doc.get("plots"):
        lines += ["", *[f"![{p}]({p})" for p in doc["plots"]]]
    return "\n".join(lines).rstrip() + "\n"


def render_plots(plots: list[Mapping[str, Any]], out_dir: Path) -> tuple[list[str], str | None]:
    """One PNG per plot spec; returns (file names, reason when skipped)."""
    if not plots:
        return [], None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "plots skipped: matplotlib is not installed (pip install 'fvdm[plots]')"
    files = []
    for spec in plots:
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(spec.get("name", "plot")))
        x = list(spec.get("x", []))
        series = spec.get("series", {})
        horizontal = spec.get("kind") == "barh" or (spec.get("kind") == "bar" and len(x) > 8)
        size = (8.0, 1.2 + 0.28 * len(x) * max(1, len(series))) if horizontal else (5.5, 3.8)
        fig, ax = plt.subplots(figsize=size, dpi=110)
        if horizontal:  # many or long labels: one row each, readable
            labels = list(series)
            height = 0.8 / max(1, len(labels))
            for i, label in enumerate(labels):
                ax.barh([j + i * height for j in range(len(x))], series[label], height=height, label=label)
            ax.set_yticks([j + height * (len(labels) - 1) / 2 for j in range(len(x))])
            ax.set_yticklabels([str(v) for v in x], fontsize=7)
            ax.invert_yaxis()
            vals = [float(v) for ys in series.values() for v in ys if isinstance(v, (int, float)) and v > 0]
            if spec.get("logx") or (vals and max(vals) / min(vals) > 30):
                ax.set_xscale("log")
            if spec.get("hline") is not None:
                ax.axvline(float(spec["hline"]), color="grey", ls="--", lw=1)
            xl, yl = spec.get("ylabel", ""), ""
        elif spec.get("kind") == "bar":
            labels = list(series)
            width = 0.8 / max(1, len(labels))
            errors = spec.get("errors") or {}
            for i, label in enumerate(labels):
                ax.bar([j + i * width for j in range(len(x))], series[label], width=width, label=label,
                       yerr=errors.get(label), capsize=3 if errors.get(label) else 0)
            ax.set_xticks([j + width * (len(labels) - 1) / 2 for j in range(len(x))])
            ax.set_xticklabels([str(v) for v in x], rotation=20, ha="right", fontsize=8)
        else:
            for label, ys in series.items():
                ax.plot(x, ys, marker="o", label=label)
            if spec.get("logx"):
                ax.set_xscale("log")
        if not horizontal:
            xl, yl = spec.get("xlabel", ""), spec.get("ylabel", "")
            if spec.get("logy"):
                ax.set_yscale("log")
            if spec.get("hline") is not None:
                ax.axhline(float(spec["hline"]), color="grey", ls="--", lw=1)
        ax.set_title(spec.get("title", name), fontsize=10)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        if len(series) > 1:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fname = f"{name}.png"
        fig.savefig(out_dir / fname)
        plt.close(fig)
        files.append(fname)
    return files, None


def write_tensorboard(metrics: Mapping[str, Any], out_dir: Path) -> str | None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return "tensorboard events skipped: pip install 'fvdm[tensorboard]'"
    writer = SummaryWriter(str(out_dir / "tb"))
    for k, v in flatten(metrics).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            writer.add_scalar(k.replace(".", "/"), v, 0)
    writer.close()
    return None


# -- the runner ------------------------------------------------------------------------
def plugin_origins(plugins: Any, suite: str, used: Mapping[str, Mapping[str, str]] | None) -> dict[str, dict[str, str]]:
    """kind -> name -> origin of the plugins a run used: the suite itself plus what the suite reported."""
    out: dict[str, dict[str, str]] = {"benchmarks": {suite: plugins["benchmarks"].get(suite).origin}}
    for kind, names in (used or {}).items():
        if not isinstance(names, Mapping):
            raise TypeError(f"suite {suite!r} returned plugins[{kind!r}] = {names!r}; it must map name -> origin")
        out.setdefault(str(kind), {}).update({str(n): str(o) for n, o in names.items()})
    return out


def build_suite(plugins: Any, name: str, params: Mapping[str, Any] | None = None) -> Any:
    """Build the registered suite ``name`` with its Config validated from ``params``."""
    return plugins["benchmarks"].build({"name": name, **dict(params or {})}, plugins=plugins)


def _call_run(suite: Any, out_dir: Path, *, quick: bool, seed: int, plugins: Any, threads: int) -> Any:
    sig = inspect.signature(suite.run)
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    kwargs: dict[str, Any] = {"quick": quick, "seed": seed}
    for key, val in (("plugins", plugins), ("threads", threads)):
        if var_kw or key in sig.parameters:
            kwargs[key] = val
    return suite.run(out_dir, **kwargs)


def run_suite(
    name: str,
    out_dir: str | Path | None = None,
    *,
    quick: bool = False,
    seed: int = 0,
    threads: int | None = None,
    params: Mapping[str, Any] | None = None,
    plugins: Any | None = None,
    tensorboard: bool = False,
    raise_errors: bool = True,
) -> dict[str, Any]:
    """Run suite ``name`` and write results.json / results.md / plots into ``out_dir``.

    ``threads`` sets ``torch.set_num_threads`` for the run (restored afterwards).
    On failure results.json records ``status: failed`` with the error, then the
    error is re-raised (unless ``raise_errors=False``).
    """
    import torch

    if plugins is None:
        from fvdm.core.plugins import load_plugins

        plugins = load_plugins()
    suite = build_suite(plugins, name, params)
    out = Path(out_dir if out_dir is not None else Path("bench_out") / name)
    out.mkdir(parents=True, exist_ok=True)

    old_threads = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    prov = provenance()
    cfg = getattr(suite, "cfg", None)
    config = cfg.model_dump(mode="json") if hasattr(cfg, "model_dump") else {}
    seed_everything(seed)
    t0 = time.perf_counter()
    status, error, res = "ok", None, {}
    used: dict[str, dict[str, str]] | None = None
    exc_keep: BaseException | None = None
    try:
        res = _call_run(suite, out, quick=quick, seed=seed, plugins=plugins, threads=torch.get_num_threads())
        if not isinstance(res, Mapping):
            raise TypeError(f"benchmark suite {name!r} returned {type(res).__name__}; it must return a dict")
        used = plugin_origins(plugins, name, res.get("plugins"))
    except Exception as exc:  # record, then re-raise: a failed run still leaves its provenance behind
        status, exc_keep = "failed", exc
        error = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, FvdmError):
            error += "\n" + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:])
        res = {}
    finally:
        elapsed = time.perf_counter() - t0
        torch.set_num_threads(old_threads)

    notes = list(res.get("notes") or [])
    plot_files, why = render_plots(list(res.get("plots") or []), out)
    if why:
        notes.append(why)
    if tensorboard and res.get("metrics"):
        why = write_tensorboard(res["metrics"], out)
        if why:
            notes.append(why)
    doc = to_jsonable({
        "format": RESULTS_FORMAT,
        "suite": name,
        "status": status,
        "error": error,
        "quick": quick,
        "seed": seed,
        "seeds": list(res.get("seeds") or [seed]),
        "threads": prov["torch_threads"],
        "config": config,
        "metrics": res.get("metrics", {}),
        "tables": res.get("tables", []),
        "plots": plot_files,
        "notes": notes,
        "elapsed_s": elapsed,
        "provenance": prov,
        "origin": plugins["benchmarks"].get(name).origin,
        "plugins": used if used is not None else plugin_origins(plugins, name, None),
    })
    write_json(doc, out / "results.json")
    (out / "results.md").write_text(render_markdown(doc))
    if exc_keep is not None and raise_errors:
        raise exc_keep
    return doc
