"""``d2seg.label.suggest`` with a stand-in model whose detections are known (the dict an exported
model returns): score threshold, minimum area, category ids, labelme group ids, and GrabCut
refinement, each against a hand-worked or independently computed expectation."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from d2seg.data.converters import labelme_to_coco
from d2seg.errors import D2SegError
from d2seg.label.model import LabelModel
from d2seg.label.suggest import suggest

H, W = 120, 160


def _scene(tmp_path):
    """A grey picture with a red disc (centre 50,60, radius 25) and two small blue squares."""
    image = np.full((H, W, 3), 200, np.uint8)
    cv2.circle(image, (50, 60), 25, (0, 0, 255), -1)
    image[10:16, 120:126] = (255, 0, 0)
    image[100:106, 140:146] = (255, 0, 0)
    (tmp_path / "imgs").mkdir()
    cv2.imwrite(str(tmp_path / "imgs" / "scene.png"), image)
    disc = np.zeros((H, W), np.uint8)
    cv2.circle(disc, (50, 60), 25, 1, -1)
    squares = np.zeros((H, W), bool)
    squares[10:16, 120:126] = squares[100:106, 140:146] = True
    box_mask = np.zeros((H, W), bool)
    box_mask[30:91, 20:81] = True  # the disc's box, filled: a crude mask to refine
    instances = {"boxes": np.array([[20, 30, 81, 91], [120, 10, 146, 106], [0, 0, 5, 5]], float),
                 "scores": np.array([0.9, 0.6, 0.2], np.float32),
                 "classes": np.array([0, 1, 1]),
                 "masks": np.stack([box_mask, squares, np.ones((H, W), bool)])}
    model = LabelModel(lambda images: [{"instances": instances} for _ in images],
                       ["disc", "square"], [3, 8])
    return model, disc.astype(bool), box_mask


def _decoded(ann):
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], H, W)))


def test_threshold_area_categories_and_labelme_groups(tmp_path):
    """Threshold 0.5 keeps the 0.9 and 0.6 detections (not 0.2); their category ids are the
    model's (3, 8); the two-square instance is one annotation of two polygons, area 72 (2 x 36
    pixels) and one labelme group; --min-area 100 leaves out the squares; the labelme file
    converts back to the same polygons."""
    model, _, box_mask = _scene(tmp_path)
    out = tmp_path / "out"
    s = suggest(model, [tmp_path / "imgs"], out, score_thresh=0.5, tolerance=0,
                formats=("coco", "labelme"), progress=False)
    coco = json.loads((out / "instances.json").read_text())
    assert s["annotations"] == 2 and [a["category_id"] for a in coco["annotations"]] == [3, 8]
    assert [a["score"] for a in coco["annotations"]] == pytest.approx([0.9, 0.6])
    assert coco["categories"] == [{"id": 3, "name": "disc", "supercategory": "disc"},
                                  {"id": 8, "name": "square", "supercategory": "square"}]
    disc_ann, squares_ann = coco["annotations"]
    assert np.array_equal(_decoded(disc_ann).astype(bool), box_mask)
    assert disc_ann["area"] == 61 * 61 and len(squares_ann["segmentation"]) == 2
    assert squares_ann["area"] == 72
    doc = json.loads((out / "labelme" / "scene.json").read_text())
    groups = [(sh["label"], sh["group_id"]) for sh in doc["shapes"]]
    assert groups == [("disc", None), ("square", 2), ("square", 2)]
    labelme_to_coco(out / "labelme", tmp_path / "back.json", labels=["disc", "square"])
    back = json.loads((tmp_path / "back.json").read_text())
    assert [a["segmentation"] for a in back["annotations"]] == \
        [a["segmentation"] for a in coco["annotations"]]

    s = suggest(model, [tmp_path / "imgs"], tmp_path / "big", score_thresh=0.5, tolerance=0,
                min_area=100, progress=False)
    assert s["annotations"] == 1 and s["dropped"] == {"empty": 0, "small": 1}


def test_grabcut_refinement_follows_the_object(tmp_path):
    """--refine grabcut replaces the filled-box mask of the disc by GrabCut's cut in the box:
    IoU with the drawn disc rises from 0.79 (box) to >= 0.9."""
    model, disc, box_mask = _scene(tmp_path)
    suggest(model, [tmp_path / "imgs"], tmp_path / "gc", score_thresh=0.8, tolerance=0,
            refine="grabcut", progress=False)
    (ann,) = json.loads((tmp_path / "gc" / "instances.json").read_text())["annotations"]
    iou = lambda a, b: (a & b).sum() / (a | b).sum()  # noqa: E731
    assert iou(box_mask, disc) == pytest.approx(np.pi * 25 ** 2 / 61 ** 2, abs=0.02)
    assert iou(_decoded(ann).astype(bool), disc) >= 0.9


@pytest.mark.parametrize("option, value, words", [
    ("refine", "sam", "unknown refinement"), ("score_thresh", 1.5, "must be in [0, 1]"),
    ("min_area", -1, "must be >= 0"), ("tolerance", -1, "must be >= 0"),
])
def test_bad_options(tmp_path, option, value, words):
    """Each bad option is a D2SegError naming it."""
    model, _, _ = _scene(tmp_path)
    with pytest.raises(D2SegError, match=words.replace("[", r"\[").replace("]", r"\]")):
        suggest(model, [tmp_path / "imgs"], tmp_path / "x", progress=False, **{option: value})
