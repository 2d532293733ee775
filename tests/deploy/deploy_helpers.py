"""Comparisons the deploy tests share: an exported model's detections against PyTorch's."""

from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of XYXY boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def compare_detections(ref, got: dict, score_thresh: float) -> int:
    """Every PyTorch detection (detectron2 Instances) not within 1e-3 of the threshold has an
    exported one of the same class with box IoU >= 0.99, score within 1e-3 and mask IoU >= 0.98,
    and both have as many detections away from the threshold; returns the matches."""
    ref = ref.to("cpu")
    r_boxes, r_scores = ref.pred_boxes.tensor.numpy(), ref.scores.numpy()
    r_classes, r_masks = ref.pred_classes.numpy(), ref.pred_masks.numpy()
    border = np.abs(r_scores - score_thresh) < 1e-3
    g_border = np.abs(got["scores"] - score_thresh) < 1e-3
    assert (~border).sum() == (~g_border).sum(), (len(r_scores), len(got["scores"]))
    assert got["masks"].shape[1:] == r_masks.shape[1:] and got["masks"].dtype == bool
    if not len(r_boxes):
        return 0
    iou = box_iou(r_boxes, got["boxes"])
    taken, matched = set(), 0
    for i in np.flatnonzero(~border):
        same = (got["classes"] == r_classes[i]) & (np.abs(got["scores"] - r_scores[i]) <= 1e-3)
        candidates = [j for j in np.argsort(-iou[i]) if same[j] and j not in taken]
        assert candidates, f"detection {i} (class {r_classes[i]}, {r_scores[i]:.4f}) unmatched"
        j = candidates[0]
        assert iou[i, j] >= 0.99, (i, iou[i, j])
        assert mask_iou(r_masks[i], got["masks"][j]) >= 0.98, (i, mask_iou(r_masks[i], got["masks"][j]))
        taken.add(j)
        matched += 1
    return matched


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """The fraction of pixels where two label maps of one shape agree."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a == b).mean())


def segment_labels(pan: np.ndarray, segments: list[dict]) -> np.ndarray:
    """Per pixel: 0 void, 1 + thing class for things, 1000 + semantic label for stuff."""
    lut = np.zeros(max([s["id"] for s in segments], default=0) + 1, np.int64)
    for s in segments:
        lut[s["id"]] = 1 + s["category_id"] if s["isthing"] else 1000 + s["category_id"]
    return lut[np.asarray(pan)]


def compare_results_json(ref: list[dict], got: list[dict]) -> None:
    """Each result of ``ref`` (a results.json of ``d2seg predict``) has one in ``got`` of the
    same category with score within 1e-3, box IoU >= 0.99 and RLE mask IoU >= 0.98, and both
    have as many."""
    from pycocotools import mask as mask_util

    assert len(got) == len(ref)
    for r in ref:
        best = max(got, key=lambda g: mask_util.iou([g["bbox"]], [r["bbox"]], [0])[0, 0]
                   if g["category_id"] == r["category_id"] else -1)
        assert best["category_id"] == r["category_id"]
        assert abs(best["score"] - r["score"]) <= 1e-3
        assert mask_util.iou([best["bbox"]], [r["bbox"]], [0])[0, 0] >= 0.99
        areas = mask_util.area([best["segmentation"], r["segmentation"]])
        assert (areas == 0).all() or \
            mask_util.iou([best["segmentation"]], [r["segmentation"]], [0])[0, 0] >= 0.98
