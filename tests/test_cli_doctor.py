"""``d2seg doctor`` reports what is installed and fails loudly when something is broken."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys

import pytest

from d2seg.runners import diagnostics
from d2seg.cli.main import main


@pytest.mark.slow
def test_doctor_reports_pytorch_ops_and_a_passing_self_check():
    proc = subprocess.run([sys.executable, "-m", "d2seg.cli.main", "doctor"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert importlib.metadata.version("torch") in out
    assert importlib.metadata.version("detectron2") in out
    assert "PyTorch (d2seg.compat" in out
    try:  # the panoptic PNG decoder line names what is really installed
        expected = f"Wuffs (pywuffs {importlib.metadata.version('pywuffs')})"
    except importlib.metadata.PackageNotFoundError:
        expected = "OpenCV (pip install 'd2seg[fast]'"
    assert re.search(rf"^panoptic PNGs +{re.escape(expected)}", out, re.M), out
    backends = re.search(r"^export backends +(.*)$", out, re.M)
    assert backends and f"onnxruntime: onnxruntime {importlib.metadata.version('onnxruntime')}" \
        in backends.group(1)
    for stage in ("imports", "operators", "Mask R-CNN"):
        assert f"self-check ok   {stage}" in out
    assert "Traceback" not in proc.stderr


def test_doctor_exits_nonzero_with_one_line_when_detectron2_is_unusable(monkeypatch, capsys):
    monkeypatch.setattr(diagnostics, "detectron2_ops", lambda: "missing (No module named 'detectron2')")
    assert main(["doctor", "--no-self-check"]) == 1
    out = capsys.readouterr().out
    assert "error: detectron2 is not usable; run `d2seg setup`" in out


def test_doctor_exits_nonzero_when_the_self_check_fails(monkeypatch, capsys):
    monkeypatch.setattr(diagnostics, "_check_ops", lambda: (_ for _ in ()).throw(RuntimeError("nms is wrong")))
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "self-check FAIL operators" in out and "nms is wrong" in out
    assert "Mask R-CNN" not in out  # stops at the first failing stage


def test_versions_match_installed_distributions():
    found = diagnostics.versions()
    for label in ("torch", "torchvision", "numpy", "pycocotools"):
        assert found[label] == importlib.metadata.version(diagnostics.PACKAGES[label])


def test_deploy_backends_report_the_installed_versions(monkeypatch):
    """Each export backend shows its distribution's installed version; one that is missing
    shows its install command instead."""
    found = diagnostics.deploy_backends()
    from d2seg.deploy import BACKEND_PACKAGES

    for backend, (dist, _, _) in BACKEND_PACKAGES.items():
        assert found[backend] == f"{dist} {importlib.metadata.version(dist)}"
    real = importlib.metadata.version

    def without_openvino(dist):
        if dist == "openvino":
            raise importlib.metadata.PackageNotFoundError(dist)
        return real(dist)

    monkeypatch.setattr(importlib.metadata, "version", without_openvino)
    assert diagnostics.deploy_backends()["openvino"] == \
        "not installed (pip install 'd2seg[openvino]')"
