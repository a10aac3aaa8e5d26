"""Helpers for tests that install throwaway plugin distributions."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path


def make_dist(root: Path, dist: str, version: str, module: str, source: str, ep_name: str | None = None) -> Path:
    """Write ``module`` plus a ``<dist>-<version>.dist-info`` with an ``fvdm`` entry point under ``root``.

    Putting ``root`` on ``sys.path`` makes importlib.metadata see it exactly like a
    pip-installed distribution.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[fvdm]\n{ep_name or dist} = {module}\n")
    (info / "RECORD").write_text("")
    return root


def on_sys_path(monkeypatch, root: Path) -> None:
    monkeypatch.syspath_prepend(str(root))
    import importlib

    importlib.invalidate_caches()
    sys.modules.pop("importlib.metadata._cache", None)
