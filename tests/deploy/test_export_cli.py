"""``d2seg export``'s command line: tools/export.py runs it; a model it cannot export (a
detector without masks) and a missing onnx package are one error line each; so are
``d2seg predict``'s --backend/--task without --model; without --dataset the classes come from
the config's training dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from d2seg.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def test_tools_script_runs_the_cli():
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "export.py"), "--help"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0 and "--format" in proc.stdout and "--out" in proc.stdout


def test_a_detector_without_masks_is_refused(tmp_path, capsys):
    code = main(["export", "--config-file",
                 str(REPO / "configs/instance/mask_rcnn_MNV2_FPN_cpu_quick.yaml"),
                 "--weights", "imagenet:mobilenet_v2", "--out", str(tmp_path / "out"),
                 "--opts", "MODEL.MASK_ON", "False", "MODEL.ROI_HEADS.NUM_CLASSES", "3"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "GeneralizedRCNN without masks" in err and "MODEL.META_ARCHITECTURE" in err
    assert not (tmp_path / "out").exists()


def test_onnx_not_installed(tmp_path):
    code = ("import sys; sys.modules['onnx'] = None\n"
            "from d2seg.cli.main import main\n"
            "sys.exit(main(['export', '--config-file', "
            f"{str(REPO / 'configs/instance/mask_rcnn_MNV2_FPN_cpu_quick.yaml')!r}, "
            "'--weights', 'imagenet:mobilenet_v2', '--dataset', 'demo_instances_train', "
            f"'--out', {str(tmp_path / 'out')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    err = proc.stderr.strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1, err
    assert "onnx package is not installed" in err and "pip install onnx" in err


def test_backend_and_task_need_an_exported_model(tmp_path, capsys):
    for flag, value in (("--backend", "openvino"), ("--task", "semantic")):
        code = main(["predict", str(tmp_path), "--config-file",
                     str(REPO / "configs/instance/mask_rcnn_MNV2_FPN_cpu_quick.yaml"),
                     "--weights", "w.pth", flag, value])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
        assert flag in err and "--model DIR" in err


def test_classes_from_the_configs_training_dataset(tmp_path):
    """No --dataset, the class count set in the config: model.json names the classes and
    category ids of the config's training dataset (demo_instances_train), as pycocotools reads
    them from its annotation file, and the threshold given by --min-score."""
    from pycocotools.coco import COCO

    from d2seg.data.demo import ensure_demo

    code = main(["export", "--config-file",
                 str(REPO / "configs/instance/mask_rcnn_MNV2_FPN_cpu_quick.yaml"),
                 "--weights", "imagenet:mobilenet_v2", "--out", str(tmp_path / "out"),
                 "--no-check", "--min-score", "0.25",
                 "--opts", "MODEL.ROI_HEADS.NUM_CLASSES", "4"])
    assert code == 0
    meta = json.loads((tmp_path / "out" / "model.json").read_text())
    coco = COCO(str(ensure_demo() / "train" / "instances.json"))
    ids = sorted(coco.getCatIds())
    assert meta["classes"]["category_ids"] == ids
    assert meta["classes"]["names"] == [c["name"] for c in coco.loadCats(ids)]
    assert meta["dataset"] == "demo_instances_train" and meta["score_thresh"] == 0.25
