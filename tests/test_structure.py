"""Layering: every module imports, module-level imports form no cycle, and imports point down only.

    fvdm.commands / fvdm.cli  ->  fvdm.bench, fvdm.tasks, fvdm.plugins  ->  fvdm.core

core never imports a plugin, task or benchmark module (the plugin manager imports them by
name when it loads them); the CLI imports a benchmark module only when `fvdm bench` runs.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import fvdm

ROOT = Path(fvdm.__file__).parent


def all_modules() -> list[str]:
    return ["fvdm", *sorted(m.name for m in pkgutil.walk_packages([str(ROOT)], prefix="fvdm."))]


def fresh(code: str) -> dict:
    """Run ``code`` in a new interpreter; it prints one JSON value as its last line."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def loaded_after(imports: list[str]) -> list[str]:
    """fvdm / benchmarks modules in sys.modules after importing ``imports`` in a fresh interpreter."""
    code = ("import importlib, json, sys\n"
            f"for m in {imports!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('fvdm', 'benchmarks'))))")
    return fresh(code)


def test_every_module_imports_in_a_fresh_interpreter():
    mods = all_modules()
    assert len(mods) > 60 and "fvdm.core.build" in mods and "fvdm.bench.runner" in mods
    code = ("import importlib, json\nbad = {}\n"
            f"for m in {mods!r}:\n"
            "    try: importlib.import_module(m)\n"
            "    except Exception as e: bad[m] = f'{type(e).__name__}: {e}'\n"
            "print(json.dumps(bad))")
    assert fresh(code) == {}


def test_core_imports_no_plugin_task_or_benchmark_module():
    core = [m for m in all_modules() if m == "fvdm.core" or m.startswith("fvdm.core.")]
    loaded = loaded_after(core)
    assert "fvdm.core.engine" in loaded  # the check saw the whole of core
    outside = [m for m in loaded if m.split(".")[0] == "benchmarks"
               or m.startswith(("fvdm.plugins", "fvdm.tasks", "fvdm.bench", "fvdm.commands", "fvdm.cli"))]
    assert outside == []


def test_cli_imports_no_benchmark_module_until_bench_runs():
    cli = [m for m in all_modules() if m.startswith("fvdm.commands") or m == "fvdm.cli"]
    loaded = loaded_after(cli)
    assert [m for m in loaded if m.split(".")[0] == "benchmarks" or m.startswith("fvdm.bench")] == []


def _imports(module: str, path: Path, known: set[str], nested: bool) -> set[str]:
    """fvdm modules that ``module`` imports: at module level only, or (``nested``) anywhere in it,
    function bodies included. ``if TYPE_CHECKING:`` blocks never count."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names if a.name in known)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    out.add(sub if sub in known else base)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            elif nested or isinstance(node, (ast.If, ast.Try)):
                visit([c for c in ast.iter_child_nodes(node) if isinstance(c, ast.stmt)]
                      + [s for h in getattr(node, "handlers", []) for s in h.body])

    visit(tree.body)
    return {m for m in out if m in known and m != module}


def _import_graph(nested: bool) -> dict[str, set[str]]:
    files = {}
    for m in all_modules():
        rel = Path(*m.split(".")[1:])
        files[m] = ROOT / rel / "__init__.py" if (ROOT / rel / "__init__.py").is_file() else ROOT / f"{rel}.py"
    known = set(files)
    graph = {m: _imports(m, p, known, nested) for m, p in files.items()}
    # A package's __init__ importing its own submodules is how packages re-export, not a cycle.
    return {m: {d for d in deps if not d.startswith(m + ".") and not m.startswith(d + ".")}
            for m, deps in graph.items()}


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def dfs(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                dfs(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m)
    return cycles


def test_module_level_imports_have_no_cycle():
    assert _cycles(_import_graph(nested=False)) == []


def test_core_modules_import_each_other_without_a_cycle_even_inside_functions():
    # a function-level import hides a cycle from the interpreter, not from the reader (checkpoint <-> engine)
    graph = _import_graph(nested=True)
    core = {m: {d for d in deps if d.startswith("fvdm.core")} for m, deps in graph.items() if m.startswith("fvdm.core")}
    assert "fvdm.core.build" in core["fvdm.core.checkpoint"]
    assert _cycles(core) == []
