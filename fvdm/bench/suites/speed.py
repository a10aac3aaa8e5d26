"""The ``speed`` suite: runs the standalone speed benchmarks side by side, one process.

Each stand-alone script ``benchmarks/<name>.py`` of a source checkout (not installed with
the package: run ``python -m fvdm bench run speed`` from the checkout's root) exposes
``run(quick: bool, threads: int) -> dict``
whose figures are ratios measured side by side in that one call (per-frame vs
scalar timestep train step and MFU, attention kernels vs math, Fréchet distance vs
scipy sqrtm, data loader clips/s vs training consumption, long-video sampling time
vs frames). A module that cannot be imported is recorded as ``missing`` with the
reason, one that raises as ``error``; the others still run.
"""

from __future__ import annotations

import importlib
import re
import time
import traceback
from typing import Any

from pydantic import Field

from fvdm.bench.runner import flatten
from fvdm.core.interfaces import PluginConfig

#: figure names that make the headline table (the rest stay in results.json and the detail table)
HEADLINE = re.compile(r"(ratio|mfu|peak_flops|speedup|slope|linear_r2|pass_|bottleneck|max_abs_err|rel_err|rel_diff)",
                      re.I)

DEFAULT_MODULES = ["train_step_overhead", "attention", "frechet", "data_loading", "long_video"]


def _numeric_lists(d: dict[str, Any]) -> dict[str, list[float]]:
    return {k: v for k, v in d.items()
            if isinstance(v, list) and len(v) > 1 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)}


def _auto_plots(name: str, res: dict[str, Any]) -> list[dict[str, Any]]:
    """Plots a module asked for (``plots`` key), else a line plot of equal-length numeric
    lists against the first of them whose name looks like an x axis (frames, sizes, ...)."""
    if isinstance(res.get("plots"), list):
        return [dict(p, name=p.get("name", f"{name}_{i}")) for i, p in enumerate(res["plots"]) if isinstance(p, dict)]
    lists = _numeric_lists(res)
    xkey = next((k for k in lists if any(s in k.lower() for s in ("frames", "length", "size", "tokens", "dim", "n_"))), None)
    if xkey is None:
        return []
    ys = {k: v for k, v in lists.items() if k != xkey and len(v) == len(lists[xkey])}
    timed = {k: v for k, v in ys.items() if "second" in k or "time" in k or k.endswith("_s")}
    ys = timed or ys  # plot times when there are any: counts on the same axis would flatten them
    if not ys:
        return []
    return [{"name": f"{name}", "title": f"{name}: {', '.join(ys)} vs {xkey}", "xlabel": xkey, "ylabel": "seconds" if timed else "value",
             "x": lists[xkey], "series": ys}]


class SpeedSuite:
    """Speed ratios measured side by side: VTV overhead, MFU, attention, Fréchet, data, long video."""

    class Config(PluginConfig):
        modules: list[str] = Field(default_factory=lambda: list(DEFAULT_MODULES),
                                   description="benchmark modules under the `benchmarks` package")
        package: str = "benchmarks"

    def __init__(self, cfg: "SpeedSuite.Config"):
        self.cfg = cfg

    def run(self, out_dir: Any, *, quick: bool = False, seed: int = 0, threads: int = 1,
            ledger: Any = None) -> dict[str, Any]:
        """Each module is one job of ``ledger`` (the runner's records): a killed run re-measures only the
        modules that had not finished."""
        from fvdm.bench.ledger import Ledger

        ledger = ledger or Ledger.in_memory()
        ledger.expect([f"module/{name}" for name in self.cfg.modules])
        metrics: dict[str, Any] = {}
        rows: list[list[Any]] = []
        plots: list[dict[str, Any]] = []
        notes: list[str] = []
        for name in self.cfg.modules:
            res = dict(ledger.run(f"module/{name}", lambda: self._module(name, quick, seed, threads)))
            if res["status"] != "ok":
                metrics[name] = {k: v for k, v in res.items() if k != "note"}
                notes.append(res["note"])
                rows.append([name, "status", res["status"]])
                continue
            plots += res.pop("plots", [])
            metrics[name] = res
            for key, val in flatten(res).items():
                if key in ("status",) or isinstance(val, (dict,)):
                    continue
                rows.append([name, key, val])
        head = [r for r in rows if r[1] == "status" and r[2] != "ok" or
                (HEADLINE.search(r[1]) and isinstance(r[2], (int, float, bool))
                 and not (".math." in r[1] and "ratio_to_math" in r[1]))]  # math vs itself is 1 by definition
        for name in self.cfg.modules:  # one ratio chart per benchmark: their scales differ by 100x
            ratios = [r for r in head if r[0] == name and "ratio" in r[1]
                      and isinstance(r[2], (int, float)) and not isinstance(r[2], bool)][:32]
            if ratios:
                plots.append({"name": f"ratios_{name}", "kind": "barh", "title": f"{name}: ratios (1 = parity)",
                              "x": [_short(r[1]) for r in ratios], "series": {"ratio": [r[2] for r in ratios]},
                              "ylabel": "ratio", "hline": 1.0})
        return {"metrics": metrics, "plots": plots, "notes": notes,
                "tables": [{"title": "headline figures (ratios measured side by side in this run)",
                            "columns": ["benchmark", "figure", "value"], "rows": head},
                           {"title": "all figures", "columns": ["benchmark", "figure", "value"], "rows": rows}]}


    def _module(self, name: str, quick: bool, seed: int, threads: int) -> dict[str, Any]:
        """Run one benchmark module -> its figures (``status`` ok, missing or error, with a ``note``)."""
        import torch

        modname = f"{self.cfg.package}.{name}"
        try:
            mod = importlib.import_module(modname)
        except ImportError as exc:
            hint = ("; the scripts are not installed: run `python -m fvdm bench run speed` from the root of "
                    "a source checkout" if exc.name == self.cfg.package else "")
            return {"status": "missing", "reason": f"cannot import {modname}: {exc}{hint}",
                    "note": f"{name}: missing ({exc})"}
        if not hasattr(mod, "run"):
            return {"status": "missing", "reason": f"{modname} has no run(quick, threads)",
                    "note": f"{name}: missing (no run)"}
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        try:
            res = mod.run(quick=quick, threads=threads)
        except Exception as exc:  # one broken benchmark must not hide the others' numbers
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
            return {"status": "error", "reason": f"{type(exc).__name__}: {exc}", "traceback": "".join(tb[-4:]),
                    "note": f"{name}: error {type(exc).__name__}: {exc}"}
        finally:
            torch.set_num_threads(threads)  # a module may change it; keep the next one honest
        if not isinstance(res, dict):
            res = {"result": res}
        res = dict(res)
        res.setdefault("status", "ok")
        res["wall_s"] = time.perf_counter() - t0
        res["plots"] = _auto_plots(name, res)
        return res


def _short(key: str, n: int = 60) -> str:
    key = key.replace("results.", "").replace("kernels.", "")
    return key if len(key) <= n else "..." + key[-(n - 3):]
