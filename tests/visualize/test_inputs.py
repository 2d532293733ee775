"""COCO ground truth, COCO results and detectron2 Instances become the right draw calls."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from d2seg.errors import D2SegError
from d2seg.visualize import (
    annotations_from_coco, draw_instances, instances_from_coco_results, instances_from_detectron2,
)
from d2seg.visualize.render import normalize_masks

H, W = 40, 60


def full_masks(instance_set, h=H, w=W):
    out = []
    for m in normalize_masks(instance_set.masks, h, w):
        full = np.zeros((h, w), bool)
        if m is not None:
            x0, y0, x1, y1 = m.box
            full[y0:y1, x0:x1] = m.crop
        out.append(full)
    return np.array(out)


def tiny_coco():
    block = np.zeros((H, W), np.uint8)
    block[5:15, 30:50] = 1
    compressed = mask_utils.encode(np.asfortranarray(block))
    compressed["counts"] = compressed["counts"].decode()
    return {
        "images": [{"id": 7, "file_name": "a.png", "height": H, "width": W},
                   {"id": 8, "file_name": "b.png", "height": H, "width": W}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 5, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "iscrowd": 0, "bbox": [2, 3, 20, 25],
             "area": 300, "segmentation": [[2, 3, 22, 3, 22, 28, 2, 28], [25, 30, 35, 30, 30, 38]]},
            {"id": 2, "image_id": 7, "category_id": 5, "iscrowd": 1, "bbox": [0, 30, 60, 10],
             "area": 100, "segmentation": {"size": [H, W], "counts": [30, 10] * W}},
            {"id": 3, "image_id": 7, "category_id": 5, "iscrowd": 0, "bbox": [30, 5, 20, 10],
             "area": 200, "segmentation": compressed},
            {"id": 4, "image_id": 8, "category_id": 3, "iscrowd": 0, "bbox": [0, 0, 5, 5],
             "area": 25, "segmentation": [[0, 0, 5, 0, 5, 5, 0, 5]]},
        ],
    }


def test_coco_ground_truth_masks_equal_pycocotools_ann_to_mask():
    data = tiny_coco()
    coco = COCO()
    coco.dataset = data
    coco.createIndex()
    got = annotations_from_coco(data, 7)
    assert got.classes == [3, 5, 5] and got.scores is None
    assert got.extra["iscrowd"] == [False, True, False]
    reference = np.array([coco.annToMask(a).astype(bool) for a in coco.loadAnns([1, 2, 3])])
    assert (full_masks(got) == reference).all()
    assert np.allclose(got.boxes[0], [2, 3, 22, 28])  # XYWH -> XYXY


def test_coco_results_of_one_image_with_their_scores_and_threshold():
    masks = np.zeros((3, H, W), np.uint8)
    masks[0, 1:10, 1:10] = masks[1, 20:30, 5:50] = masks[2, 0:40, 55:60] = 1
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
    results = []
    for i, (rle, image_id, score) in enumerate(zip(rles, (7, 7, 8), (0.9, 0.3, 0.8))):
        rle["counts"] = rle["counts"].decode()  # as in a JSON file
        results.append({"image_id": image_id, "category_id": 3 + i, "score": score,
                        "segmentation": rle, "bbox": mask_utils.toBbox(rle).tolist()})
    got = instances_from_coco_results(results, 7)
    assert got.classes == [3, 4] and got.scores == [0.9, 0.3]
    assert (full_masks(got) == masks[:2].astype(bool)).all()
    kept = got.above(0.5)
    assert kept.classes == [3] and (full_masks(kept) == masks[:1].astype(bool)).all()
    assert np.allclose(kept.boxes, [[1, 1, 10, 10]])


def test_bbox_only_results_are_drawn_as_boxes():
    results = [{"image_id": 1, "category_id": 2, "score": 0.7, "bbox": [10, 10, 20, 5]}]
    got = instances_from_coco_results(results, 1)
    assert got.masks is None and np.allclose(got.boxes, [[10, 10, 30, 15]])
    image = np.zeros((H, W, 3), np.uint8)
    out = draw_instances(image, **got.draw_kwargs(), show_labels=False)
    changed = (out != 0).any(axis=2)
    assert changed[10, 10:30].all() and changed[14, 10:30].all() and not changed[12, 15]


def test_detectron2_instances_draw_like_their_raw_arrays():
    from detectron2.structures import Boxes, Instances

    rng = np.random.default_rng(0)
    masks = np.zeros((2, H, W), bool)
    masks[0, 3:20, 4:30] = masks[1, 15:35, 20:58] = True
    inst = Instances((H, W))
    inst.pred_masks = torch.from_numpy(masks)
    inst.pred_boxes = Boxes(torch.tensor([[4, 3, 30, 20], [20, 15, 58, 35]], dtype=torch.float32))
    inst.scores = torch.tensor([0.75, 0.6])
    inst.pred_classes = torch.tensor([1, 0])
    got = instances_from_detectron2(inst)
    assert got.classes == [1, 0] and np.allclose(got.scores, [0.75, 0.6])
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    names = ["a", "b"]
    ref = draw_instances(image, masks, np.array([[4, 3, 30, 20], [20, 15, 58, 35]]), [1, 0],
                         [0.75, 0.6], names)
    assert (draw_instances(image, **got.draw_kwargs(), class_names=names) == ref).all()
    only_masks = Instances((H, W))
    only_masks.pred_masks = torch.from_numpy(masks)
    assert np.allclose(instances_from_detectron2(only_masks).boxes,
                       [[4, 3, 30, 20], [20, 15, 58, 35]])


def test_a_bad_segmentation_names_the_annotation():
    data = tiny_coco()
    data["annotations"][0]["segmentation"] = [[1, 2, 3, 4]]
    with pytest.raises(D2SegError, match="annotation 1"):
        annotations_from_coco(data, 7)
