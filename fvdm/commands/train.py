"""`fvdm train [CONFIG] [--resume] [--run-dir D] [-o key.path=value ...]`.

Multi-process: ``torchrun --nproc-per-node N -m fvdm train CONFIG`` (DDP; gloo on
CPU, nccl on GPU). Rank 0 alone logs and writes checkpoints.
"""

from __future__ import annotations

import argparse
import json

from fvdm.commands.argtypes import device_arg, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a model (AdamW, EMA, checkpoints, --resume; DDP under torchrun)",
        description="Train an FVDM model from an experiment config (YAML/JSON; default: the built-in defaults, "
                    "latte_tiny on moving_digits). Run dir: RUN_ROOT/NAME-HASH unless --run-dir. "
                    "Multi-process: torchrun --nproc-per-node N -m fvdm train CONFIG.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  fvdm train configs/demo.yaml\n"
               "  fvdm train configs/demo.yaml -o train.steps=2000 -o train.lr=3e-4\n"
               "  fvdm train configs/demo.yaml --resume\n"
               "  torchrun --nproc-per-node 2 -m fvdm train configs/demo.yaml",
    )
    p.add_argument("config", nargs="?", help="experiment config file (default: built-in defaults)")
    p.add_argument("--resume", action="store_true",
                   help="continue from RUN_DIR/checkpoints/last.pt (bit-identical on CPU)")
    p.add_argument("--run-dir", help="run directory (default: RUN_ROOT/NAME-CONFIGHASH)")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config value (YAML-parsed), e.g. -o train.steps=100 -o data.resolution=32")
    p.add_argument("--max-steps", type=positive_int, default=None, help="stop after this many steps in this call")
    p.add_argument("--max-minutes", type=float, default=None, metavar="M",
                   help="stop after the step that passes M minutes, with a checkpoint; --resume continues exactly")
    p.add_argument("--device", type=device_arg, default="auto", help="auto (cuda:LOCAL_RANK if available, else cpu), cpu, cuda")
    p.add_argument("--overwrite", action="store_true", help="start again even if the run dir holds a checkpoint")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    p.add_argument("--json", action="store_true", help="print the result summary as JSON at the end")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from fvdm.core.config import apply_overrides, load_config_dict, parse_config
    from fvdm.core.engine import train
    from fvdm.core.plugins import load_plugins

    data = load_config_dict(args.config) if args.config else {}
    data = apply_overrides(data, args.override)
    cfg = parse_config(data, args.config)
    plugins = load_plugins()
    result = train(cfg, plugins, run_dir=args.run_dir, resume=args.resume, max_steps=args.max_steps,
                   device=args.device, overwrite=args.overwrite, progress=False if args.no_progress else None,
                   max_minutes=args.max_minutes)
    if result.get("stopped_early") and result.get("rank", 0) == 0:
        print(f"fvdm train: stopped at step {result['step']} of {cfg.train.steps} after --max-minutes "
              f"{args.max_minutes:g}; continue with the same command plus --resume (--run-dir {result['run_dir']})")
    if args.json and result.get("rank", 0) == 0:
        summary = {k: v for k, v in result.items() if k not in ("losses", "loss_history")}
        print(json.dumps(summary, indent=2))
    return 0
