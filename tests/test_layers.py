"""Import layering of the d2seg package, read from the source with ``ast`` (imports at any
depth: module level, inside functions, inside ``try`` / ``if`` blocks)."""

import ast
from pathlib import Path

import d2seg

PACKAGE = Path(d2seg.__file__).parent
#: What d2seg.io, the bottom layer, may import from d2seg.
IO_ALLOWED = ("d2seg.errors", "d2seg.io")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Absolute names of everything ``source`` imports; ``from X import y`` counts as
    ``X.y`` (y may be a submodule), relative imports are resolved against ``module``."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep] + ([base] if base else []))
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def _d2seg_imports(path: Path) -> set[str]:
    names = imported_modules(path.read_text(encoding="utf-8"), _module_name(path),
                             path.name == "__init__.py")
    return {n for n in names if n == "d2seg" or n.startswith("d2seg.")}


def test_the_parser_sees_nested_and_relative_imports():
    """Hand-checked: imports in a function body, in try/if blocks and relative ones are found."""
    source = (
        "import os\n"
        "try:\n    from d2seg.data import images\nexcept ImportError:\n    pass\n"
        "def f():\n    if True:\n        from d2seg.visualize.render import draw\n"
        "    import d2seg.engine.run as run\n"
        "from . import json\nfrom .rle import to_rle\nfrom ..errors import D2SegError\n")
    assert imported_modules(source, "d2seg.io.panoptic") == {
        "os", "d2seg.data.images", "d2seg.visualize.render.draw", "d2seg.engine.run",
        "d2seg.io.json", "d2seg.io.rle.to_rle", "d2seg.errors.D2SegError"}
    assert imported_modules("from .rle import x", "d2seg.io", is_package=True) == {"d2seg.io.rle.x"}


def test_io_imports_only_errors_and_itself():
    """Every module under d2seg/io imports from d2seg only d2seg.errors and d2seg.io."""
    files = sorted((PACKAGE / "io").rglob("*.py"))
    assert files, "d2seg/io has no modules"
    bad = {}
    for path in files:
        wrong = sorted(n for n in _d2seg_imports(path)
                       if not any(n == a or n.startswith(a + ".") for a in IO_ALLOWED))
        if wrong:
            bad[str(path.relative_to(PACKAGE.parent))] = wrong
    assert bad == {}


def test_every_module_parses():
    """All of d2seg parses, so the check above cannot be skipped by a file ast cannot read."""
    for path in PACKAGE.rglob("*.py"):
        ast.parse(path.read_text(encoding="utf-8"))


# ------------------------------------------------------------------ the whole package's layers

#: d2seg's layers, bottom first (README, "Architecture"). A package may import packages of its
#: own layer or below, never above; within a layer the imports between packages form no cycle.
LAYERS = (
    ("errors", "io"),
    ("compat", "modeling", "data"),
    ("panoptic", "evaluation", "visualize", "classical", "analysis", "report"),
    ("config",),
    ("engine", "deploy"),
    ("runners", "label"),
    ("cli",),
)
RANK = {package: rank for rank, layer in enumerate(LAYERS) for package in layer}


def _package_of(module: str) -> str | None:
    """``d2seg.data.check`` -> ``data``; ``d2seg.errors`` -> ``errors``; ``d2seg`` -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "d2seg" else None


def package_imports() -> dict[tuple[str, str], list[str]]:
    """(importing package, imported package) -> the files where it happens, for every import of
    one d2seg package by another anywhere in the source (the root facade ``d2seg/__init__.py``,
    which loads names lazily for users, excepted)."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        source = _package_of(module)
        if source is None:
            continue
        for name in _d2seg_imports(path):
            target = _package_of(name)
            if target is not None and target != source:
                edges.setdefault((source, target), []).append(str(path.relative_to(PACKAGE.parent)))
    return edges


def find_cycle(edges) -> list[str] | None:
    """A cycle in the directed graph ``edges`` (pairs), as a list of nodes, or None."""
    graph: dict[str, set] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
            if state.get(nxt) is None:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if state.get(start) is None:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_find_cycle_on_hand_built_graphs():
    assert find_cycle([("a", "b"), ("b", "c")]) is None
    assert find_cycle([("a", "b"), ("b", "c"), ("c", "a")]) == ["a", "b", "c", "a"]
    assert find_cycle([("x", "y"), ("y", "x")]) == ["x", "y", "x"]


def test_every_package_has_a_layer():
    """A new package must be placed in LAYERS (and in the README's architecture section)."""
    found = {_package_of(_module_name(p)) for p in PACKAGE.rglob("*.py")} - {None}
    assert sorted(found - set(RANK)) == []


def test_no_package_imports_one_above_it():
    upward = {f"{a} -> {b}": files for (a, b), files in package_imports().items()
              if RANK.get(b, -1) > RANK.get(a, -1)}
    assert upward == {}


def test_package_imports_have_no_cycle():
    """No two packages depend on each other, directly or through others (imports inside
    functions count: a cycle hidden in a function body is still a cycle)."""
    assert find_cycle(package_imports()) is None


def test_no_private_name_is_imported_from_another_module():
    """``from d2seg.x import _name`` across modules: private helpers stay where they are."""
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("d2seg"):
                bad += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {a.name}"
                        for a in node.names if a.name.startswith("_") and a.name != "__version__"]
    assert bad == []
