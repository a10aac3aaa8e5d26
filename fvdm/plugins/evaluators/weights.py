"""Where feature-extractor weights come from, and proof of which file was used.

Weights are never downloaded. A file is found from (1) an explicit path, (2)
``$FVDM_WEIGHTS_DIR/<filename>``, (3) the package's own ``weights/`` folder (only the
small digits extractor ships there). Its sha256 is computed once per (path, size,
mtime) and recorded in every metric's provenance; a pinned hash (full hex, or the
8-hex prefix torch-hub file names carry) is enforced.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fvdm.core.errors import FvdmError
from fvdm.core.hashing import sha256_file as sha256_file_uncached

PACKAGE_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
ENV_VAR = "FVDM_WEIGHTS_DIR"


class WeightsError(FvdmError, FileNotFoundError):
    """A weights file is missing or is not the file it should be."""


@dataclass(frozen=True)
class WeightsSpec:
    """A public weights file: its name, pinned hash (or prefix, or None) and where it is published."""

    key: str
    filename: str
    sha256: str | None
    url: str
    used_by: str


KNOWN_WEIGHTS: dict[str, WeightsSpec] = {
    "pt_inception": WeightsSpec(
        "pt_inception", "pt_inception-2015-12-05-6726825d.pth", "6726825d",
        "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
        "FID InceptionV3 (pytorch-fid port of the TF 2015-12-05 graph)",
    ),
    "i3d_torchscript": WeightsSpec(
        "i3d_torchscript", "i3d_torchscript.pt", None,
        "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt",
        "StyleGAN-V FVD detector (TorchScript port of the tf-hub I3D)",
    ),
    "i3d_pretrained_400": WeightsSpec(
        "i3d_pretrained_400", "i3d_pretrained_400.pt", None,
        "https://github.com/songweige/TATS/raw/main/tats/fvd/i3d_pretrained_400.pt",
        "I3D Kinetics-400 state dict (piergiaj port, as used by VideoGPT/TATS/cd-fvd)",
    ),
}

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, cached per (path, size, mtime)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = sha256_file_uncached(path)
    return _HASH_CACHE[key]


def hash_matches(actual: str, expected: str | None) -> bool:
    """Full-hash equality, or prefix match when ``expected`` is a short (>= 8 hex) prefix."""
    if not expected:
        return True
    expected = expected.lower().strip()
    return actual.lower().startswith(expected) if len(expected) < 64 else actual.lower() == expected


def _describe(spec: WeightsSpec | None, filename: str, expected: str | None) -> str:
    exp = expected or (spec.sha256 if spec else None)
    exp_txt = exp if exp else "not pinned (its sha256 is recorded in every result's provenance)"
    where = spec.url if spec else "(no public copy known)"
    used = f" [{spec.used_by}]" if spec else ""
    return (f"file {filename!r}{used}; expected sha256: {exp_txt}; public copy: {where}. "
            f"Put it in ${ENV_VAR} or pass its path explicitly. fvdm never downloads weights.")


def resolve_weights(key_or_filename: str, path: str | os.PathLike | None = None, *,
                    sha256: str | None = None) -> tuple[Path, str]:
    """Find a weights file and verify it; returns ``(path, sha256)``.

    ``key_or_filename`` is a key of :data:`KNOWN_WEIGHTS` or a bare file name.
    ``sha256`` overrides the pinned hash (useful for files whose hash is not pinned).
    """
    spec = KNOWN_WEIGHTS.get(key_or_filename)
    filename = spec.filename if spec else key_or_filename
    expected = sha256 or (spec.sha256 if spec else None)
    tried: list[str] = []
    if path is not None:
        candidates = [Path(path)]
    else:
        candidates = []
        env = os.environ.get(ENV_VAR)
        if env:
            candidates.append(Path(env) / filename)
        candidates.append(PACKAGE_WEIGHTS_DIR / filename)
    for cand in candidates:
        tried.append(str(cand))
        if cand.is_file():
            actual = sha256_file(cand)
            if not hash_matches(actual, expected):
                raise WeightsError(
                    f"weights file {cand} has sha256 {actual}, expected {expected}: it is not the published "
                    f"{filename!r}. Replace it with the public copy ({spec.url if spec else 'see docs/evaluators.md'}) "
                    "or pass the hash you trust explicitly."
                )
            return cand, actual
    env_note = "" if os.environ.get(ENV_VAR) or path is not None else f" (${ENV_VAR} is not set)"
    raise WeightsError(f"weights not found (looked in: {', '.join(tried)}){env_note}: " + _describe(spec, filename, expected))


def is_torchscript_archive(path: str | Path) -> bool:
    """True for a TorchScript zip (has ``code/`` entries), False for a torch.save state dict."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.split("/", 1)[-1].startswith("code/") or n.endswith("constants.pkl") for n in zf.namelist())


def pinned_sha256(filename: str) -> str | None:
    """The sha256 committed next to a bundled weights file (``<filename>.sha256``), or None."""
    p = PACKAGE_WEIGHTS_DIR / (filename + ".sha256")
    return p.read_text().split()[0] if p.is_file() else None


def write_trained_weights(model: Any, out_dir: str | Path, filename: str, info: dict) -> dict:
    """Save a project-trained net's float32 state dict as ``out_dir/filename`` with its ``.sha256`` and a
    provenance JSON (``<stem>.json``: sha256, size, parameter count, torch version + ``info``); returns it."""
    import json

    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / filename
    torch.save({k: v.detach().clone().float() for k, v in model.state_dict().items()}, path)
    sha = sha256_file(path)
    (out / (filename + ".sha256")).write_text(f"{sha}  {filename}\n")
    doc = {"sha256": sha, "bytes": path.stat().st_size, **info, "torch": torch.__version__,
           "params": sum(p.numel() for p in model.parameters())}
    (out / (Path(filename).stem + ".json")).write_text(json.dumps(doc, indent=2) + "\n")
    return doc
