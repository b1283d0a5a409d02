"""The package layout: no import cycle inside cloudml/, light entry points, one command table.

- Import graph: every module under cloudml/ is parsed with `ast`; its module-level imports
  of cloudml modules (those that run when it is imported, so not the lazy ones inside
  functions, nor `if TYPE_CHECKING:` blocks) are the edges. `from cloudml.x import y` is an
  edge to cloudml.x.y when y is a module, else to cloudml.x. There must be no cycle.
- `import cloudml.gate` and `cloudml --help` stay light: checked in a fresh interpreter by
  what lands in sys.modules, not by wall time.
- cloudml/cli.py's COMMANDS table agrees with what each module's add_command defines.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cloudml import cli

REPO = Path(__file__).resolve().parents[1]


# --- the import graph ----------------------------------------------------------------------
def module_name(path: Path, root: Path) -> str:
    """Dotted module name of a .py file under `root` (the directory holding the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level(body: list[ast.stmt]):
    """The import statements that run on import: top level, and inside top-level
    if/try/with blocks, but not in functions, classes or `if TYPE_CHECKING:`."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _module_level(node.body)
            yield from _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _module_level(block)
            for handler in node.handlers:
                yield from _module_level(handler.body)
        elif isinstance(node, ast.With):
            yield from _module_level(node.body)


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """module -> the modules of `package` it imports at module level (see the docstring)."""
    files = sorted((root / package).rglob("*.py"))
    modules = {module_name(p, root): p for p in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        edges: set[str] = set()
        for node in _module_level(ast.parse(path.read_text(), str(path)).body):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative: from the package holding this module
                    anchor = name.split(".")
                    anchor = anchor if is_pkg else anchor[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    for a in node.names
                ]
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None when it is acyclic."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in on_path:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in done:
                found = visit(nxt)
                if found:
                    return found
        on_path.discard(path.pop())
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            found = visit(start)
            if found:
                return found
    return None


def test_find_cycle_names_the_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) is None
    assert find_cycle({"x": {"x"}}) == ["x", "x"]


def test_import_graph_sees_a_cycle_in_a_tiny_package(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from .. import c\nimport json\n")
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import pkg.a\n"
        "def lazy():\n    import pkg.a\n"
    )
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.c"}
    assert graph["pkg.c"] == set()  # lazy and TYPE_CHECKING imports are not edges
    assert find_cycle(graph) is None
    (pkg / "c.py").write_text("import pkg.a\n")
    assert find_cycle(import_graph(tmp_path, "pkg")) == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]


def test_no_import_cycle_inside_cloudml() -> None:
    graph = import_graph(REPO, "cloudml")
    assert "cloudml.cli" in graph and "cloudml.gate" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle inside cloudml/: " + " -> ".join(cycle or [])


# --- light entry points --------------------------------------------------------------------
def _loaded_after(code: str) -> dict[str, bool]:
    """Run `code` in a fresh interpreter; which of torch / kfp it left in sys.modules."""
    probe = (
        f"{code}\nimport json, sys\n"
        "print(json.dumps({m: m in sys.modules for m in ('torch', 'kfp')}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_import_gate_does_not_load_torch() -> None:
    assert _loaded_after("import cloudml.gate")["torch"] is False


@pytest.mark.parametrize("argv", [["--help"], ["gate", "--help"]], ids=" ".join)
def test_cli_help_loads_neither_torch_nor_kfp(argv: list[str]) -> None:
    code = (
        "from cloudml.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit as e:\n    assert e.code == 0, e.code"
    )
    assert _loaded_after(code) == {"torch": False, "kfp": False}


def test_cli_help_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cloudml", "--help"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    for name in cli.COMMANDS:
        assert f"    {name} " in out.stdout, name


# --- the command table ---------------------------------------------------------------------
def test_command_table_matches_each_module() -> None:
    """Each module named in COMMANDS adds exactly the commands the table gives it, with the
    same help line (what `cloudml --help` shows is what the module's parser says)."""
    modules: dict[str, dict[str, str]] = {}
    for name, cmd in cli.COMMANDS.items():
        modules.setdefault(cmd.module, {})[name] = cmd.help
    for module, table in modules.items():
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module).add_command(sub)
        helps = {a.dest: a.help for a in sub._choices_actions}
        assert helps == table, module
