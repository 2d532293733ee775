"""The names ``import d2seg`` offers: each resolves to the object in its home module, each says
what it does, and the torch-free ones load without importing torch or detectron2 (``d2seg eval``
and drawing start in a fraction of a second because of it)."""

import importlib
import inspect
import subprocess
import sys

import d2seg

#: Names that must stay usable where torch is slow to import or absent (evaluation, drawing,
#: manifests, dataset registration is lazy). Adding torch to one of their imports fails here.
TORCH_FREE = ("D2SegError", "find_manifest", "load_manifest", "register_datasets",
              "evaluate_coco", "pq_compute_folders", "semantic_metrics", "export_coco_panoptic",
              "draw_instances", "draw_panoptic", "draw_semantic", "side_by_side")


def test_every_export_resolves_to_its_home_module():
    for name, module in d2seg._EXPORTS.items():
        assert getattr(d2seg, name) is getattr(importlib.import_module(module), name), name


def test_every_export_has_a_docstring():
    missing = [n for n in d2seg._EXPORTS if not inspect.getdoc(getattr(d2seg, n))]
    assert missing == []


def test_unknown_name_is_an_attribute_error():
    try:
        d2seg.no_such_name  # noqa: B018
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("d2seg.no_such_name resolved")


def test_torch_free_names_import_neither_torch_nor_detectron2():
    assert set(TORCH_FREE) <= set(d2seg._EXPORTS)
    code = ("import sys, d2seg\n"
            f"for n in {TORCH_FREE!r}: getattr(d2seg, n)\n"
            "heavy = sorted({'torch', 'detectron2'} & set(sys.modules))\n"
            "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_installer_path_imports_nothing_heavy():
    code = ("import sys, d2seg.compat.installer; bad = {'torch', 'detectron2', 'numpy'} & "
            "set(sys.modules); assert not bad, bad")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
