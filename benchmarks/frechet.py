"""Fréchet-distance and feature-extraction speed (CPU), measured side by side in one run.

* FD at d=400 and d=2048: torch float64 ``eigh`` path (default) and ``cholesky`` path vs
  scipy ``sqrtm`` (pytorch-fid / StyleGAN-V numerics), same statistics (N = 2d samples),
  same thread count; reports speed ratios and relative differences of the values.
* I3D end-to-end throughput (uint8 clips -> resize 224 -> I3D -> 400-d) in clips/s,
  random weights (speed does not depend on the values).

    python benchmarks/frechet.py --threads 1 --out bench_out/frechet.json [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from fvdm.bench.runner import write_json


def _best(fn, reps: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def run(quick: bool = False, threads: int = 1) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from fvdm.plugins.evaluators.frechet import frechet_distance
    from fvdm.plugins.evaluators.i3d import I3DExtractor, InceptionI3d, init_random_

    res: dict = {"threads": threads, "quick": quick, "torch": torch.__version__, "machine": platform.machine(),
                 "cpu_count": os.cpu_count(), "frechet": {}}
    rng = np.random.default_rng(0)
    reps = 1 if quick else 3
    for d in (400, 2048):
        n = 2 * d  # statistics of N = 2d samples, as with 2048 videos x 400-d / 4096 frames x 2048-d
        x, y = rng.standard_normal((n, d)), rng.standard_normal((n, d)) * 1.1 + 0.1
        m1, s1, m2, s2 = x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
        t_eigh, v_eigh = _best(lambda: frechet_distance(m1, s1, m2, s2), reps)
        t_chol, v_chol = _best(lambda: frechet_distance(m1, s1, m2, s2, method="cholesky"), reps)
        t_sqrtm, v_sqrtm = _best(lambda: frechet_distance(m1, s1, m2, s2, method="sqrtm"), reps)
        res["frechet"][f"d{d}"] = {
            "eigh_s": round(t_eigh, 4), "cholesky_s": round(t_chol, 4), "sqrtm_s": round(t_sqrtm, 4),
            "speedup_eigh": round(t_sqrtm / t_eigh, 2), "speedup_cholesky": round(t_sqrtm / t_chol, 2),
            "fd": v_eigh, "rel_diff_eigh": abs(v_eigh - v_sqrtm) / abs(v_sqrtm),
            "rel_diff_cholesky": abs(v_chol - v_sqrtm) / abs(v_sqrtm), "reps": reps, "n_samples": n,
        }
        r = res["frechet"][f"d{d}"]
        print(f"FD d={d}: eigh {t_eigh:.3f}s  cholesky {t_chol:.3f}s  scipy sqrtm {t_sqrtm:.3f}s  "
              f"speedup eigh x{r['speedup_eigh']:.2f} cholesky x{r['speedup_cholesky']:.2f}  "
              f"rel diff {r['rel_diff_eigh']:.1e}/{r['rel_diff_cholesky']:.1e}  (threads={threads})", flush=True)

    ext = I3DExtractor(I3DExtractor.Config(batch_size=2), model=init_random_(InceptionI3d()), weights_sha256="random")
    n_clips = 2 if quick else 8
    clips = torch.randint(0, 256, (n_clips, 16, 3, 64, 64), dtype=torch.uint8)
    ext(clips[:1])  # warm-up
    t, _ = _best(lambda: ext(clips), 1)
    res["i3d"] = {"clips": n_clips, "frames": 16, "input": "64x64 uint8 -> 224", "batch_size": 2,
                  "seconds": round(t, 3), "clips_per_s": round(n_clips / t, 3)}
    print(f"I3D CPU: {n_clips / t:.2f} clips/s (16x64x64 -> 224, batch 2, threads={threads})", flush=True)
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", help="JSON file to write")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    res = run(quick=args.quick, threads=args.threads)
    if args.out:
        write_json(res, args.out)
    return res


if __name__ == "__main__":
    main()
