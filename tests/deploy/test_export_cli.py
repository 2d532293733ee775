"""``d2seg export``'s command line: tools/export.py runs it, and a model it cannot export yet
(not a Mask R-CNN) is one error line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from d2seg.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def test_tools_script_runs_the_cli():
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "export.py"), "--help"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0 and "--format" in proc.stdout and "--out" in proc.stdout


def test_a_semantic_model_is_refused(tmp_path, capsys):
    code = main(["export", "--config-file", str(REPO / "configs/semantic/fcn_MNV2_cpu_quick.yaml"),
                 "--weights", "imagenet:mobilenet_v2", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "Mask R-CNN" in err and "MODEL.META_ARCHITECTURE" in err
    assert not (tmp_path / "out").exists()
