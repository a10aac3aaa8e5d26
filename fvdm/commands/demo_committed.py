"""The demo's second model: the committed fine-tuned FVDM model, loaded from its backbone directory.

A five-minute demo model draws digit strokes but has not learned to carry given frames forward;
``fvdm/bench/weights/digits_fvdm`` is a model trained far longer (the committed synchronized digits
base, fine-tuned into an FVDM model by ``benchmarks/train_digits_fvdm.py``), so a newcomer sees what the
method does once a model is trained. The directory holds ``config.json`` + ``model.safetensors`` (an
fvdm backbone directory) and ``provenance.json`` (the recipe, the steps, the base's and the weights'
sha256, the scores at export); the weights are checked against that hash before anything is sampled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: the committed fine-tuned model the demo samples next to the model it trains
COMMITTED_DIR = Path(__file__).resolve().parents[1] / "bench" / "weights" / "digits_fvdm"
REMAKE = "python -m benchmarks.train_digits_fvdm --export DIR (see its docstring)"


def read_provenance(directory: str | Path) -> dict[str, Any]:
    """``provenance.json`` of a committed model directory, after checking the weights' sha256 against it."""
    from fvdm.core.hashing import sha256_file

    d = Path(directory)
    prov_path, weights = d / "provenance.json", d / "model.safetensors"
    for p in (prov_path, weights, d / "config.json"):
        if not p.is_file():
            raise ValueError(f"demo --model {d}: {p.name} is missing; restore the committed model (git checkout -- "
                             f"{d}) or write one with {REMAKE}")
    prov = json.loads(prov_path.read_text())
    want, got = prov.get("sha256"), sha256_file(weights)
    if want != got:
        raise ValueError(f"demo --model {d}: model.safetensors has sha256 {got[:12]}..., provenance.json records "
                         f"{str(want)[:12]}...; restore the file (git checkout -- {weights}) or re-export it with "
                         f"{REMAKE}")
    return prov


def load_committed(directory: str | Path, plugins: Any) -> tuple[Any, dict[str, Any]]:
    """(LoadedModel, provenance) of a committed model directory, sampled with the config it was trained with."""
    from fvdm.core.config import parse_config
    from fvdm.core.loaded import load_from_config

    prov = read_provenance(directory)
    cfg = json.loads(json.dumps(prov["config"]))
    cfg["backbone"]["pretrained"] = str(directory)  # its own weights, not the base it started from
    cfg["train"]["init_from"] = None
    cfg["train"]["lora"] = None
    return load_from_config(parse_config(cfg, f"{directory}/provenance.json"), plugins), prov


def how_trained(prov: dict[str, Any]) -> str:
    """One sentence: what the committed model is and how it was made (from its provenance)."""
    c = prov["config"]
    t, vtv = c["train"], dict(c["vtv"])
    name = vtv.pop("name")
    opts = ", ".join(f"{k}={v}" for k, v in sorted(vtv.items()) if not isinstance(v, list))
    base = prov.get("base_sha256", "")[:12]
    return (f"the committed synchronized digits base (sha256 {base}..., 12,000 steps, every frame one level) "
            f"fine-tuned {prov['step']} steps with per-frame levels ({name}: {opts}), batch {t['batch_size']}, "
            f"lr {t['lr']}, EMA {t['ema_decay']}"
            f"{'' if t.get('clean_frame_loss', True) else ', loss over the generated frames only'} "
            f"(`{prov.get('script', 'benchmarks/train_digits_fvdm.py')}`; "
            f"weights sha256 {prov['sha256'][:12]}...)")
