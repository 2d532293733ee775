"""GrabCut (OpenCV) prompted by boxes: turns boxes (ground truth or a detector's) into masks.

Each box is cut from a crop around it (the box plus a margin): GrabCut's background colour
model then describes what surrounds the object rather than the whole picture, and big images
cost no more than small ones. Pixels outside the box are definite background, inside probable
foreground (``cv2.GC_INIT_WITH_RECT``).
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np
from scipy import ndimage as ndi
from tqdm import tqdm

from d2seg.classical.coco_io import (
    images_from_coco, images_from_folder, mask_to_result, read_rgb,
)
from d2seg.errors import D2SegError
from d2seg.io.json import read_json_or_parsed
from d2seg.io.coco import load_coco, load_results

__all__ = ["grabcut_box", "grabcut_coco"]

_MIN_SAMPLES = 16  # OpenCV fits 5-component GMMs: keep a few pixels on each side of the cut


def _box_mask(shape, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros(shape[:2], bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == 1 + int(np.argmax(sizes))


def grabcut_box(image: np.ndarray, box_xywh, *, iters: int = 5, margin: float = 0.25,
                min_margin: int = 10, largest_component: bool = True,
                fill_holes: bool = True) -> np.ndarray:
    """The (H, W) bool mask GrabCut finds inside one XYWH box of an (H, W, 3) uint8 image.

    ``margin`` (fraction of the box's size, at least ``min_margin`` pixels) sets the crop of
    surroundings the background model learns from. A box too small or too empty to cut, or a
    cut that keeps nothing, gives the filled box, so every prompt yields a mask.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise D2SegError(f"GrabCut needs an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    if iters < 1:
        raise D2SegError(f"iters must be >= 1, got {iters}")
    h, w = image.shape[:2]
    x, y, bw, bh = (float(v) for v in box_xywh)
    x0, y0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
    x1, y1 = min(w, int(np.ceil(x + bw))), min(h, int(np.ceil(y + bh)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return _box_mask(image.shape, x0, y0, max(x1, x0), max(y1, y0))
    mx = max(min_margin, int(round(margin * (x1 - x0))))
    my = max(min_margin, int(round(margin * (y1 - y0))))
    cx0, cy0, cx1, cy1 = max(0, x0 - mx), max(0, y0 - my), min(w, x1 + mx), min(h, y1 + my)
    crop = np.ascontiguousarray(image[cy0:cy1, cx0:cx1])
    # A box that fills its whole crop leaves no background to learn from: pull it in by a pixel.
    rx0, ry0 = max(x0 - cx0, 1), max(y0 - cy0, 1)
    rx1, ry1 = min(x1 - cx0, crop.shape[1] - 1), min(y1 - cy0, crop.shape[0] - 1)
    inside = (rx1 - rx0) * (ry1 - ry0)
    if rx1 - rx0 < 2 or ry1 - ry0 < 2 or inside < _MIN_SAMPLES or \
            crop.shape[0] * crop.shape[1] - inside < _MIN_SAMPLES:
        return _box_mask(image.shape, x0, y0, x1, y1)
    labels = np.zeros(crop.shape[:2], np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut seeds its colour models with k-means: same box, same mask
    cv2.grabCut(crop, labels, (rx0, ry0, rx1 - rx0, ry1 - ry0), bgd, fgd, int(iters),
                cv2.GC_INIT_WITH_RECT)
    cut = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    if largest_component:
        cut = _largest_component(cut)
    if fill_holes:
        cut = ndi.binary_fill_holes(cut)
    if not cut.any():
        return _box_mask(image.shape, x0, y0, x1, y1)
    mask = np.zeros((h, w), bool)
    mask[cy0:cy1, cx0:cx1] = cut
    return mask


def _named(check, data, name):
    """``check(data)``, naming the file ``data`` came from in the errors it raises."""
    try:
        return check(data)
    except D2SegError as e:
        raise D2SegError(e.reason, file=e.file or name, where=e.where, hint=e.hint) from None


def _prompts(boxes, images, images_dir, score_thresh: float):
    """(image entries, {image_id: [(bbox, category_id, score)]}) from a COCO file or results."""
    name = None if isinstance(boxes, (Mapping, list)) else str(boxes)
    boxes = read_json_or_parsed(boxes, "boxes file")
    if isinstance(boxes, Mapping):  # a COCO dataset: its boxes, and its image list
        coco = _named(load_coco, boxes, name)
        entries = images_from_coco(coco, images_dir)
        prompts: dict[int, list] = {e.image_id: [] for e in entries}
        for i, ann in enumerate(coco.get("annotations", [])):
            if ann.get("iscrowd", 0):
                continue
            if "bbox" not in ann:
                raise D2SegError("annotation has no 'bbox'", file=name, where=f"annotation {i}")
            if ann["image_id"] not in prompts:
                raise D2SegError(f"image id {ann['image_id']} is not in 'images'", file=name,
                                 where=f"annotation {i}")
            prompts[ann["image_id"]].append((ann["bbox"], ann["category_id"], 1.0))
        return entries, prompts
    results = _named(load_results, boxes, name)
    if images is not None:
        entries = images_from_coco(load_coco(images), images_dir)
    else:
        entries = images_from_folder(images_dir)
    prompts = {e.image_id: [] for e in entries}
    for i, det in enumerate(results):
        if "bbox" not in det:
            raise D2SegError("detection has no 'bbox'", file=name, where=f"detection {i}")
        if det["image_id"] not in prompts:
            raise D2SegError(f"no image with id {det['image_id']}", file=name,
                             where=f"detection {i}",
                             hint="pass the COCO file listing the images (--coco)")
        score = float(det.get("score", 1.0))
        if score >= score_thresh:
            prompts[det["image_id"]].append((det["bbox"], det["category_id"], score))
    return entries, prompts


def grabcut_coco(boxes, images_dir, *, images=None, iters: int = 5, margin: float = 0.25,
                 min_margin: int = 10, largest_component: bool = True, fill_holes: bool = True,
                 score_thresh: float = 0.0, progress: bool | None = None) -> list[dict]:
    """COCO results with GrabCut masks, one per box.

    ``boxes`` is a COCO instances file (path or dict: its non-crowd annotations' boxes, score
    1) or a COCO results list / JSON (a detector's boxes, keeping each score and class; those
    below ``score_thresh`` are skipped). Images come from ``images_dir`` as the COCO file names
    them; for results, from ``images`` (a COCO file listing the images) or else by the number
    that ends each file name. Each result's ``bbox`` is its mask's box.
    """
    entries, prompts = _prompts(boxes, images, images_dir, score_thresh)
    results = []
    entries = [e for e in entries if prompts[e.image_id]]
    for entry in tqdm(entries, desc="grabcut", unit="img",
                      disable=None if progress is None else not progress):
        image = read_rgb(entry)
        for bbox, category_id, score in prompts[entry.image_id]:
            mask = grabcut_box(image, bbox, iters=iters, margin=margin, min_margin=min_margin,
                               largest_component=largest_component, fill_holes=fill_holes)
            results.append(mask_to_result(mask, entry.image_id, category_id, score))
    return results
