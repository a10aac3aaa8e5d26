"""Checkpoint io: atomic writes, ``weights_only=True`` loads, config checks (loading a model for sampling:
``fvdm.core.loaded``).

A checkpoint is one ``torch.save`` dict of tensors and plain Python data only (no
pickled classes), so ``torch.load(..., weights_only=True)`` reads it::

    format, version        "fvdm-checkpoint", 1
    step, data_position    optimizer steps done, samples consumed from the data stream
    model, ema, optimizer  state dicts (EMA in fp32)
    rng                    torch / cuda / numpy / python states of every rank + the noise generator
    config, config_hash    canonical config JSON (plugin defaults filled in) and its hash
    data_info              num_frames, channels, resolution, num_classes of the training data
    model_info             the backbone spec actually built (fields filled in from data/schedule)
    losses                 float64 loss per step since step 0
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fvdm.core.atomic import atomic_write

from fvdm.core.errors import FvdmError

FORMAT = "fvdm-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("format", "version", "step", "model", "ema", "config", "config_hash", "data_info", "model_info")

#: config keys that may differ when resuming: they change how long/how loud a run is, not what it learns
RESUME_MUTABLE = (
    "name", "run_root", "sample",
    "train.steps", "train.log_every", "train.ckpt_every", "train.keep_last", "train.sample_every", "train.tensorboard",
    # the fixes a divergence asks for: changing them on --resume continues from the saved state
    "train.lr", "train.warmup_steps", "train.grad_clip", "train.spike_factor",
    "train.num_workers", "train.compile", "train.parallel", "train.sample_batch",
    "train.validate_every", "train.validate_tasks", "train.validate_clips", "train.validate_prompts",
)


class CheckpointError(FvdmError, ValueError):
    """A checkpoint file is missing, corrupt, or does not match the config it is used with."""


# -- integrity -------------------------------------------------------------------------------------

#: parts of a checkpoint whose tensors are hashed on save and verified on load
HASHED_PARTS = ("model", "ema", "optimizer")


def tensor_digest(tree: Any) -> str:
    """sha256 over every tensor in a nested dict/list (key path, dtype, shape, raw bytes), in sorted key order.

    ``torch.load(weights_only=True)`` does not check the zip's CRCs, so flipped bits in tensor data
    load silently; this digest, stored at save time, catches them.
    """
    import hashlib

    h = hashlib.sha256()

    def walk(node: Any, key: str) -> None:
        if isinstance(node, torch.Tensor):
            t = node.detach().cpu().contiguous()
            h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(node, dict):
            for k in sorted(node, key=str):
                walk(node[k], f"{key}.{k}")
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(v, f"{key}[{i}]")

    walk(tree, "")
    return h.hexdigest()


def verify_checkpoint(ckpt: dict[str, Any], path: str | Path) -> None:
    """Raise CheckpointError on a tensor-hash mismatch or non-finite model/EMA weights."""
    stored = ckpt.get("tensor_sha256")
    if isinstance(stored, dict):
        bad = [part for part in HASHED_PARTS
               if part in stored and ckpt.get(part) is not None and tensor_digest(ckpt[part]) != stored[part]]
        if bad:
            raise CheckpointError(f"checkpoint {path} is damaged: the tensors of {', '.join(bad)} do not match the "
                                  "hashes stored when it was written (bit flips or a partial copy); use another "
                                  "checkpoint of the run or retrain")
    for part in ("model", "ema"):
        for name, t in (ckpt.get(part) or {}).items():
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                n = int((~torch.isfinite(t)).sum())
                raise CheckpointError(f"checkpoint {path} has {n} non-finite value(s) in {part} weight {name!r}: "
                                      "the run diverged before it was saved; use an earlier checkpoint or "
                                      "retrain with a lower train.lr")


# -- writing ---------------------------------------------------------------------------------------

def temp_path(path: str | Path) -> Path:
    """Where a writer of ``path`` puts its temp file before the atomic rename: ``.<name>.tmp-<PID>`` beside it
    (the one naming ``clean_stale_temps`` recognises)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def clean_stale_temps(directory: str | Path) -> list[Path]:
    """Remove ``.<name>.tmp-<PID>`` files left by writers that died mid-write (kill -9 during a save).

    A temp file whose PID is still alive belongs to a writer in progress and is kept. Returns the
    removed paths.
    """
    removed = []
    for tmp in Path(directory).glob(".*.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
            continue
        except ProcessLookupError:
            pass
        except PermissionError:  # alive, owned by someone else
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` atomically: temp file in the same directory, fsync, rename, fsync the dir.

    A crash at any point leaves either the previous file or the new one, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if state.get("format") == FORMAT:  # integrity hashes of the tensors, checked by load_checkpoint
        state = {**state, "tensor_sha256": {p: tensor_digest(state[p]) for p in HASHED_PARTS
                                            if state.get(p) is not None}}
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)

    return atomic_write(path, write, durable=True, temp=temp_path(path))


# -- reading ---------------------------------------------------------------------------------------

def publish_checkpoint(state: dict[str, Any], ckpt_dir: str | Path, step: int, keep_last: int) -> Path:
    """Write ``step-<step>.pt`` atomically, point ``last.pt`` at it (a hard link where the filesystem allows,
    else a copy; replaced atomically), and delete step files beyond the newest ``keep_last``."""
    ckpt_dir = Path(ckpt_dir)
    path = save_checkpoint(state, step_file(ckpt_dir, step))
    last = point_last_at(ckpt_dir, path)
    for old in step_checkpoints(ckpt_dir)[keep_last:]:
        old.unlink(missing_ok=True)
    return last


def step_file(ckpt_dir: str | Path, step: int) -> Path:
    """Where ``publish_checkpoint`` writes the checkpoint of ``step``."""
    return Path(ckpt_dir) / f"step-{step:08d}.pt"


def point_last_at(ckpt_dir: str | Path, path: Path) -> Path:
    """Make ``last.pt`` the checkpoint ``path`` (a hard link where the filesystem allows, else a copy), atomically."""
    last = Path(ckpt_dir) / "last.pt"
    tmp = temp_path(last)
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:  # no hard links here: a copy (still renamed into place atomically)
        import shutil

        shutil.copyfile(path, tmp)
    os.replace(tmp, last)
    return last


def set_aside_diverged(ckpt_dir: str | Path, bad_step: int, good_step: int | None) -> Path:
    """A run diverged on the weights of checkpoint ``bad_step``: rename it ``diverged-step-<N>.pt`` (no resume
    and no fallback picks it; it is kept for inspection) and point ``last.pt`` at ``good_step``'s file if it is
    still there, else remove ``last.pt``. Returns the new name of the set-aside file."""
    ckpt_dir = Path(ckpt_dir)
    bad = step_file(ckpt_dir, bad_step)
    aside = ckpt_dir / f"diverged-{bad.name}"
    if bad.is_file():
        os.replace(bad, aside)
    good = step_file(ckpt_dir, good_step) if good_step is not None else None
    if good is not None and good.is_file():
        point_last_at(ckpt_dir, good)
    else:
        (ckpt_dir / "last.pt").unlink(missing_ok=True)
    return aside


def step_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """``step-<N>.pt`` files of a run, newest first."""
    return sorted(Path(ckpt_dir).glob("step-*.pt"), key=lambda p: p.stem, reverse=True)


def load_newest_valid(ckpt_dir: str | Path) -> tuple[dict[str, Any], Path, list[str]]:
    """``last.pt``, else the newest ``step-<N>.pt`` that loads and verifies: (checkpoint, its path, the
    one-line reasons the newer candidates were skipped). Raises the last error when none loads."""
    ckpt_dir = Path(ckpt_dir)
    candidates = [ckpt_dir / "last.pt", *step_checkpoints(ckpt_dir)]
    skipped: list[str] = []
    err: CheckpointError | None = None
    tried: set[tuple[int, int]] = set()
    for cand in candidates:
        if not cand.is_file():
            continue
        st = cand.stat()
        if (st.st_dev, st.st_ino) in tried:  # last.pt is a hard link to the newest step file: read it once
            continue
        tried.add((st.st_dev, st.st_ino))
        try:
            return load_checkpoint(cand), cand, skipped
        except CheckpointError as exc:
            err = exc
            skipped.append(str(exc).splitlines()[0])
    if err is None:
        raise CheckpointError(f"no checkpoint in {ckpt_dir}; run without --resume")
    raise CheckpointError(f"no checkpoint in {ckpt_dir} loads ({len(skipped)} tried; newest: {skipped[0]}); "
                          "retrain, or copy a good checkpoint there") from err


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and check it is a complete fvdm checkpoint."""
    path = Path(path)
    if path.is_dir():
        cand = path / "checkpoints" / "last.pt"
        if not cand.is_file():
            raise CheckpointError(f"{path} is a directory without checkpoints/last.pt; pass a .pt file or a run dir")
        path = cand
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        msg = next((ln for ln in lines if "Unsupported" in ln), lines[0] if lines else type(exc).__name__)
        if "Unsupported global" in str(exc):  # a well-formed pickle with classes: refused, not corrupt
            raise CheckpointError(
                f"{path} holds pickled Python objects that weights_only=True refuses to load ({msg}); "
                "fvdm checkpoints hold tensors and plain data only. Re-save it with fvdm, or load it "
                "yourself only if you trust its source."
            ) from None
        raise CheckpointError(
            f"cannot read checkpoint {path} ({os.path.getsize(path)} bytes): it is truncated or corrupt "
            f"({type(exc).__name__}: {msg}). Use an earlier checkpoint or retrain; nothing was changed."
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an fvdm checkpoint (expected a dict with format={FORMAT!r}); "
            "fvdm writes them with `fvdm train`"
        )
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {ckpt.get('version')}, this fvdm reads version {VERSION}")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}: incomplete checkpoint")
    verify_checkpoint(ckpt, path)
    return ckpt


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_diff(a: dict[str, Any], b: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """Keys (dotted paths) whose values differ between two canonical config dicts."""
    fa, fb = _flatten(a), _flatten(b)
    out = []
    for key in sorted(set(fa) | set(fb)):
        if any(key == p or key.startswith(p + ".") for p in ignore):
            continue
        if fa.get(key, "<absent>") != fb.get(key, "<absent>"):
            out.append((key, fa.get(key, "<absent>"), fb.get(key, "<absent>")))
    return out


def check_resume_config(ckpt: dict[str, Any], canonical: dict[str, Any], path: str | Path) -> None:
    """Raise unless the checkpoint was trained with the same config (up to :data:`RESUME_MUTABLE`)."""
    saved = json.loads(ckpt["config"])
    diff = config_diff(saved, canonical, RESUME_MUTABLE)
    if diff:
        lines = "\n".join(f"  {k}: checkpoint has {va!r}, config has {vb!r}" for k, va, vb in diff[:20])
        more = f"\n  ... and {len(diff) - 20} more" if len(diff) > 20 else ""
        raise CheckpointError(
            f"checkpoint {path} (config hash {ckpt['config_hash']}) was trained with a different config:\n"
            f"{lines}{more}\nResume with the checkpoint's own config ({Path(path).parent.parent / 'config.yaml'}), "
            "or start a new run without --resume. Nothing was overwritten."
        )


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str, path: str | Path) -> None:
    """``load_state_dict(strict=True)`` with an error that names the mismatching keys/shapes."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append("shape mismatch: " + "; ".join(shapes[:5]))
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (e.g. {unexpected[:3]})")
        raise CheckpointError(
            f"{what} weights in {path} do not fit the model built from the config ({'; '.join(parts)}). "
            "The checkpoint comes from a different backbone/data config; use the config stored in it."
        )
    module.load_state_dict(state, strict=True)


# -- resuming a run ---------------------------------------------------------------------------------

def checkpoint_to_resume(ckpt_path: Path, canonical: dict[str, Any], name: str, resume: bool, overwrite: bool,
                         main: bool) -> tuple[dict[str, Any] | None, Path]:
    """(the checkpoint to resume and the file it came from, or None) after checking the run dir is usable:
    resuming needs a checkpoint of the same config; a fresh run must not overwrite one by accident."""
    if main and ckpt_path.parent.is_dir():
        for stale in clean_stale_temps(ckpt_path.parent):  # a kill -9 during a save leaves its temp file
            print(f"fvdm train: removed {stale.name} (left by a writer that died mid-save)", file=sys.stderr)
    if not resume:
        if ckpt_path.exists() and not overwrite:
            raise CheckpointError(f"{ckpt_path} already exists; pass --resume to continue that run, --overwrite to "
                                  "start it again, or --run-dir for a new directory. Nothing was overwritten.")
        return None, ckpt_path
    if not ckpt_path.is_file():
        run_dir = ckpt_path.parent.parent
        others = sorted(str(p.parent.parent) for p in run_dir.parent.glob(f"{name}-*/checkpoints/last.pt"))
        hint = (f" Runs of {name!r} with a checkpoint: {', '.join(others)} (the run dir is named by the "
                "config hash, so a changed config, e.g. train.steps, gets a new one): pass --run-dir DIR."
                if others else "")
        raise CheckpointError(f"nothing to resume: {ckpt_path} does not exist; run without --resume, "
                              f"or pass the run's --run-dir.{hint}")
    ckpt, src, skipped = load_newest_valid(ckpt_path.parent)  # src: a fallback if last.pt is bad
    if skipped and main:
        print(f"fvdm train: resuming from {src.name} (step {int(ckpt['step'])}): skipped {len(skipped)} "
              f"newer checkpoint(s): {'; '.join(skipped)}", file=sys.stderr, flush=True)
    check_resume_config(ckpt, canonical, src)
    return ckpt, src


# -- RNG states -----------------------------------------------------------------------------------

def capture_rng() -> dict[str, Any]:
    """This process's global RNG states as weights_only-safe data."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": str(np_state[0]), "state": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "cuda": None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    npd = state["numpy"]
    np.random.set_state((npd["key"], npd["state"].numpy().astype(np.uint32), npd["pos"], npd["has_gauss"],
                         npd["cached_gaussian"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if state.get("cuda") is not None and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
