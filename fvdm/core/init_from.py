"""``train.init_from``: a fresh run that starts from other weights (a fine-tune, not a resume).

A resume continues a run: same config, its optimizer, its RNG, its step. A fine-tune is a new run
(its own config, hash, directory, optimizer, step 0) whose backbone starts from weights made
elsewhere: another run's checkpoint (its EMA weights, or its raw ones) or a local weights directory
of the backbone (what ``backbone.pretrained`` reads). The checkpoint must hold this very
architecture: its backbone spec must equal this run's on every field but the weights' origin,
checked before anything is built on it. The run records where it started (path, sha256, step) in
every checkpoint (``started_from``), so a result traces back to its base.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fvdm.core.errors import ConfigError
from fvdm.core.hashing import sha256_file

#: backbone spec keys that say where weights come from, not what the network is
ORIGIN_KEYS = ("pretrained", "subfolder", "lora", "lora_scale")


def init_weights(model: torch.nn.Module, source: str, spec: dict[str, Any], *, weights: str = "ema") -> dict[str, Any]:
    """Fill ``model`` (built from ``spec``) from ``source``: an fvdm checkpoint file or a weights directory.

    Returns the provenance stored as ``started_from``. Every check runs before a weight is copied.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        from fvdm.core.build import read_pretrained

        return {"kind": "directory", **read_pretrained(model, {**spec, "pretrained": str(path)})}
    if not path.is_file():
        raise ConfigError([("train.init_from", f"{path} is neither a checkpoint file nor a weights directory; "
                                               "give runs/NAME/checkpoints/last.pt or a pretrained directory")])
    from fvdm.core.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    theirs = {k: v for k, v in dict(ckpt["model_info"]).items() if k not in ORIGIN_KEYS}
    ours = {k: v for k, v in spec.items() if k not in ORIGIN_KEYS}
    diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    if diff:
        shown = ", ".join(f"{k} {theirs.get(k)!r} (this run {ours.get(k)!r})" for k in diff[:4])
        raise ConfigError([("train.init_from", f"{path} holds another backbone: {shown}; fine-tune from a "
                                               "checkpoint of this architecture, or change the backbone to match")])
    state = ckpt["ema"] if weights == "ema" else ckpt["model"]
    model.load_state_dict(state, strict=True)
    return {"kind": "checkpoint", "path": str(path.resolve()), "sha256": sha256_file(path), "step": int(ckpt["step"]),
            "weights": weights, "config_hash": ckpt.get("config_hash"),
            "started_from": ckpt.get("started_from")}
