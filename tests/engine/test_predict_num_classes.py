"""A config that leaves the class count to the data (``NUM_CLASSES: 0``) used without
``--dataset``: ``d2seg predict`` and ``d2seg export`` end with one error line saying so (before
this check, predict crashed in detectron2 with "cannot reshape tensor of 0 elements")."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from d2seg.cli.main import main

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs/instance/mask_rcnn_MNV2_FPN_cpu_quick.yaml")


@pytest.mark.parametrize("command", ["predict", "export"])
def test_no_dataset_for_a_class_count_from_the_data(command, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.png"), np.full((60, 80, 3), 128, np.uint8))
    args = ([command, str(photos)] if command == "predict" else [command, "--format", "onnx"])
    code = main(args + ["--config-file", CONFIG, "--weights", "imagenet:mobilenet_v2",
                        "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "MODEL.ROI_HEADS.NUM_CLASSES" in err and "class count comes from the training data" in err
    assert "--dataset NAME" in err
