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
