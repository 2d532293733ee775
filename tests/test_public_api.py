"""Every name d2seg's package advertises resolves to the object in its home module."""

import importlib

import d2seg


def test_every_export_resolves_to_its_home_module():
    for name, module in d2seg._EXPORTS.items():
        assert getattr(d2seg, name) is getattr(importlib.import_module(module), name), name


def test_installer_path_imports_nothing_heavy():
    import subprocess
    import sys

    code = "import sys, d2seg.compat.installer; bad = {'torch', 'detectron2', 'numpy'} & set(sys.modules); assert not bad, bad"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
