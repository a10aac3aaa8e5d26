"""Real-data statistics cache (.npz) with everything needed to refuse a wrong reuse.

Fields: ``mu``, ``sigma`` (float64), ``n``, ``ddof``, ``m2`` (centred scatter, lets the
covariance be re-normalised), ``extractor_id``, ``weights_sha256``, ``protocol``
(JSON), ``dataset_hash`` (sha256 of the sorted listing) and ``format``. Loading
with expectations refuses any mismatch and says which field differs.
pytorch-fid ``.npz`` files (``mu``/``sigma`` only) import with their known provenance.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fvdm.core.atomic import atomic_write
from fvdm.plugins.evaluators.frechet import FeatureStats
from fvdm.plugins.evaluators.weights import hash_matches

FORMAT = "fvdm-stats-v1"
PYTORCH_FID_EXTRACTOR_ID = "inception_v3_fid:pool3:torch-bilinear,2x-1"
PYTORCH_FID_WEIGHTS = "6726825d"  # hub prefix of pt_inception-2015-12-05-6726825d.pth


class StatsMismatchError(ValueError):
    """Cached statistics were made differently from what is asked now."""


def save_stats(path: str | os.PathLike, stats: FeatureStats) -> Path:
    """Write stats atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {
        "mu": stats.mu.numpy().astype(np.float64),
        "sigma": stats.sigma.numpy().astype(np.float64),
        "n": np.int64(stats.n),
        "ddof": np.int64(stats.ddof),
        "extractor_id": np.str_(stats.extractor_id),
        "weights_sha256": np.str_(stats.weights_sha256),
        "protocol": np.str_(json.dumps(stats.protocol, sort_keys=True)),
        "dataset_hash": np.str_(stats.dataset_hash),
        "format": np.str_(FORMAT),
    }
    if stats.m2 is not None:
        arrays["m2"] = stats.m2.numpy().astype(np.float64)
    return atomic_write(path, lambda tmp: np.savez(tmp, **arrays))  # tmp ends in .npz: savez adds nothing


def _f64(a: np.ndarray, name: str, path: Path) -> torch.Tensor:
    if a.dtype != np.float64:
        raise TypeError(f"{path}: {name} is {a.dtype}; Fréchet statistics must be float64 "
                        "(recompute them in float64; float32 loses digits of FD at d=2048)")
    return torch.from_numpy(np.array(a))


def load_stats(path: str | os.PathLike, *, expect: dict[str, Any] | None = None) -> FeatureStats:
    """Read an fvdm stats file (or a pytorch-fid one) and check ``expect``.

    ``expect`` may hold ``extractor_id``, ``weights_sha256``, ``protocol``, ``dataset_hash``, ``ddof``, ``dim``;
    each given field must match or :class:`StatsMismatchError` names it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"statistics file not found: {path}")
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        if "mu" not in keys or "sigma" not in keys:
            raise ValueError(f"{path}: not a statistics file (needs 'mu' and 'sigma', has {sorted(keys)})")
        if "format" not in keys:
            stats = _pytorch_fid(z, path)
        else:
            stats = FeatureStats(
                mu=_f64(z["mu"], "mu", path), sigma=_f64(z["sigma"], "sigma", path), n=int(z["n"]),
                ddof=int(z["ddof"]), extractor_id=str(z["extractor_id"]), weights_sha256=str(z["weights_sha256"]),
                protocol=json.loads(str(z["protocol"])), dataset_hash=str(z["dataset_hash"]),
                m2=_f64(z["m2"], "m2", path) if "m2" in keys else None,
            )
    if expect:
        check_stats(stats, expect, source=str(path))
    return stats


def _pytorch_fid(z: Any, path: Path) -> FeatureStats:
    """pytorch-fid stats: np.cov (ddof=1) of pool3 features with torch-bilinear preprocessing."""
    return FeatureStats(mu=_f64(z["mu"], "mu", path), sigma=_f64(z["sigma"], "sigma", path), n=-1, ddof=1,
                        extractor_id=PYTORCH_FID_EXTRACTOR_ID, weights_sha256=PYTORCH_FID_WEIGHTS,
                        protocol={"imported_from": "pytorch-fid", "file": path.name}, dataset_hash="")


def import_pytorch_fid(path: str | os.PathLike) -> FeatureStats:
    """Import a pytorch-fid ``.npz`` (``mu``, ``sigma``) as FeatureStats."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as z:
        if "mu" not in z.files or "sigma" not in z.files:
            raise ValueError(f"{path}: a pytorch-fid stats file has 'mu' and 'sigma'; found {z.files}")
        return _pytorch_fid(z, path)


def check_stats(stats: FeatureStats, expect: dict[str, Any], source: str = "statistics") -> None:
    reasons = []
    for field in ("extractor_id", "dataset_hash", "ddof", "dim"):
        if field in expect and expect[field] is not None:
            have = getattr(stats, field)
            if have != expect[field]:
                reasons.append(f"{field}: cached {have!r}, requested {expect[field]!r}")
    if expect.get("weights_sha256"):
        a, b = stats.weights_sha256, expect["weights_sha256"]
        short, long_ = sorted((a, b), key=len)
        if not hash_matches(long_, short):
            reasons.append(f"weights_sha256: cached {a[:16]}, requested {b[:16]}")
    if "protocol" in expect and expect["protocol"] is not None:
        want = json.loads(json.dumps(expect["protocol"], sort_keys=True))
        if stats.protocol != want:
            diff = sorted(k for k in set(want) | set(stats.protocol) if want.get(k) != stats.protocol.get(k))
            detail = ", ".join(f"{k}: cached {stats.protocol.get(k)!r} vs {want.get(k)!r}" for k in diff)
            reasons.append(f"protocol differs ({detail})")
    if reasons:
        raise StatsMismatchError(f"refusing cached {source}: " + "; ".join(reasons) +
                                 ". Delete the cache or point to statistics made with these settings.")
