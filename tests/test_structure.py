"""Layering: every module imports, imports form no cycle, imports point down only, long modules say why.

    fvdm.commands / fvdm.cli  ->  fvdm.bench, fvdm.tasks, fvdm.plugins  ->  fvdm.core

core never imports a plugin, task or benchmark module (the plugin manager imports them by
name when it loads them); the CLI imports a benchmark module only when `fvdm bench` runs.
No two modules import each other, not even through imports inside functions: a function-level
import hides a cycle from the interpreter, not from the reader.
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


# -- the import graph, read from the source (nothing is imported) ------------------------------------
def module_files(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package at ``root`` -> its file (a package is its ``__init__.py``); as
    ``pkgutil.walk_packages``, a folder without ``__init__.py`` is no package and is left out."""
    files = {}
    for path in sorted(root.rglob("*.py")):
        folders = [d for d in [path.parent, *path.parent.parents] if d.is_relative_to(root)]
        if not all((d / "__init__.py").is_file() for d in folders):
            continue
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imports_of(module: str, path: Path, known: set[str], nested: bool) -> set[str]:
    """The modules of ``known`` that ``module`` imports: at import time only (module level, class bodies,
    ``if``/``try``/``with`` blocks), or with ``nested`` anywhere, function bodies included.

    ``import a.b.c`` and ``from a.b import c`` (c a submodule) import ``a.b.c``; ``from a.b import name``
    imports ``a.b``; either also runs the ``__init__`` of every package above (``a``, ``a.b``). Relative
    imports resolve against the module's package. ``if TYPE_CHECKING:`` bodies never run, so never count;
    ``importlib.import_module(name)`` is not followed (that is how the plugin manager loads plugins by name).
    """
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()

    def add(name: str) -> None:
        parts = name.split(".")
        out.update(m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if m in known)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            children: list[ast.AST] = list(node.orelse)
        elif not nested and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            children = list(getattr(node, "decorator_list", []))  # decorators run at import time, bodies do not
        else:
            children = list(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if sub in known else base)
        for child in children:
            visit(child)

    visit(tree)
    return out - {module}


def import_graph(root: Path, package: str, nested: bool) -> dict[str, set[str]]:
    """module -> the package's modules it imports (see ``imports_of``)."""
    files = module_files(root, package)
    graph = {m: imports_of(m, p, set(files), nested) for m, p in files.items()}
    # A package's __init__ importing its own submodules is how packages re-export, and a submodule
    # running its parent's __init__ is how Python imports it: neither is a cycle.
    return {m: {d for d in deps if not d.startswith(m + ".") and not m.startswith(d + ".")}
            for m, deps in graph.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[str]:
    """One cycle ``a -> b -> a`` for each group of modules that import each other (Tarjan's strongly
    connected components, so every circle is reported, however many modules it runs through)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = {stack.pop()}
            while v not in group:  # v's component is everything above it on the stack
                group.add(stack.pop())
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(" -> ".join(path_back(min(g), graph, g)) for g in groups)


def path_back(start: str, graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest import path from ``start`` back to itself inside ``group`` (breadth first)."""
    came = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & group):
            if w == start:
                path = [v]
                while came[path[-1]] is not None:
                    path.append(came[path[-1]])
                return [*reversed(path), start]  # path ran back from v to start
            if w not in came:
                came[w] = v
                queue.append(w)
    raise AssertionError(f"{start} is in a cycle group but no path leads back to it")


def write_package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_the_cycle_check_finds_a_cycle_hidden_in_functions_and_resolves_every_import_form(tmp_path):
    pkg = write_package(tmp_path / "fake", {
        "__init__.py": "",
        "a.py": "def f():\n    from fake import b  # a submodule, imported from its package\n",
        "b.py": "from . import c\n",
        "c.py": "class K:\n    def m(self):\n        import fake.a as a\n",
        "sub/__init__.py": "from .d import NAME\n",
        "sub/d.py": ("from typing import TYPE_CHECKING\nfrom .. import a\nfrom ..b import name\nimport fake.sub.e\n"
                     "if TYPE_CHECKING:\n    from fake import c\nNAME = 1\n"),
        "sub/e.py": "",
        "x.py": "import fake.sub.e\nwith open(__file__):\n    from fake.sub import d\n",
    })
    flat, nested = import_graph(pkg, "fake", nested=False), import_graph(pkg, "fake", nested=True)
    assert set(flat) == {"fake", "fake.a", "fake.b", "fake.c", "fake.sub", "fake.sub.d", "fake.sub.e", "fake.x"}
    assert flat["fake.a"] == set() and nested["fake.a"] == {"fake.b"}
    assert flat["fake.b"] == {"fake.c"}
    assert flat["fake.c"] == set() and nested["fake.c"] == {"fake.a"}
    assert flat["fake.sub.d"] == {"fake.a", "fake.b", "fake.sub.e"}  # not c: TYPE_CHECKING never runs
    assert flat["fake.x"] == {"fake.sub", "fake.sub.d", "fake.sub.e"}  # the __init__ above runs too
    assert flat["fake.sub"] == set()  # a package re-exporting its submodule
    assert find_cycles(flat) == []
    assert find_cycles(nested) == ["fake.a -> fake.b -> fake.c -> fake.a"]
    assert find_cycles({"p": {"q"}, "q": {"p", "r"}, "r": {"s"}, "s": {"r"}}) == ["p -> q -> p", "r -> s -> r"]


def test_the_graph_sees_every_module_and_the_imports_inside_functions():
    graph = import_graph(ROOT, "fvdm", nested=True)
    assert set(graph) == set(all_modules())
    assert "fvdm.plugins.datasets.pack" in graph["fvdm.commands.data"]  # imported inside a function
    assert "fvdm.plugins.datasets.pack" not in import_graph(ROOT, "fvdm", nested=False)["fvdm.commands.data"]


LAYERS = ("fvdm.core", "fvdm.tasks", "fvdm.plugins", "fvdm.bench", "fvdm.commands", "fvdm.cli")


def upward_imports(graph: dict[str, set[str]], low: str = "fvdm.core") -> list[str]:
    """``a -> b`` for every module of ``low`` that imports a module of a layer above it (any later entry of
    ``LAYERS``), at import time or inside a function: core imports nothing above it."""
    def layer(m: str) -> int:
        return next((i for i, p in enumerate(LAYERS) if m == p or m.startswith(p + ".")), -1)

    return sorted(f"{a} -> {b}" for a, deps in graph.items() if a == low or a.startswith(low + ".")
                  for b in deps if layer(b) > layer(a))


def test_core_imports_nothing_above_it_even_inside_functions():
    assert upward_imports(import_graph(ROOT, "fvdm", nested=True)) == []


def test_the_layer_check_finds_an_upward_import_inside_a_function(tmp_path):
    pkg = write_package(tmp_path / "fvdm", {
        "__init__.py": "", "core/__init__.py": "", "tasks/__init__.py": "", "tasks/t.py": "",
        "core/ok.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fvdm.tasks import t\n",
        "core/bad.py": "def f():\n    from fvdm.tasks.t import run  # function level: the sys.modules check misses it\n",
    })
    # the import runs the tasks package's __init__ too: two arrows up
    assert upward_imports(import_graph(pkg, "fvdm", nested=True)) == ["fvdm.core.bad -> fvdm.tasks",
                                                                     "fvdm.core.bad -> fvdm.tasks.t"]
    assert upward_imports(import_graph(pkg, "fvdm", nested=False)) == []


def test_module_level_imports_have_no_cycle():
    assert find_cycles(import_graph(ROOT, "fvdm", nested=False)) == []


def test_no_two_modules_import_each_other_even_inside_functions():
    # the whole package: core's checkpoint <-> engine and datasets' pack <-> webdataset_reader were such circles
    assert find_cycles(import_graph(ROOT, "fvdm", nested=True)) == []


# -- long modules ------------------------------------------------------------------------------------
LONG_LINES = 500
# A long module's docstring carries a sentence such as "This file is over 500 lines because ...".
WHY_LONG = "over 500 lines because"


def unexplained_long_modules(root: Path) -> list[str]:
    """Files under ``root`` over ``LONG_LINES`` lines whose module docstring has no "over 500 lines because"."""
    out = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        doc = " ".join((ast.get_docstring(ast.parse(text, str(path))) or "").split())  # a wrapped sentence reads whole
        if len(text.splitlines()) > LONG_LINES and WHY_LONG not in doc:
            out.append(f"{path.relative_to(root).as_posix()} ({len(text.splitlines())} lines)")
    return out


def test_the_long_module_check_flags_only_long_files_that_do_not_say_why(tmp_path):
    body = "x = 1\n" * LONG_LINES
    write_package(tmp_path, {
        "short.py": '"""Short."""\n' + "x = 1\n" * (LONG_LINES - 1),  # exactly 500 lines
        "long.py": '"""Long."""\n' + body,
        "said.py": '"""Long. This file is over 500\nlines because it is one algorithm."""\n' + body,
        "comment.py": "# over 500 lines because: not a docstring\n" + body,
    })
    assert unexplained_long_modules(tmp_path) == ["comment.py (501 lines)", "long.py (501 lines)"]


def test_no_module_is_over_500_lines_without_saying_why():
    flagged = unexplained_long_modules(ROOT)
    assert not flagged, f"split {flagged}, or say why in a docstring sentence '... {WHY_LONG} ...'"
