"""Paired identity difference of two digits models scored on the same clips and sampling noise.

Reads two ``benchmarks/score_digits_model.py`` outputs (OUT/results.json, same ``--clips``, ``--seed`` and
``--steps``, so clip i of both saw the same given frames and the same starting noise) and prints, per task,
each model's mean identity F1 and the mean per-clip difference B - A with its 95% t interval over clips.

    python -m benchmarks.paired_identity bench_out/paired/ft_ctx_s0 bench_out/paired/ft_cl_s0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TASKS = ("image_to_video", "extension", "interpolation")


def paired(a: dict, b: dict) -> dict[str, dict[str, float]]:
    from fvdm.bench.stats import mean_ci

    for key in ("clips", "seed", "steps"):
        if a[key] != b[key]:
            raise SystemExit(f"the two results differ in {key} ({a[key]} vs {b[key]}): score both on the same "
                             "clips, seed and steps")
    out = {}
    for task in TASKS:
        x, y = a["identity_f1"][task]["model"]["values"], b["identity_f1"][task]["model"]["values"]
        d = mean_ci([q - p for p, q in zip(x, y)])
        out[task] = {"a": round(sum(x) / len(x), 4), "b": round(sum(y) / len(y), 4),
                     "b_minus_a": round(d["mean"], 4), "ci": [round(d["ci_low"], 4), round(d["ci_high"], 4)]}
    out["fvd_digits"] = {"a": a["unconditional"]["fvd_digits"], "b": b["unconditional"]["fvd_digits"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", help="score_digits_model output directory of model A")
    ap.add_argument("b", help="the same for model B")
    args = ap.parse_args()
    a, b = (json.loads((Path(d) / "results.json").read_text()) for d in (args.a, args.b))
    print(json.dumps({"a": a["model"], "b": b["model"], "clips": a["clips"], "seed": a["seed"],
                      **paired(a, b)}))


if __name__ == "__main__":
    main()
