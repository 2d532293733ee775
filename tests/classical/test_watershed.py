"""Watershed: touching discs come apart; the coins of scikit-image are found one by one."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import data, filters, segmentation

from d2seg.classical import foreground_mask, watershed_folder, watershed_instances, watershed_labels
from d2seg.evaluation.coco import evaluate_coco, load_gt


def _two_touching_discs(h=120, w=200, r=35):
    yy, xx = np.mgrid[:h, :w]
    left = (yy - 60) ** 2 + (xx - 70) ** 2 <= r ** 2
    right = (yy - 60) ** 2 + (xx - 130) ** 2 <= r ** 2
    return left, right


def test_touching_discs_are_two_instances():
    left, right = _two_touching_discs()
    assert ndi.label(left | right)[1] == 1  # they do touch
    labels = watershed_labels(left | right)
    assert labels.max() == 2
    for truth in (left, right):
        best = max(((labels == k) & truth).sum() / ((labels == k) | truth).sum() for k in (1, 2))
        assert best > 0.8


def test_otsu_foreground_of_a_drawn_picture():
    left, right = _two_touching_discs()
    image = np.where(left | right, 200, 40).astype(np.uint8)
    assert np.array_equal(foreground_mask(image, sigma=0), left | right)
    assert np.array_equal(foreground_mask(255 - image, sigma=0), left | right)  # auto polarity
    assert watershed_instances(np.dstack([image] * 3)).max() == 2


def _reference_coins():
    """The coins as scikit-image's gallery finds them (Sobel elevation, threshold markers)."""
    coins = data.coins()
    markers = np.zeros_like(coins)
    markers[coins < 30], markers[coins > 150] = 1, 2
    flooded = segmentation.watershed(filters.sobel(coins), markers)
    labels, n = ndi.label(ndi.binary_fill_holes(flooded == 2))
    areas = np.bincount(labels.ravel())
    return [labels == k for k in range(1, n + 1) if areas[k] > 500]


def test_coins_are_found_one_instance_each():
    reference = _reference_coins()
    assert len(reference) == 24  # the picture holds 24 coins (counted by eye as well)
    labels = watershed_instances(data.coins(), background_radius=40)
    found = [labels == k for k in range(1, labels.max() + 1)]
    big = [m for m in found if m.sum() > 500]
    assert 22 <= len(big) <= 26
    matched = sum(any((m & c).sum() / (m | c).sum() > 0.7 for m in big) for c in reference)
    assert matched >= 22


def test_folder_results_load_and_score(tmp_path):
    left, right = _two_touching_discs()
    image = np.where(left | right, 200, 40).astype(np.uint8)
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "000007.png"), np.dstack([image] * 3))
    from pycocotools import mask as mask_util

    anns = []
    for i, m in enumerate((left, right)):
        rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        anns.append({"id": i + 1, "image_id": 7, "category_id": 1, "iscrowd": 0,
                     "segmentation": rle, "area": float(m.sum()),
                     "bbox": [float(v) for v in mask_util.toBbox(rle)]})
    gt = {"images": [{"id": 7, "file_name": "000007.png", "height": 120, "width": 200}],
          "annotations": anns, "categories": [{"id": 1, "name": "disc"}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    results = watershed_folder(tmp_path / "images", progress=False)
    assert len(results) == 2 and {r["image_id"] for r in results} == {7}
    assert len(load_gt(str(tmp_path / "gt.json")).loadRes(results).getAnnIds()) == 2
    stats = evaluate_coco(str(tmp_path / "gt.json"), results, ("segm",))["segm"]["stats"]
    assert stats["AP50"] == pytest.approx(1.0)


def test_given_foreground_masks_replace_otsu(tmp_path):
    left, right = _two_touching_discs()
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    flat = np.full((120, 200, 3), 128, np.uint8)  # nothing for Otsu to find
    cv2.imwrite(str(tmp_path / "images" / "000001.jpg"), flat)
    cv2.imwrite(str(tmp_path / "masks" / "000001.png"), ((left | right) * 255).astype(np.uint8))
    assert watershed_folder(tmp_path / "images", progress=False) == []
    results = watershed_folder(tmp_path / "images", masks_dir=tmp_path / "masks",
                               category_id=4, progress=False)
    from pycocotools import mask as mask_util

    masks = [mask_util.decode(r["segmentation"]).astype(bool) for r in results]
    assert len(masks) == 2 and all(r["category_id"] == 4 for r in results)
    assert sum(m.sum() for m in masks) == (left | right).sum()
