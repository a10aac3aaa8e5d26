"""`fvdm bench`: list and run registered benchmark suites.

    fvdm bench list [--json]
    fvdm bench show SUITE [--json] [--set key=value ...]
    fvdm bench run SUITE [--out DIR] [--quick] [--seed S] [--threads N]
                         [--data PATH] [--weights PATH] [--set key=value ...] [--tensorboard]
                         [--max-minutes M] [--fresh]
    fvdm bench status DIR [--json]

Each run writes results.json (numbers, config, seeds, versions, machine, threads,
git revision), results.md and PNG plots into --out (default bench_out/SUITE), and a
record per finished job (DIR/records): the same command again continues a run that
was killed or stopped by --max-minutes.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from fvdm.commands.argtypes import device_arg, positive_int
from fvdm.core.config import key_value
from fvdm.commands.plugins import clip


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="list and run benchmark suites (speed, digits_zero_shot, dataset protocols)",
        description="Run registered benchmark suites. Every run writes results.json with provenance, "
        "a Markdown table and plots. Third-party packages add suites with the fvdm_register_benchmarks hook.",
    )
    bsub = p.add_subparsers(dest="bench_command", metavar="{list,show,run,status}")
    pl = bsub.add_parser("list", help="list the registered suites")
    pl.add_argument("--json", action="store_true", help="machine-readable output")
    pl.set_defaults(func=_list)

    ps = bsub.add_parser("show", help="a suite's description and Config fields (what --set takes)")
    ps.add_argument("suite", help="suite name (see `fvdm bench list`)")
    ps.add_argument("--json", action="store_true", help="the suite's Config as a JSON schema")
    ps.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="show the values with these settings (checked as `run` checks them); repeatable")
    ps.set_defaults(func=_show)

    pr = bsub.add_parser("run", help="run one suite", description="Run one suite and write its results.")
    pr.add_argument("suite", help="suite name (see `fvdm bench list`)")
    pr.add_argument("--out", default=None, help="output directory (default: bench_out/SUITE)")
    pr.add_argument("--quick", action="store_true", help="smaller budget (one seed, fewer clips/repeats)")
    pr.add_argument("--seed", type=int, default=0, help="base seed; the same seed reproduces quality numbers")
    pr.add_argument("--threads", type=positive_int, default=None, help="torch threads for the run (default: torch's)")
    pr.add_argument("--data", default=None, help="dataset path (protocol suites: the real videos)")
    pr.add_argument("--weights", default=None, help="feature-extractor weights file (protocol suites)")
    pr.add_argument("--device", type=device_arg, default=None,
                    help="device for suites with a `device` field, e.g. cuda (digits_zero_shot: models, data, noise)")
    pr.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="set a field of the suite's Config (value parsed as YAML); repeatable")
    pr.add_argument("--tensorboard", action="store_true", help="also write TensorBoard scalars under OUT/tb")
    pr.add_argument("--max-minutes", type=float, default=None, metavar="M",
                    help="stop cleanly once M minutes have passed and the job in flight has finished; the same "
                         "command continues the run (finished jobs are read back from OUT/records)")
    pr.add_argument("--fresh", action="store_true",
                    help="delete OUT's records (and the suite's checkpoints under OUT) and start over")
    pr.set_defaults(func=_run)

    pt = bsub.add_parser("status", help="done and pending jobs of a run directory, with the time left",
                         description="What a run directory holds: finished jobs (their seconds and the fvdm "
                                     "revision that ran them), pending ones, and the time left estimated from "
                                     "the finished jobs of each kind.")
    pt.add_argument("dir", help="the run's --out directory")
    pt.add_argument("--json", action="store_true", help="machine-readable output")
    pt.set_defaults(func=_status)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def _list(args: argparse.Namespace) -> int:
    from fvdm.core.plugins import load_plugins

    plugins = load_plugins()
    items = [e.to_json() for e in plugins["benchmarks"].list()]
    if args.json:
        print(json.dumps(items, indent=2))
        return 0
    if not items:
        print("no benchmark suites registered")
        return 0
    for it in items:
        mark = "ok " if it["available"] else "n/a"
        print(f"[{mark}] {it['name']:<20} {it['origin']:<16} {clip(it['description'], 70)}".rstrip())
        if not it["available"]:
            print(f"      unavailable: {it['reason']}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from fvdm.commands.specs import describe_model
    from fvdm.core.plugins import load_plugins

    entry = load_plugins()["benchmarks"].get(args.suite)  # unknown names raise with suggestions
    if args.json:
        print(json.dumps(entry.config.model_json_schema() if entry.config is not None else {}, indent=2))
        return 0
    values = entry.config.model_validate(_params(args, entry)) if entry.config is not None else None
    av = entry.availability()
    doc = (getattr(entry.obj, "__doc__", None) or "").strip()
    print(f"{entry.name} ({entry.origin}){'' if av.ok else ' - unavailable: ' + av.reason}")
    if doc:
        print("\n".join(f"  {line}".rstrip() for line in doc.splitlines()))
    print("Config fields (fvdm bench run %s --set KEY=VALUE; dotted keys reach nested fields):" % entry.name)
    print("\n".join(describe_model(entry.config, "  ", defaults=values)))
    # a list of models (arms: list[Arm]) shows only its type above: its items' fields and values here
    for model, fields in _item_models(entry.config).items():
        print(f"{model.__name__} fields (each item of {', '.join(fields)}):")
        print("\n".join(describe_model(model, "  ")))
    for fields in _item_models(entry.config).values():
        for name in fields:
            items = getattr(values, name, None) or []
            if items:
                print(f"{name} ({'with these settings' if args.overrides else 'default'}):")
                print("\n".join(f"  - {json.dumps(it.model_dump(mode='json'))}" for it in items))
    return 0


def _item_models(model: Any) -> dict[Any, list[str]]:
    """pydantic models that are items of a list field of ``model`` -> the names of those fields."""
    import typing

    from pydantic import BaseModel

    def items(ann: Any) -> list[Any]:
        args = typing.get_args(ann)
        if typing.get_origin(ann) is list:
            return [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        return [m for a in args for m in items(a)]  # Optional / Union: look inside

    out: dict[Any, list[str]] = {}
    for name, field in (model.model_fields.items() if model is not None else ()):
        for m in items(field.annotation):
            out.setdefault(m, []).append(name)
    return out


def _params(args: argparse.Namespace, entry: Any) -> dict[str, Any]:
    params: dict[str, Any] = {}
    fields = set(entry.config.model_fields) if entry.config is not None else set()
    for key in ("data", "weights", "device"):
        val = getattr(args, key, None)
        if val is None:
            continue
        if key not in fields:
            raise ValueError(f"suite {entry.name!r} takes no --{key} (its Config fields: "
                             f"{', '.join(sorted(fields)) or 'none'})")
        params[key] = val
    defaults = entry.config().model_dump(mode="json") if entry.config is not None else {}
    for ov in args.overrides:
        parts, value = key_value(ov, lambda item: ValueError(
            f"--set expects KEY=VALUE (KEY may be dotted: full.seeds=1), got {item!r}"))
        if parts[0] not in params and len(parts) > 1:  # dotted: start from the field's default
            params[parts[0]] = _deepcopy(defaults.get(parts[0], {}))
        node = params
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    if entry.config is not None:  # here, so a misspelled key gets a close match and the fields to look up
        from pydantic import ValidationError

        from fvdm.commands.specs import config_errors

        try:
            entry.config.model_validate(params)
        except ValidationError as exc:
            raise ValueError(f"suite {entry.name!r} ({entry.origin}): {config_errors(exc, entry.config)}; "
                             f"see `fvdm bench show {entry.name}`") from None
    return params


def _deepcopy(x: Any) -> Any:
    return json.loads(json.dumps(x))


def _run(args: argparse.Namespace) -> int:
    from fvdm.bench.runner import run_suite
    from fvdm.core.plugins import load_plugins

    plugins = load_plugins()
    entry = plugins["benchmarks"].get(args.suite)  # unknown names raise with suggestions
    doc = run_suite(args.suite, args.out, quick=args.quick, seed=args.seed, threads=args.threads,
                    params=_params(args, entry), plugins=plugins, tensorboard=args.tensorboard,
                    fresh=args.fresh, max_minutes=args.max_minutes)
    out = args.out or f"bench_out/{args.suite}"
    print(open(f"{out}/results.md").read())
    print(f"wrote {out}/results.json ({doc['status']}, {doc['elapsed_s']:.1f} s)")
    if doc.get("resume"):
        print(f"fvdm bench: {doc['resume']}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from fvdm.bench.ledger import status

    st = status(args.dir)
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    left = st["seconds_left_estimate"]
    print(f"{st['dir']}: suite {st['suite']}{' (quick)' if st['quick'] else ''}, seed {st['seed']}, config "
          f"{st['config_sha256'][:12]}: {len(st['done'])} of {len(st['done']) + len(st['pending'])} jobs done "
          f"({st['seconds_done'] / 60:.1f} min)")
    for job in st["done"]:
        j = st["jobs"][job]
        print(f"  done     {job:<40} {j['seconds']:>9.1f} s  {(j['revision'] or '?')[:12]}  {j['finished_utc']}")
    for job in st["pending"]:
        print(f"  pending  {job}")
    if st["pending"]:
        print("time left: " + (f"about {left / 60:.1f} min (the finished jobs' own timings, per kind)"
                               if left is not None else "unknown (no finished job to time it by)"))
    return 0
