"""What setting up a Wan LoRA run costs: the EMA's memory (issue 33 item 8) and the base hashing of an adapter
export (item 10), each the old way and the current way, side by side in one run.

Model: Wan2.1-T2V-1.3B at its real width (D = 1536, ffn 8960, text_dim 4096) with ``--layers`` of its 30
blocks (default 2, about 120 M parameters), LoRA rank ``--rank`` on Wan's q, k, v, o and FFN layers, as
``benchmarks/wan_load_time.py`` builds it.

EMA set-up (``ema``), each arm in a fresh child process so that one arm's freed memory cannot lower or raise
the other's numbers:

- ``deepcopy``: the old set-up, ``copy.deepcopy`` of the whole model (frozen base included), then the frozen
  tensors shared back into the copy (its base copy is then freed);
- ``make_ema``: ``make_ema(model, share_frozen=True)`` now: the frozen tensors are never copied.

Reported per arm: bytes of the distinct parameter and buffer storages alive (counted by
``untyped_storage().data_ptr()``) before, at the set-up's peak (``deepcopy``: right after the copy, before
sharing back) and after; and the process's resident set (``VmRSS``) and its peak (``VmHWM``, reset through
``/proc/self/clear_refs`` just before the set-up), in MiB. tracemalloc is not used: it does not see torch's
allocations.

Base hashing (``hash``): the calls ``fvdm export --adapter`` makes, on a model read from a diffusers directory:
``check_base`` (what ``load_for_sampling`` runs on a LoRA checkpoint) and ``export_adapter`` (diffusers layout),
with the per-process memo of ``base_fingerprint`` and with it disabled. Reported: how often the base is hashed
(``hash_tensors`` calls) and the seconds spent in them.

    python benchmarks/wan_lora_setup_memory.py --out benchmarks/results/wan_lora_setup
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

MIB = 2 ** 20


def _status(key: str) -> float:
    """A /proc/self/status memory line (VmRSS, VmHWM) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status (Linux only)")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS from here on


def storage_bytes(*modules: torch.nn.Module) -> int:
    """Bytes of the distinct storages behind the modules' parameters and buffers (shared ones once)."""
    seen: dict[int, int] = {}
    for m in modules:
        for t in [*m.parameters(), *m.buffers()]:
            s = t.untyped_storage()
            seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


def build(layers: int, rank: int | None, pretrained: str | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The reduced 1.3B backbone, with LoRA adapters of ``rank`` (base frozen) unless None; random init unless
    ``pretrained``."""
    from fvdm.core.build import build_model
    from fvdm.core.lora import LoraSettings, add_lora
    from fvdm.core.plugins import load_plugins
    from fvdm.plugins.backbones import wan_sizes

    full = wan_sizes.WAN_SIZES["wan2.1-t2v-1.3b"]
    wan_sizes.WAN_SIZES["wan2.1-t2v-1.3b"] = full._replace(layers=layers)  # this process only
    spec = {"name": "wan", "size": "wan2.1-t2v-1.3b", **({"pretrained": pretrained} if pretrained else {})}
    try:
        torch.manual_seed(0)
        model = build_model(load_plugins(), spec, load_pretrained=pretrained is not None)
    finally:
        wan_sizes.WAN_SIZES["wan2.1-t2v-1.3b"] = full
    if rank is not None:
        add_lora(model, LoraSettings(rank=rank))
    return model, spec


def old_ema(model: torch.nn.Module) -> tuple[torch.nn.Module, int]:
    """The set-up before item 8's fix: a deep copy of everything, then the frozen tensors shared back.
    Returns the EMA and the storage bytes alive at its peak (both whole copies)."""
    ema = copy.deepcopy(model).float().eval()
    peak = storage_bytes(model, ema)
    for name, p in list(model.named_parameters()):
        if not p.requires_grad:
            owner, _, leaf = name.rpartition(".")
            setattr(ema.get_submodule(owner) if owner else ema, leaf, p)
            p.fvdm_shared = True  # ema_update skips it
    ema.requires_grad_(False)
    return ema, peak


def ema_arm(arm: str, layers: int, rank: int) -> dict[str, Any]:
    from fvdm.core.ema import make_ema

    torch.set_num_threads(1)
    model, _ = build(layers, rank)
    gc.collect()
    before = storage_bytes(model)
    rss_before = _status("VmRSS")
    _reset_peak()
    if arm == "deepcopy":
        ema, peak = old_ema(model)
    else:
        ema = make_ema(model, share_frozen=True)
        peak = storage_bytes(model, ema)  # nothing is copied and freed on the way: the end state is the peak
    gc.collect()
    hwm = _status("VmHWM")
    after = storage_bytes(model, ema)
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return {"arm": arm, "storage_bytes": {"model_before": before, "peak": peak, "after": after},
            "storage_peak_over_model": round(peak / before, 3), "trainable_bytes": trainable,
            "rss_mib": {"before": round(rss_before, 1), "peak": round(hwm, 1), "after": round(_status("VmRSS"), 1),
                        "peak_minus_before": round(hwm - rss_before, 1)}}


def hash_arm(layers: int, rank: int) -> dict[str, Any]:
    from benchmarks.wan_load_time import write_directory
    from fvdm.commands.export import export_adapter
    from fvdm.core import lora

    torch.set_num_threads(1)
    calls: list[float] = []
    real = lora.hash_tensors

    def timed(state: dict[str, torch.Tensor]) -> str:
        t0 = time.perf_counter()
        digest = real(state)
        calls.append(time.perf_counter() - t0)
        return digest

    class NoMemo(list):  # the memo disabled: never holds an entry, so every lookup misses
        def __setitem__(self, key: Any, value: Any) -> None:
            pass

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root, params, _ = write_directory(Path(tmp) / "wan", layers)
        model, spec = build(layers, None, pretrained=str(root))
        expected = real(dict(model.state_dict()))  # untimed: what the checkpoint would record
        lora.hash_tensors = timed
        memo = lora._FINGERPRINTS
        try:
            for arm in ("no_memo", "memo"):  # the memo arm second: nothing left from the first can help it
                lora.forget_fingerprints()
                lora._FINGERPRINTS = NoMemo() if arm == "no_memo" else memo
                calls.clear()
                t0 = time.perf_counter()
                # as `fvdm export --adapter` runs: load_for_sampling checks the base, then adds the adapters
                found = lora.check_base(model, expected, "bench")
                if not lora.has_lora(model):
                    lora.add_lora(model, lora.LoraSettings(rank=rank))
                export_adapter(model, Path(tmp) / f"adapter_{arm}", spec=spec)
                total = time.perf_counter() - t0
                written = json.loads((Path(tmp) / f"adapter_{arm}" / "adapter_config.json").read_text())
                out[arm] = {"hashes": len(calls), "hash_seconds": [round(c, 3) for c in calls],
                            "hash_seconds_total": round(sum(calls), 3), "flow_seconds": round(total, 3),
                            "fingerprint_as_expected": found == expected == written["base_fingerprint"]}
        finally:
            lora.hash_tensors = real
            lora._FINGERPRINTS = memo
    base_bytes = sum(v.numel() * v.element_size() for k, v in model.state_dict().items() if not lora.is_lora_key(k))
    return {"parameters": params, "base_bytes": base_bytes, **out}


def child(kind: str, layers: int, rank: int) -> dict[str, Any]:
    """Run one arm in a fresh interpreter (its own RSS and peak)."""
    cmd = [sys.executable, "-m", "benchmarks.wan_lora_setup_memory", "--child", kind, "--layers", str(layers),
           "--rank", str(rank)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(layers: int = 2, rank: int = 16) -> dict[str, Any]:
    ema = {arm: child(arm, layers, rank) for arm in ("deepcopy", "make_ema")}
    hashing = child("hash", layers, rank)
    return {
        "model": f"Wan2.1-T2V-1.3B width (D=1536, ffn 8960, text_dim 4096), {layers} of 30 blocks, LoRA rank {rank} "
                 "on q, k, v, o, FFN; random weights",
        "parameters": hashing["parameters"], "lora_rank": rank, "threads": 1, "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu_note": "2-core CPU shared with other long jobs: seconds are noisy; counts and bytes are exact",
        "ema_setup": ema,
        "ema_peak_storage_ratio_old_over_new": round(ema["deepcopy"]["storage_bytes"]["peak"]
                                                     / ema["make_ema"]["storage_bytes"]["peak"], 3),
        "export_adapter_hashing": hashing,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--out", default=None, help="directory for results.json")
    ap.add_argument("--child", choices=("deepcopy", "make_ema", "hash"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        res = hash_arm(args.layers, args.rank) if args.child == "hash" else ema_arm(args.child, args.layers, args.rank)
        print(json.dumps(res))
        return
    res = run(args.layers, args.rank)
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "results.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
