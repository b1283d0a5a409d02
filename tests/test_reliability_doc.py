"""docs/reliability.md cannot rot: every test a table row names exists (module-level test
function, parametrize id present in the file), and every reliability test is in a table."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
REF = re.compile(r"(tests/test_\w+\.py)::(test_\w+)(?:\[([\w-]+)\])?")


def table_refs(text: str) -> list[tuple[str, str, str | None]]:
    """(file, test, param id or None) for each table row's last cell; a row without one is
    reported as ("", row, None)."""
    refs = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 3 or set(cells[-1]) <= set("-: "):
            continue
        if cells[-1] == "test":  # header row
            continue
        m = REF.fullmatch(cells[-1])
        refs.append((m.group(1), m.group(2), m.group(3)) if m else ("", line, None))
    return refs


def _module_info(path: Path) -> tuple[set[str], set[str]]:
    """(test functions defined at module level, every string constant in the file)."""
    tree = ast.parse(path.read_text(), str(path))
    funcs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    strings = {
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }
    return funcs, strings


def test_table_parser_finds_refs_and_flags_rows_without_one():
    text = (
        "| a | b | test |\n|---|---|---|\n"
        "| x | y | tests/test_a.py::test_b[c-d] |\n| x | y | see elsewhere |\n"
    )
    assert table_refs(text) == [
        ("tests/test_a.py", "test_b", "c-d"),
        ("", "| x | y | see elsewhere |", None),
    ]


def test_every_row_names_an_existing_test():
    refs = table_refs(DOC.read_text())
    assert len(refs) >= 60
    problems = []
    cache: dict[str, tuple[set[str], set[str]]] = {}
    for file, test, param in refs:
        if not file:
            problems.append(f"row without a test reference: {test}")
            continue
        path = ROOT / file
        if not path.is_file():
            problems.append(f"{file}: no such file")
            continue
        funcs, strings = cache.setdefault(file, _module_info(path))
        if test not in funcs:
            problems.append(f"{file}::{test}: no such test function")
        elif param is not None and param not in strings:
            problems.append(f"{file}::{test}[{param}]: no parameter {param!r} in the file")
    assert problems == []


def test_bad_input_catalogue_has_at_least_20_distinct_inputs():
    text = DOC.read_text()
    section = text.split("## Bad input", 1)[1].split("\n## ", 1)[0]
    refs = table_refs(section)
    assert len(refs) == len(set(refs)) >= 20


@pytest.mark.parametrize(
    "module",
    sorted(
        p.name
        for p in (ROOT / "tests").glob("test_reliability_*.py")
        if p.name != Path(__file__).name
    ),
)
def test_every_reliability_test_is_in_the_doc(module):
    named = {(f, t) for f, t, _ in table_refs(DOC.read_text())}
    funcs, _ = _module_info(ROOT / "tests" / module)
    missing = sorted(
        t for t in funcs if t.startswith("test_") and (f"tests/{module}", t) not in named
    )
    assert missing == []
