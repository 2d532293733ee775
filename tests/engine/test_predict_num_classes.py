"""A config that leaves the class count to the data (``NUM_CLASSES: 0``) used without
``--dataset``: ``d2seg predict`` and ``d2seg export`` end with one error line saying so (before
this check, predict crashed in detectron2 with "cannot reshape tensor of 0 elements")."""

from __future__ import annotations

from pathlib import Path

import json

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


def _predict(tmp_path, out: str, *extra) -> list[dict]:
    """results.json of predict with the config's class count set (4, the demo's), random heads
    from one seed, score threshold 0 (so there are detections)."""
    import torch

    torch.manual_seed(0)
    code = main(["predict", str(tmp_path / "photos"), "--config-file", CONFIG, "--weights",
                 "imagenet:mobilenet_v2", "--out", str(tmp_path / out), "--no-render", *extra,
                 "--opts", "MODEL.ROI_HEADS.NUM_CLASSES", "4", "MODEL.DEVICE", "cpu",
                 "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", *(
                     ["DATASETS.TRAIN", "('not_registered_here',)"] if "--dataset" not in extra
                     and out == "unregistered" else [])])
    assert code == 0
    return json.loads((tmp_path / out / "results.json").read_text())


def test_classes_come_from_the_configs_training_dataset(tmp_path, capsys):
    """Without ``--dataset``, a config whose class count is set and whose training dataset
    (demo_instances_train) is registered writes that dataset's category ids -- the results equal
    those of ``--dataset demo_instances_train`` --; with a training dataset that is not
    registered it writes class indices 0..3 and says so on stderr."""
    from pycocotools.coco import COCO

    from d2seg.data.demo import ensure_demo

    (tmp_path / "photos").mkdir()
    demo = ensure_demo()
    image = sorted((demo / "val" / "images").iterdir())[0]
    (tmp_path / "photos" / image.name).write_bytes(image.read_bytes())
    category_ids = set(COCO(str(demo / "val" / "instances.json")).getCatIds())
    assert category_ids != {0, 1, 2, 3}  # else indices and ids could not be told apart
    implicit = _predict(tmp_path, "implicit")
    explicit = _predict(tmp_path, "explicit", "--dataset", "demo_instances_train")
    assert implicit and {r["category_id"] for r in implicit} <= category_ids
    assert [(r["category_id"], r["bbox"]) for r in implicit] == \
        [(r["category_id"], r["bbox"]) for r in explicit]
    capsys.readouterr()
    indices = _predict(tmp_path, "unregistered")
    assert {r["category_id"] for r in indices} <= {0, 1, 2, 3}
    assert "class index" in capsys.readouterr().err
