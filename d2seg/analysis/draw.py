"""The worst images: ground truth | prediction, each false positive and false negative labelled
with its error type (same colours in both panels and in the report's legend)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from d2seg.analysis.tide import TideRun
from d2seg.io.rle import to_rle

#: BGR colour of each outcome (true positives green; error types as in TIDE's plots).
COLOURS = {
    "tp": (80, 175, 76),
    "classification": (0, 152, 255),
    "localization": (243, 150, 33),
    "both": (176, 39, 156),
    "duplicate": (59, 235, 255),
    "background": (54, 67, 244),
    "missed": (255, 0, 255),
    "crowd": (158, 158, 158),
}
TAGS = {"tp": "TP", "classification": "cls", "localization": "loc", "both": "both",
        "duplicate": "dupe", "background": "bkg", "missed": "miss", "crowd": "crowd"}
MIN_HEIGHT = 360  # small images are enlarged so that labels stay readable


def colour_hex(kind: str) -> str:
    b, g, r = COLOURS[kind]
    return f"#{r:02x}{g:02x}{b:02x}"


def _masks(segmentations, h: int, w: int, scale: int):
    masks = []
    for seg in segmentations:
        m = mask_utils.decode(to_rle(seg, h, w)) if seg is not None else np.zeros((h, w), np.uint8)
        if m.ndim == 3:
            m = m.max(axis=2)
        if scale != 1:
            m = cv2.resize(m, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
        masks.append(m.astype(bool))
    return masks


def _panel(image, items, h: int, w: int, scale: int, with_masks: bool):
    """``items``: (kind, text, bbox_xywh, segmentation or None)."""
    from d2seg.visualize import draw_instances

    if not items:
        return image.copy()
    boxes = np.array([[b[0], b[1], b[0] + b[2], b[1] + b[3]] for _, _, b, _ in items],
                     np.float64) * scale
    masks = _masks([s for _, _, _, s in items], h, w, scale) if with_masks else None
    names = [text for _, text, _, _ in items]
    colours = np.array([COLOURS[kind] for kind, _, _, _ in items], np.uint8)
    return draw_instances(image, masks=masks, boxes=boxes, classes=list(range(len(items))),
                          class_names=names, colors=colours, alpha=0.4)


def draw_image(image_bgr: np.ndarray, image_info: dict, anns: list, results: list,
               run: TideRun, draw_threshold: float) -> np.ndarray:
    """GT | prediction for one image. ``anns``/``results``: the image's COCO annotations and
    result entries (indices as in the files, matching ``run``'s)."""
    from d2seg.visualize import side_by_side

    h, w = image_bgr.shape[:2]
    scale = max(1, int(np.ceil(MIN_HEIGHT / max(h, 1)))) if h < MIN_HEIGHT else 1
    base = cv2.resize(image_bgr, (w * scale, h * scale), interpolation=cv2.INTER_LINEAR) \
        if scale != 1 else image_bgr
    names = run.categories
    with_masks = run.iou_type == "segm"
    gt_items = []
    for k, ann in anns:
        name = names.get(ann["category_id"], str(ann["category_id"]))
        g = run._gt_by_index.get(k)
        if ann.get("iscrowd", 0) or g is None:
            kind, text = "crowd", f"crowd {name}"
        elif g.matched:
            kind, text = "tp", name
        else:
            kind = g.fn_type or "missed"
            text = f"FN {TAGS[kind]}: {name}"
        box = ann.get("bbox") or mask_utils.toBbox(to_rle(ann["segmentation"], h, w)).tolist()
        gt_items.append((kind, text, box, ann.get("segmentation")))
    pred_items = []
    for k, det in results:
        d = run._det_by_index.get(k)
        if d is None or d.status == "ignored" or d.score < draw_threshold:
            continue
        name = names.get(d.category_id, str(d.category_id))
        kind = "tp" if d.status == "tp" else d.error
        text = f"{name} {d.score:.2f}" if kind == "tp" else f"{TAGS[kind]}: {name} {d.score:.2f}"
        box = det.get("bbox") or mask_utils.toBbox(to_rle(det["segmentation"], h, w)).tolist()
        pred_items.append((kind, text, box, det.get("segmentation") if with_masks else None))
    pred_items.sort(key=lambda it: it[0] == "tp")  # errors drawn last, on top
    left = _panel(base, gt_items, h, w, scale, with_masks)
    right = _panel(base, pred_items, h, w, scale, with_masks)
    return side_by_side([left, right], ["ground truth (FN: error type)",
                                        f"prediction, score >= {draw_threshold:.2f}"])


def draw_worst(run: TideRun, gt: dict, results: list, rows: list[dict], images_dir,
               out_dir, draw_threshold: float) -> list[dict]:
    """Draw ``rows`` (from :func:`d2seg.analysis.metrics.worst_images`) to
    ``out_dir/NN_<image>.png``; returns rows with ``png`` (path relative to out_dir's parent)
    or ``skipped`` (the reason) added."""
    from d2seg.io.images import UnreadableImageError, read_image
    from d2seg.io.files import write_png_atomic

    images = {im["id"]: im for im in gt["images"]}
    anns_by_image, dets_by_image = {}, {}
    for k, ann in enumerate(gt["annotations"]):
        anns_by_image.setdefault(ann["image_id"], []).append((k, ann))
    for k, det in enumerate(results):
        dets_by_image.setdefault(det["image_id"], []).append((k, det))
    out_dir = Path(out_dir)
    drawn = []
    for rank, row in enumerate(rows, 1):
        info = images[row["image_id"]]
        entry = dict(row, file_name=info.get("file_name"))
        path = Path(images_dir) / info["file_name"]
        if not path.exists():
            path = Path(images_dir) / Path(info["file_name"]).name
        try:
            image = read_image(path, "BGR")
        except UnreadableImageError as e:
            entry["skipped"] = e.one_line()
            drawn.append(entry)
            continue
        canvas = draw_image(image, info, anns_by_image.get(row["image_id"], []),
                            dets_by_image.get(row["image_id"], []), run, draw_threshold)
        stem = Path(str(info.get("file_name", row["image_id"]))).stem
        target = out_dir / f"{rank:02d}_{stem}.png"
        write_png_atomic(target, canvas)
        entry["png"] = f"{out_dir.name}/{target.name}"
        drawn.append(entry)
    return drawn
