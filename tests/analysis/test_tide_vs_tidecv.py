"""d2seg's TIDE error breakdown equals tidecv's (to 0.01 dAP) on real result sets: COCO val2014
fake results, tiny_coco16 with perturbed ground truth as predictions, the demo's val predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from d2seg.analysis.tide import run_tide


@pytest.mark.shared
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_coco_val2014_fake_results(shared_data, iou_type, tidecv_reference, scenes):
    root = shared_data / "coco_val2014_100"
    gt = root / "annotations" / "instances_val2014_100.json"
    res = root / "results" / f"instances_val2014_fake{iou_type}100_results.json"
    ours = run_tide(str(gt), str(res), iou_type).summary()
    scenes.assert_same_as_tidecv(ours, tidecv_reference(gt, res, iou_type))


def _perturbed_predictions(gt: dict, seed: int = 0) -> list:
    """Ground truth turned into detections with every kind of mistake: shifted (some far
    enough to be localization errors), relabelled, duplicated, dropped, plus boxes on nothing."""
    rng = np.random.default_rng(seed)
    images = {im["id"]: im for im in gt["images"]}
    cats = [c["id"] for c in gt["categories"]]
    out = []
    for ann in gt["annotations"]:
        if ann.get("iscrowd"):
            continue
        im = images[ann["image_id"]]
        h, w = im["height"], im["width"]
        if rng.random() < 0.15:  # missed
            continue
        x, y, bw, bh = ann["bbox"]
        shift = rng.choice([0.05, 0.2, 0.45])
        dx, dy = (rng.uniform(-1, 1, 2) * shift * np.array([bw, bh])).round()
        cat = ann["category_id"] if rng.random() > 0.15 else int(rng.choice(cats))
        rle = mask_utils.frPyObjects(ann["segmentation"], h, w)
        m = mask_utils.decode(mask_utils.merge(rle) if isinstance(rle, list) else rle)
        m = np.roll(np.roll(m, int(dy), axis=0), int(dx), axis=1)
        copies = 2 if rng.random() < 0.15 else 1
        for _ in range(copies):
            enc = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            enc["counts"] = enc["counts"].decode("ascii")
            out.append({"image_id": im["id"], "category_id": cat,
                        "bbox": [float(x + dx), float(y + dy), float(bw), float(bh)],
                        "score": float(np.round(rng.uniform(0.05, 1.0), 3)),
                        "segmentation": enc})
    for im in gt["images"]:  # background detections
        h, w = im["height"], im["width"]
        for _ in range(3):
            bw, bh = rng.integers(8, 40, 2)
            x, y = rng.integers(0, w - bw), rng.integers(0, h - bh)
            m = np.zeros((h, w), np.uint8, order="F")
            m[y:y + bh, x:x + bw] = 1
            enc = mask_utils.encode(m)
            enc["counts"] = enc["counts"].decode("ascii")
            out.append({"image_id": im["id"], "category_id": int(rng.choice(cats)),
                        "bbox": [float(x), float(y), float(bw), float(bh)],
                        "score": float(np.round(rng.uniform(0.05, 0.6), 3)), "segmentation": enc})
    return out


@pytest.mark.shared
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_tiny_coco16_perturbed_ground_truth(shared_data, tmp_path, iou_type, tidecv_reference,
                                            scenes):
    gt_path = shared_data / "tiny_coco16" / "small_coco" / "instances_train2017_small.json"
    preds = _perturbed_predictions(json.loads(gt_path.read_text()))
    res = tmp_path / "perturbed.json"
    res.write_text(json.dumps(preds))
    ours = run_tide(str(gt_path), str(res), iou_type).summary()
    for t in ("classification", "localization", "duplicate", "background", "missed"):
        assert ours["counts"][t] > 0, t  # the set really exercises every main error type
    scenes.assert_same_as_tidecv(ours, tidecv_reference(gt_path, res, iou_type))


@pytest.mark.slow
def test_demo_val_predictions(tmp_path, tidecv_reference, scenes):
    """A few iterations of the demo's Mask R-CNN, every detection kept: its val predictions;
    also the analysis the run itself wrote (run_report, at the end of training) equals tidecv."""
    from detectron2.data import MetadataCatalog

    from d2seg.runners.demo import run_instance_demo

    result = run_instance_demo(tmp_path, max_iter=3, num_pictures=0,
                               overrides=["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])
    res = tmp_path / "instance" / "eval" / "demo_instances_val" / "coco_instances_results.json"
    assert res.is_file(), result
    if not json.loads(res.read_text()):
        pytest.fail("3 iterations kept no detection at score threshold 0: nothing to compare")
    gt = MetadataCatalog.get("demo_instances_val").json_file
    written = json.loads((tmp_path / "instance" / "analysis" / "analysis.json").read_text())
    for iou_type in ("bbox", "segm"):
        ours = run_tide(gt, str(res), iou_type).summary()
        reference = tidecv_reference(gt, res, iou_type)
        scenes.assert_same_as_tidecv(ours, reference)
        scenes.assert_same_as_tidecv(written["iou_types"][iou_type], reference)
