"""Wall time of a pretrained Wan load: random-init-then-overwrite (before) against build-empty-then-assign (now).

Model: Wan2.1-T2V-1.3B at its real width (D = 1536, 12 heads, ffn 8960, text_dim 4096, freq_dim 256) with
``--layers`` of its 30 blocks (default 2: about 120 M parameters, 480 MB of float32 shards), so that both
loads fit a busy CPU in seconds. The directory is written once by diffusers (``save_pretrained``, 200 MB
shards and an index), as a download would be. For the run, the size table's ``wan2.1-t2v-1.3b`` row is
given the benchmark's layer count (in this process only), so the backbone's own ``load_pretrained`` runs,
every check included.

Per repetition, alternating which goes first:

- ``old``:  the backbone built with diffusers' random initialisation, then ``load_pretrained`` copies every
  weight over it (what ``build_model(..., load_pretrained=True)`` did before);
- ``new``:  ``build_model(..., load_pretrained=True)`` now: built on the meta device under
  ``weights_follow``, the shards' tensors assigned;
- ``read``: ``read_state_dict`` alone (headers, checks and every tensor read into memory of its own, as the
  new load reads them): the floor a load can reach.

Outputs of ``old`` and ``new`` are checked bit-identical before timing. Reported: median wall seconds,
per-repetition values, the ratio old/new, and the threads used.

    python benchmarks/wan_load_time.py --out benchmarks/results/wan_load
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch


def write_directory(root: Path, layers: int) -> tuple[Path, int, int]:
    """The reduced 1.3B transformer written by diffusers under ``root/transformer``: (root, parameters, bytes)."""
    from diffusers import WanTransformer3DModel

    from fvdm.plugins.backbones.wan_common import diffusers_kwargs
    from fvdm.plugins.backbones.wan_sizes import WAN_SIZES

    row = WAN_SIZES["wan2.1-t2v-1.3b"]._replace(layers=layers)
    torch.manual_seed(0)
    model = WanTransformer3DModel(**diffusers_kwargs(row, row.channels))
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(root / "transformer", max_shard_size="200MB")
    del model
    size = sum(p.stat().st_size for p in (root / "transformer").glob("*.safetensors"))
    return root, params, size


def run(layers: int = 2, reps: int = 3) -> dict[str, Any]:
    from fvdm.core.build import build_model
    from fvdm.core.plugins import load_plugins
    from fvdm.core.pretrained import read_state_dict
    from fvdm.plugins.backbones import wan_sizes

    torch.set_num_threads(1)
    full = wan_sizes.WAN_SIZES["wan2.1-t2v-1.3b"]
    plugins = load_plugins()
    with tempfile.TemporaryDirectory() as tmp:
        root, params, size = write_directory(Path(tmp), layers)
        wan_sizes.WAN_SIZES["wan2.1-t2v-1.3b"] = full._replace(layers=layers)  # this process only
        try:
            spec = {"name": "wan", "size": "wan2.1-t2v-1.3b", "pretrained": str(root)}

            def old() -> torch.nn.Module:
                model = plugins["backbones"].build(spec)  # diffusers' random initialisation
                model.load_pretrained(str(root))  # every weight overwritten
                return model

            def new() -> torch.nn.Module:
                return build_model(plugins, spec, load_pretrained=True)

            def read() -> dict[str, torch.Tensor]:
                expected = {k: tuple(v.shape) for k, v in new_model.transformer.state_dict().items()}
                return read_state_dict(root / "transformer", expected=expected, public_copy="bench", what="bench",
                                       dtype=torch.float32, copy=True)

            with torch.no_grad():  # equal before timed
                old_model, new_model = old(), new()
                g = torch.Generator().manual_seed(0)
                x = torch.randn(1, 2, 16, 4, 4, generator=g)
                t = torch.tensor([[500.0, 250.0]])
                ctx = torch.randn(1, 4, 4096, generator=g)
                same = torch.equal(old_model(x, t, encoder_hidden_states=ctx), new_model(x, t, encoder_hidden_states=ctx))
                if not same:
                    raise SystemExit("old and new loads differ: fix before timing")
            del old_model
            times: dict[str, list[float]] = {"old": [], "new": [], "read": []}
            fns: dict[str, Callable[[], Any]] = {"old": old, "new": new, "read": read}
            for r in range(reps):
                order = ["old", "new", "read"] if r % 2 == 0 else ["new", "old", "read"]
                for name in order:
                    t0 = time.perf_counter()
                    out = fns[name]()
                    times[name].append(round(time.perf_counter() - t0, 3))
                    del out
        finally:
            wan_sizes.WAN_SIZES["wan2.1-t2v-1.3b"] = full
    med = {k: round(statistics.median(v), 3) for k, v in times.items()}
    return {
        "model": f"Wan2.1-T2V-1.3B width (D=1536, ffn 8960, text_dim 4096), {layers} of 30 blocks, random weights",
        "parameters": params, "shard_bytes": size, "shards": "diffusers save_pretrained, max_shard_size=200MB",
        "threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.machine(),
        "cpu_note": "2-core CPU shared with another long job: absolute seconds are noisy, the ratio is the result",
        "cache_note": "shards written just before, so in the page cache: 'read' is a memory copy; a cold disk adds "
                      "the same read time to old and new",
        "reps": reps, "seconds": times, "median_seconds": med,
        "old_over_new": round(med["old"] / med["new"], 2),
        "old_minus_new_seconds": round(med["old"] - med["new"], 3),
        "new_over_read": round(med["new"] / med["read"], 2),
        "outputs_bit_identical": same,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/wan_load")
    args = ap.parse_args()
    result = run(args.layers, args.reps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
