"""The layout of ``scripts/``: rooms by stage, dependencies pointing one way, small modules, a module map that matches.

The import graph is read from the source (``ast``), imports inside functions included: a function-level import hides
a circle from Python, not from a reader. Each room's ``__init__.py`` declares the rooms it may import on a line
``May import: scripts.a, scripts.b.`` (or ``nothing of the project``); the tests hold the code to it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("scripts", "benchmarks")
MAX_LINES = 420  # "about 400"
MAX_MODULES = 8


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _project_imports(name: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported project module, line, inside a function) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def resolve(target: str) -> str | None:
        while target and target not in MODULES:  # `from a.b import c`: c may be a module or a symbol of a.b
            target = target.rpartition(".")[0]
        return target or None

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            targets = []
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" for alias in child.names]
            for target in targets:
                module = resolve(target)
                if module and module != name:
                    found.append((module, child.lineno, in_function))
            visit(child, inner)

    visit(tree, False)
    return found


GRAPH = {name: _project_imports(name, path) for name, path in MODULES.items()}


def _room(module: str) -> str | None:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "scripts" and len(parts) >= 2 else None


def _rooms() -> dict[str, set[str]]:
    """Each room of scripts/ -> the rooms its __init__ says it may import."""
    rooms = {}
    for init in sorted((ROOT / "scripts").glob("*/__init__.py")):
        room = f"scripts.{init.parent.name}"
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        line = re.search(r"^May import: (.+?)\.?$", doc, re.M)
        assert line, f"{init}: its docstring has no 'May import:' line"
        allowed = set() if "nothing" in line.group(1) else {r.strip() for r in line.group(1).split(",")}
        rooms[room] = allowed
    return rooms


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected sets of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    graph = {name: {m for m, _, _ in imports} for name, imports in GRAPH.items()}
    assert _circles(graph) == []


def test_the_checks_see_a_circle_and_an_import_inside_a_function(tmp_path):
    assert _circles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    module = tmp_path / "files.py"
    module.write_text("from scripts.io.errors import InputError\n\ndef f():\n    from scripts.io import image_io\n")
    found = _project_imports("scripts.io.files", module)
    assert found == [("scripts.io.errors", 1, False), ("scripts.io.image_io", 4, True)]


def test_every_room_imports_only_what_it_declares():
    rooms = _rooms()
    assert set(rooms) == {_room(m) for m in MODULES if _room(m)}
    wrong = []
    for name, imports in GRAPH.items():
        room = _room(name)
        if room is None:
            continue  # benchmarks/ sit on top and may import any room
        for module, line, _ in imports:
            target = _room(module)
            if target and target != room and target not in rooms[room]:
                wrong.append(f"{MODULES[name].relative_to(ROOT)}:{line} imports {module} ({room} may not)")
    assert not wrong, "\n".join(wrong)


def test_the_declared_rooms_point_one_way():
    rooms = _rooms()
    assert _circles(rooms) == [], "the rooms' 'May import:' lines form a circle"
    for room, allowed in rooms.items():
        assert allowed <= set(rooms), f"{room} declares unknown rooms {sorted(allowed - set(rooms))}"


def test_function_level_imports_only_defer_a_heavy_dependency():
    hidden = []
    for name, imports in GRAPH.items():
        lines = MODULES[name].read_text(encoding="utf-8").splitlines()
        for module, line, in_function in imports:
            said = " ".join(lines[max(0, line - 2) : line]).lower()
            if in_function and "deferred:" not in said:
                hidden.append(f"{MODULES[name].relative_to(ROOT)}:{line} imports {module} inside a function")
    assert not hidden, "\n".join(hidden)


def test_modules_and_rooms_stay_small():
    lines = {p: len(p.read_text(encoding="utf-8").splitlines()) for p in MODULES.values()}
    big = [f"{p.relative_to(ROOT)} ({n} lines)" for p, n in lines.items() if n > MAX_LINES]
    assert not big, big
    for room in (ROOT / "scripts").iterdir():
        if room.is_dir() and (room / "__init__.py").is_file():
            modules = [p for p in room.glob("*.py") if p.name != "__init__.py"]
            assert len(modules) <= MAX_MODULES, f"{room.name}/ holds {len(modules)} modules"
    assert not list((ROOT / "scripts").glob("[!_]*.py")), "every module of scripts/ lives in a room"


@pytest.mark.parametrize("folder", ["scripts", "benchmarks"])
def test_the_module_map_in_the_docs_matches_the_tree(folder):
    doc = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    section = doc[doc.index("## Bundle layout") : doc.index("\n## ", doc.index("## Bundle layout") + 5)]
    mapped = set(re.findall(rf"`({folder}/[\w/]+\.py)`", section))
    tree = {str(p.relative_to(ROOT)) for p in (ROOT / folder).rglob("*.py") if p.name != "__init__.py"}
    assert mapped - tree == set(), f"the module map names modules that do not exist: {sorted(mapped - tree)}"
    assert tree - mapped == set(), f"modules missing from the module map in docs/README.md: {sorted(tree - mapped)}"
