"""`fvdm config`: schema, validate, show (with resolved defaults and hash)."""

from __future__ import annotations

import argparse
import json
import sys

from fvdm.core.config import (
    DERIVED_BACKBONE_KEYS, canonical_dict, canonical_hash, dump_config, experiment_schema, load_config_dict,
    parse_config, resolve_config, shown_dict,
)
from fvdm.core.errors import ConfigError
from fvdm.core.plugins import load_plugins


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print the config schema, validate or show a config",
                       description="Experiment configs: YAML/JSON files referring to plugins as {name: ..., params}.")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION")
    s = csub.add_parser("schema", help="print the JSON schema (registered plugins' params included)")
    s.add_argument("--core-only", action="store_true", help="without the registered plugins' params")
    s.set_defaults(func=_schema)
    v = csub.add_parser("validate", help="validate a config file; report every error with its path")
    v.add_argument("file")
    v.set_defaults(func=_validate)
    sh = csub.add_parser("show", help="print a config with every plugin default filled in, and its hash",
                         description="Print a config with every plugin default filled in and its hash. The "
                                     "backbone fields `fvdm train` derives from the data, autoencoder and noise "
                                     f"schedule ({', '.join(DERIVED_BACKBONE_KEYS)}) are left out unless the "
                                     "file sets them; the output trains exactly as the file does.")
    sh.add_argument("file", nargs="?", help="config file (default: the built-in defaults)")
    sh.add_argument("--format", choices=["yaml", "json"], default="yaml")
    sh.set_defaults(func=_show)
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(experiment_schema(None if args.core_only else load_plugins()), indent=2))
    return 0


def _validate(args: argparse.Namespace) -> int:
    plugins = load_plugins()
    try:
        cfg = parse_config(load_config_dict(args.file), args.file)
        resolved = resolve_config(cfg, plugins, args.file)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(f"{args.file}: OK (hash {canonical_hash(canonical_dict(cfg, resolved=resolved))})")
    return 0


def _show(args: argparse.Namespace) -> int:
    plugins = load_plugins()
    cfg = parse_config(load_config_dict(args.file) if args.file else {}, args.file)
    resolved = resolve_config(cfg, plugins, args.file)  # validated once; the dicts below reuse it
    full = parse_config(shown_dict(cfg, resolved=resolved))
    if args.format == "yaml":  # JSON has no comments: its consumers get the data alone
        print(f"# hash: {canonical_hash(canonical_dict(cfg, resolved=resolved))}")
        derived = [k for k in DERIVED_BACKBONE_KEYS if k not in cfg.backbone.params]
        if derived:
            print(f"# backbone {', '.join(derived)}: derived by `fvdm train` from data, autoencoder, noise_schedule")
    print(dump_config(full, fmt=args.format), end="")
    return 0
