"""The codebase's own rules, checked on its source: one owner for a run directory's files, no
import circle inside ``roadmap/``, no function over 60 lines, model code free of Hydra."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "roadmap"
RUN_FILES = ("metrics.json", "last.pt", "epochs.jsonl", "config.json")
OWNER = PACKAGE / "rundir.py"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking_only(node: ast.AST) -> set[int]:
    """Line numbers of the imports under ``if TYPE_CHECKING:`` (they never run)."""
    lines = set()
    for child in ast.walk(node):
        if isinstance(child, ast.If) and getattr(child.test, "id", None) == "TYPE_CHECKING":
            lines |= {n.lineno for b in child.body for n in ast.walk(b) if hasattr(n, "lineno")}
    return lines


def imported(path: Path) -> set[str]:
    """The ``roadmap`` modules a file imports, wherever the import sits (functions too)."""
    tree = ast.parse(path.read_text())
    skip, found = _type_checking_only(tree), set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in MODULES}
        elif isinstance(node, ast.ImportFrom) and node.module in MODULES:
            subs = {f"{node.module}.{a.name}" for a in node.names}
            found |= (subs & set(MODULES)) or {node.module}
    return found


def test_only_the_run_directory_owner_spells_its_files():
    spelled = [f"{p.relative_to(PACKAGE.parent)}: {name}" for p in PACKAGE.rglob("*.py")
               if p != OWNER for name in RUN_FILES if name in p.read_text()]
    assert not spelled, spelled


def test_no_import_circle():
    graph = {name: imported(path) - {name} for name, path in MODULES.items()}
    circles = []

    def visit(name: str, path: list[str]) -> None:
        for nxt in sorted(graph[name]):
            if nxt in path:
                circles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in done:
                visit(nxt, [*path, nxt])
        done.add(name)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name])
    assert not circles, [" -> ".join(c) for c in circles]


def test_the_import_graph_sees_imports():
    """The checks above read real edges (not an empty graph that passes by default)."""
    assert "roadmap.rundir" in imported(MODULES["roadmap.results.collect"])
    assert "roadmap.schema" in imported(MODULES["roadmap.conf"])
    assert "roadmap.schema" not in imported(MODULES["roadmap.train.data"])  # TYPE_CHECKING only


def test_no_function_over_60_lines():
    long = [f"{p.relative_to(PACKAGE.parent)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1})"
            for p in PACKAGE.rglob("*.py") for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.end_lineno - n.lineno + 1 > 60]
    assert not long, long


def test_model_code_never_imports_hydra():
    models = [p for p in (PACKAGE / "models").rglob("*.py")]
    assert models and not [p for p in models if "hydra" in p.read_text()]
