"""Code-layout limits of the package: file and function length, no import cycle, every module imports.

Planted faults this catches: a 601-line module, an 81-line function, ``leansam.registry`` importing
``leansam.checkpoints`` at module level (a cycle through ``leansam.checkpoints``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "leansam"
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80
#: Modules over a limit that are being rewritten elsewhere: expected to fail (strict xfail), so the
#: entry must go as soon as the module keeps the limits.
OVER_LIMIT = {
    "leansam/data/synth.py": "829 lines (training data, being edited for training)",
    "leansam/train/runner.py": "fit() 111 lines (being edited for training)",
}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def long_functions(tree: ast.AST, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int]]:
    """(name, lines) of every function or method longer than ``limit`` lines (decorators excluded)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            n = node.end_lineno - node.lineno + 1
            if n > limit:
                out.append((node.name, n))
    return out


def module_imports(path: Path) -> set[str]:
    """``leansam`` modules imported at module level (not inside functions or TYPE_CHECKING blocks)."""
    tree = ast.parse(path.read_text())
    me = _name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node) if not isinstance(node, ast.FunctionDef | ast.ClassDef) else []:
            if isinstance(sub, ast.Import):
                found |= {a.name for a in sub.names if a.name.startswith("leansam")}
            elif isinstance(sub, ast.ImportFrom):
                if sub.level:
                    base = package.split(".")[: len(package.split(".")) - sub.level + 1]
                    mod = ".".join(base + ([sub.module] if sub.module else []))
                else:
                    mod = sub.module or ""
                if mod.startswith("leansam"):
                    found.add(mod)
                    found |= {f"{mod}.{a.name}" for a in sub.names}
    return found


def import_cycles(modules: dict[str, set[str]]) -> list[list[str]]:
    """Cycles in the module-level import graph (edges only between modules that exist)."""
    graph = {m: sorted(d for d in deps if d in modules and d != m) for m, deps in modules.items()}
    cycles, state, stack = [], {}, []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in graph[m]:
            if state.get(d) == 1:
                cycles.append([*stack[stack.index(d) :], d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return cycles


def _length_cases() -> list:
    cases = []
    for p in _modules():
        rel = str(p.relative_to(PACKAGE.parent))
        marks = [pytest.mark.xfail(reason=OVER_LIMIT[rel], strict=True)] if rel in OVER_LIMIT else []
        cases.append(pytest.param(p, id=rel, marks=marks))
    return cases


@pytest.mark.parametrize("path", _length_cases())
def test_file_and_function_length(path):
    lines = path.read_text().count("\n")
    assert lines <= MAX_FILE_LINES, f"{path} has {lines} lines (limit {MAX_FILE_LINES})"
    assert long_functions(ast.parse(path.read_text())) == []


def test_no_import_cycle():
    graph = {_name(p): module_imports(p) for p in _modules()}
    # A package's __init__ importing its own submodules is not a cycle of the package's code.
    for m in graph:
        graph[m] = {d for d in graph[m] if not (m.startswith(d + ".") and d in graph)}
    assert import_cycles(graph) == []


def test_every_module_imports_in_a_fresh_interpreter():
    names = [_name(p) for p in _modules() if not p.name.startswith("__main__")]
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\n"
    proc = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_the_checks_catch_planted_faults():
    long = "def f():\n" + "    x = 1\n" * 81
    assert long_functions(ast.parse(long)) == [("f", 82)]
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []
