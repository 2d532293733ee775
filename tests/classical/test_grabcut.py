"""GrabCut from boxes: a disc found from its box, and COCO results that pycocotools reads."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_util

from d2seg.classical import grabcut_box, grabcut_coco
from d2seg.evaluation.coco import evaluate_coco, load_gt


def _disc_scene(seed=0, h=120, w=160, centre=(80, 60), radius=30):
    """Noisy dark background with a noisy bright disc; returns (RGB image, true disc mask)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    disc = (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius ** 2
    image = rng.normal(70, 25, (h, w, 3))
    image[disc] = rng.normal(170, 25, (int(disc.sum()), 3))
    return np.clip(image, 0, 255).astype(np.uint8), disc


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_disc_inside_its_box_is_cut_out():
    image, disc = _disc_scene()
    mask = grabcut_box(image, [45, 25, 71, 71], iters=5)
    assert mask.shape == disc.shape and mask.dtype == bool
    assert _iou(mask, disc) > 0.9


def test_box_covering_the_whole_image_still_gives_a_mask():
    image, disc = _disc_scene(h=64, w=64, centre=(32, 32), radius=20)
    mask = grabcut_box(image, [0, 0, 64, 64])
    assert mask.any() and _iou(mask, disc) > 0.5


def _write_scene(tmp_path, n=2):
    """n images with one disc each, as files and a COCO file with the true masks."""
    images, anns = [], []
    (tmp_path / "images").mkdir()
    for i in range(n):
        image, disc = _disc_scene(seed=i, centre=(60 + 20 * i, 60))
        name = f"{i + 1:06d}.png"
        cv2.imwrite(str(tmp_path / "images" / name), image[:, :, ::-1])
        rle = mask_util.encode(np.asfortranarray(disc.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        images.append({"id": i + 1, "file_name": name, "height": 120, "width": 160})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 3, "iscrowd": 0,
                     "segmentation": rle, "area": float(disc.sum()),
                     "bbox": [float(v) for v in mask_util.toBbox(rle)]})
    coco = {"images": images, "annotations": anns, "categories": [{"id": 3, "name": "disc"}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(coco))
    return path, coco


def test_results_from_a_coco_file_load_in_pycocotools_and_score(tmp_path):
    gt_path, coco = _write_scene(tmp_path)
    results = grabcut_coco(gt_path, tmp_path / "images", progress=False)
    assert len(results) == len(coco["annotations"])
    assert all(r["score"] == 1.0 and r["category_id"] == 3 for r in results)
    loaded = load_gt(str(gt_path)).loadRes(json.loads(json.dumps(results)))
    assert len(loaded.getAnnIds()) == len(results)
    for r in results:  # bbox is the mask's box, as pycocotools computes it
        assert r["bbox"] == pytest.approx(list(mask_util.toBbox(r["segmentation"])))
    stats = evaluate_coco(str(gt_path), results, ("segm",))["segm"]["stats"]
    assert stats["AP50"] == pytest.approx(1.0)


def test_detector_results_keep_scores_and_skip_low_ones(tmp_path):
    gt_path, coco = _write_scene(tmp_path)
    dets = [{"image_id": a["image_id"], "category_id": 3, "bbox": a["bbox"], "score": s}
            for a, s in zip(coco["annotations"], (0.9, 0.2))]
    by_name = grabcut_coco(dets, tmp_path / "images", score_thresh=0.5, progress=False)
    assert [(r["image_id"], r["score"]) for r in by_name] == [(1, 0.9)]
    via_coco = grabcut_coco(dets, tmp_path / "images", images=gt_path, progress=False)
    assert sorted(r["score"] for r in via_coco) == [0.2, 0.9]
