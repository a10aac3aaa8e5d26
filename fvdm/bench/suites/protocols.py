"""Protocol suites for real datasets: ``ucf101``, ``sky_timelapse``, ``faceforensics``, ``taichi_hd``.

Each runs the StyleGAN-V FVD protocol (``fvd2048_16f`` and ``fvd2048_128f`` presets
of the ``fvd`` evaluators: I3D features, first 2048 real videos in sorted order, one
seeded random clip per real video, biased float64 covariance) between

- ``data``:    the real videos (a directory of video files or frame folders), and
- ``fake``:    generated videos (a directory, or an .npz of videos/features/statistics),

with user-supplied extractor ``weights`` (no machine here downloads weights)::

    fvdm bench run ucf101 --data /data/ucf101/test --weights i3d_torchscript.pt \\
        --set fake=samples/ucf101 --out bench_out/ucf101

``--quick`` uses the first ``quick_num_videos`` videos and the 16-frame metric only
(a smoke test of the pipeline, not a comparable number). The paper's FVD16 numbers
(a third-party transcription of the papers' tables) are shown next to ours for reference.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import Field

from fvdm.core.interfaces import PluginConfig


class ProtocolConfig(PluginConfig):
    dataset: str = Field("custom", description="dataset name (recorded; selects the paper reference numbers)")
    data: str | None = Field(None, description="real videos: directory of videos/frame folders (or .npz)")
    fake: str | None = Field(None, description="generated videos: directory of videos/frame folders (or .npz)")
    weights: str | None = Field(None, description="feature-extractor weights (I3D: i3d_torchscript.pt)")
    extractor: dict[str, Any] = Field(default_factory=lambda: {"name": "i3d"})
    metrics: list[str] = Field(default_factory=lambda: ["fvd2048_16f", "fvd2048_128f"])
    num_videos: int | None = Field(2048, ge=1, description="real and fake videos per metric (protocol: 2048)")
    quick_metrics: list[str] = Field(default_factory=lambda: ["fvd2048_16f"])
    quick_num_videos: int = Field(256, ge=1)
    stats_cache_dir: str | None = Field(None, description="cache real statistics here (.npz per metric)")
    batch_size: int = Field(8, ge=1)
    device: str | None = None
    paper_fvd16: dict[str, float] = Field(default_factory=dict, description="reference FVD16 numbers to show")


def _protocol(dataset: str, paper: dict[str, float]) -> type[ProtocolConfig]:
    cls = type(f"{dataset.title().replace('_', '')}ProtocolConfig", (ProtocolConfig,), {
        "__annotations__": {"dataset": str, "paper_fvd16": dict[str, float]},
        "dataset": Field(dataset, description="dataset name (recorded; selects the paper reference numbers)"),
        "paper_fvd16": Field(default_factory=lambda: dict(paper), description="reference FVD16 numbers"),
        "__module__": __name__,
    })
    return cls


#: FVD16 at 256x256 as reported by the papers (third-party transcription, unverified).
PAPER_FVD16 = {
    "ucf101": {"FVDM": 468.2, "Latte": 478.0, "StyleGAN-V": 1431.0},
    "sky_timelapse": {"FVDM": 106.1, "Latte": 59.8, "StyleGAN-V": 79.5},
    "faceforensics": {"FVDM": 55.0, "Latte": 34.0, "StyleGAN-V": 47.4},
    "taichi_hd": {"FVDM": 194.6, "Latte": 159.6, "StyleGAN-V": 143.5},
}
PROTOCOLS: dict[str, type[ProtocolConfig]] = {name: _protocol(name, paper) for name, paper in PAPER_FVD16.items()}


class ProtocolSuite:
    """StyleGAN-V FVD16/FVD128 of generated vs real videos with user-supplied data and weights."""

    Config = ProtocolConfig

    def __init__(self, cfg: ProtocolConfig):
        self.cfg = cfg

    def _check_inputs(self) -> None:
        from fvdm.bench.runner import BenchmarkError

        c = self.cfg
        problems = []
        if c.data is None:
            problems.append("--data PATH (the real videos)")
        elif not Path(c.data).exists():
            problems.append(f"--data {c.data} (does not exist)")
        if c.fake is None:
            problems.append("--set fake=PATH (generated videos, e.g. written by `fvdm sample`)")
        elif not Path(c.fake).exists():
            problems.append(f"fake={c.fake} (does not exist)")
        if c.weights is not None and not Path(c.weights).is_file():
            problems.append(f"--weights {c.weights} (no such file)")
        if problems:
            raise BenchmarkError(f"protocol suite {c.dataset!r} needs " + "; ".join(problems)
                                 + ". See docs/benchmarks.md (protocol suites).")

    def run(self, out_dir: Any, *, plugins: Any, quick: bool = False, seed: int = 0,
            ledger: Any = None) -> dict[str, Any]:
        """Each metric is one job of ``ledger`` (the runner's records): a killed run computes only the metrics
        that had not finished."""
        from fvdm.bench.ledger import Ledger
        from fvdm.bench.runner import BenchmarkError

        ledger = ledger or Ledger.in_memory()

        self._check_inputs()
        c = self.cfg
        metrics_to_run = c.quick_metrics if quick else c.metrics
        n = c.quick_num_videos if quick else c.num_videos
        if quick and c.num_videos is not None:
            n = min(n, c.num_videos)
        results: dict[str, Any] = {}
        rows: list[list[Any]] = []
        ledger.expect([f"metric/{name}" for name in metrics_to_run])
        for name in metrics_to_run:
            res = ledger.run(f"metric/{name}", lambda: self._metric(plugins, name, n, seed))
            results[name] = res
            if res["status"] == "ok":
                rows.append([name, res["value"], res.get("n_real"), res.get("n_fake"), res.get("extractor_id")])
            else:
                rows.append([name, "error", "-", "-", res["reason"][:80]])
        if not any(r.get("status") == "ok" for r in results.values()):
            reasons = "; ".join(f"{k}: {v['reason']}" for k, v in results.items())
            raise BenchmarkError(f"protocol suite {c.dataset!r}: no metric could be computed ({reasons})")
        tables = [{"title": f"{c.dataset}: StyleGAN-V FVD protocol" + (" (quick: not comparable)" if quick else ""),
                   "columns": ["metric", "value", "real videos", "fake videos", "extractor"], "rows": rows}]
        if c.paper_fvd16:
            tables.append({"title": "paper FVD16 at 256x256 (third-party transcription, unverified)",
                           "columns": ["method", "FVD16"], "rows": [[k, v] for k, v in c.paper_fvd16.items()]})
        return {"metrics": {"dataset": c.dataset, "quick": quick, "num_videos": n, "results": results,
                            "paper_fvd16": c.paper_fvd16},
                "tables": tables, "seeds": [seed],
                "notes": [f"real: {c.data}; fake: {c.fake}; weights: {c.weights or 'extractor default'}"]}

    def _metric(self, plugins: Any, name: str, n: int | None, seed: int) -> dict[str, Any]:
        """One metric of the protocol -> its result (``status`` ok, or error with the reason: e.g. videos
        shorter than 128 frames; the others still run)."""
        c = self.cfg
        entry = plugins["evaluators"].get(name)  # unknown metric names raise with the choices
        params: dict[str, Any] = {"extractor": dict(c.extractor), "weights": c.weights, "num_real": n,
                                  "num_fake": n, "seed": seed, "batch_size": c.batch_size, "device": c.device}
        if c.stats_cache_dir:
            Path(c.stats_cache_dir).mkdir(parents=True, exist_ok=True)
            params["stats_cache"] = str(Path(c.stats_cache_dir) / f"{c.dataset}_{name}_n{n}_s{seed}.npz")
        fields = set(entry.config.model_fields) if entry.config is not None else set()
        metric = entry.obj(entry.config.model_validate({k: v for k, v in params.items() if k in fields}),
                           plugins=plugins)
        t0 = time.perf_counter()
        try:
            res = metric.evaluate(c.fake, c.data)
        except (ValueError, FileNotFoundError) as exc:
            return {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
        return {"status": "ok", **res, "seconds": time.perf_counter() - t0}
