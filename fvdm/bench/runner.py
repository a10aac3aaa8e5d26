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

import inspect
import math
import time
import traceback
from pathlib import Path
from typing import Any, Mapping

from fvdm.bench.ledger import Ledger, SliceEnd
from fvdm.bench.provenance import (  # noqa: F401  (re-exported: scripts import them from here)
    git_revision, provenance, script_provenance, seed_everything, to_jsonable, write_json)
from fvdm.core.errors import FvdmError

#: Version of the results.json layout; bump on incompatible changes.
RESULTS_FORMAT = 1


class BenchmarkError(FvdmError, RuntimeError):
    """A suite cannot run here; the message names what is missing and how to get it."""


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


def _call_run(suite: Any, out_dir: Path, *, quick: bool, seed: int, plugins: Any, threads: int,
              ledger: Ledger) -> Any:
    """``suite.run`` with the keywords its signature asks for. A suite that takes ``ledger`` runs its jobs
    through it; one that does not is one job, recorded whole (a finished run is read back, not redone)."""
    sig = inspect.signature(suite.run)
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    kwargs: dict[str, Any] = {"quick": quick, "seed": seed}
    for key, val in (("plugins", plugins), ("threads", threads), ("ledger", ledger)):
        if var_kw or key in sig.parameters:
            kwargs[key] = val
    if "ledger" in kwargs:
        return suite.run(out_dir, **kwargs)
    ledger.expect(["suite/run"])
    return ledger.run("suite/run", lambda: to_jsonable(suite.run(out_dir, **kwargs)), seed=seed)


def _partial_status(ledger: Ledger) -> str:
    """``partial (k of n jobs)``: the status of a run that has not finished every declared job."""
    k, n = ledger.progress()
    return f"partial ({k} of {n or '?'} jobs)"


def _partial(suite: Any, ledger: Ledger, quick: bool, seed: int, plugins: Any) -> dict[str, Any]:
    """What the finished jobs say so far: the suite's own ``report(ledger, quick=, seed=, plugins=)`` when it
    has one (intervals over the seeds that are complete), else every finished job's result."""
    if hasattr(suite, "report"):
        return suite.report(ledger, quick=quick, seed=seed, plugins=plugins)
    return {"metrics": {"jobs": {j: ledger.result(j) for j in ledger.expected if ledger.result(j) is not None}}}


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
    fresh: bool = False,
    max_minutes: float | None = None,
) -> dict[str, Any]:
    """Run suite ``name`` and write results.json / results.md / plots into ``out_dir``.

    Every job the suite runs is recorded in ``out_dir`` as it finishes (``fvdm.bench.ledger``): the same
    call again continues the run, reading finished jobs back; another config, budget or seed is refused
    (``fresh`` deletes the records first). After each job results.json is rewritten with what is done
    (``status: partial (k of n jobs)``). ``max_minutes`` stops after the job in flight once that many
    minutes have passed: results.json says partial and ``doc["resume"]`` holds how to continue.
    ``threads`` sets ``torch.set_num_threads`` for the run (restored afterwards). On failure
    results.json records ``status: failed`` with the error, then the error is re-raised (unless
    ``raise_errors=False``).
    """
    import torch

    if plugins is None:
        from fvdm.core.plugins import load_plugins

        plugins = load_plugins()
    suite = build_suite(plugins, name, params)
    out = Path(out_dir if out_dir is not None else Path("bench_out") / name)
    out.mkdir(parents=True, exist_ok=True)
    if max_minutes is not None and max_minutes <= 0:
        raise ValueError(f"--max-minutes must be > 0, got {max_minutes}")

    cfg = getattr(suite, "cfg", None)
    config = cfg.model_dump(mode="json") if hasattr(cfg, "model_dump") else {}
    # fields that change how a run is carried out, not its numbers (worker processes), may differ between slices
    same = {k: v for k, v in config.items() if k not in getattr(suite, "resume_ignores", ())}
    ledger = Ledger(out, suite=name, config=same, quick=quick, seed=seed, fresh=fresh, max_minutes=max_minutes)
    old_threads = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    prov = provenance()
    seed_everything(seed)
    t0 = time.perf_counter()
    base = {"quick": quick, "seed": seed, "config": config, "provenance": prov}

    def write_partial() -> None:
        try:
            res = _partial(suite, ledger, quick, seed, plugins)
        except Exception as exc:  # a report of half a run must never end the run itself
            res = {"notes": [f"partial report failed: {type(exc).__name__}: {exc}"]}
        _write(name, out, plugins, {**base, "status": _partial_status(ledger), "error": None,
                                    "elapsed_s": time.perf_counter() - t0}, res, ledger, tensorboard=False)

    ledger.on_record = write_partial
    status, error, res = "ok", None, {}
    exc_keep: BaseException | None = None
    resume: str | None = None
    try:
        res = _call_run(suite, out, quick=quick, seed=seed, plugins=plugins, threads=torch.get_num_threads(),
                        ledger=ledger)
        if not isinstance(res, Mapping):
            raise TypeError(f"benchmark suite {name!r} returned {type(res).__name__}; it must return a dict")
        plugin_origins(plugins, name, res.get("plugins"))  # a wrongly reported mapping fails the run here
    except SliceEnd as stop:
        k, n = ledger.progress()
        status, res = _partial_status(ledger), _partial(suite, ledger, quick, seed, plugins)
        resume = (f"stopped cleanly: {stop}; {k} of {n or '?'} jobs done. Continue with the same command "
                  f"(fvdm bench run {name} --out {out} ...): finished jobs are read back")
    except Exception as exc:  # record, then re-raise: a failed run still leaves its provenance behind
        status, exc_keep = "failed", exc
        error = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, FvdmError):
            error += "\n" + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:])
        res = {}
    finally:
        elapsed = time.perf_counter() - t0
        torch.set_num_threads(old_threads)
    doc = _write(name, out, plugins, {**base, "status": status, "error": error, "elapsed_s": elapsed}, res, ledger,
                 tensorboard=tensorboard)
    if resume is not None:
        doc["resume"] = resume
    if exc_keep is not None and raise_errors:
        raise exc_keep
    return doc


def _write(name: str, out: Path, plugins: Any, head: dict[str, Any], res: Mapping[str, Any], ledger: Ledger, *,
           tensorboard: bool) -> dict[str, Any]:
    """results.json, results.md and the plots of a finished, partial or failed run."""
    notes = list(res.get("notes") or [])
    plot_files, why = render_plots(list(res.get("plots") or []), out)
    if why:
        notes.append(why)
    if tensorboard and res.get("metrics"):
        why = write_tensorboard(res["metrics"], out)
        if why:
            notes.append(why)
    read_back = [j for j in ledger.expected if j not in ledger.ran and ledger.record(j) is not None]
    if read_back:
        notes.append(f"{len(read_back)} job(s) read back from records in {out / 'records'}, "
                     f"{len(ledger.ran)} run by this invocation")
    try:
        used = plugin_origins(plugins, name, res.get("plugins"))
    except TypeError:  # a partial report's mapping is checked when the run ends
        used = plugin_origins(plugins, name, None)
    doc = to_jsonable({
        "format": RESULTS_FORMAT,
        "suite": name,
        "status": head["status"],
        "error": head["error"],
        "quick": head["quick"],
        "seed": head["seed"],
        "seeds": list(res.get("seeds") or [head["seed"]]),
        "threads": head["provenance"]["torch_threads"],
        "config": head["config"],
        "metrics": res.get("metrics", {}),
        "tables": res.get("tables", []),
        "plots": plot_files,
        "notes": notes,
        "elapsed_s": head["elapsed_s"],
        "jobs": {"done": ledger.progress()[0], "declared": len(ledger.expected), "config_sha256": ledger.config_sha256},
        "provenance": head["provenance"],
        "origin": plugins["benchmarks"].get(name).origin,
        "plugins": used,
    })
    write_json(doc, out / "results.json")
    (out / "results.md").write_text(render_markdown(doc))
    return doc
