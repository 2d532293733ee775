"""Pre-annotations: a model's predictions written as a *dataset* to review, not as results.

``suggest`` runs an instance segmentation model on images and writes

* ``instances.json``: COCO instances (``images``, ``categories``, ``annotations``) whose
  segmentations are polygons traced from the predicted masks (``d2seg.io.polygons``), with
  ``bbox`` and ``area`` of those polygons as ``d2seg data convert labelme`` computes them, and the
  detection's ``score`` kept as an extra field (``d2seg data merge --drop-score`` removes it);
  ``file_name`` is relative to the images' common folder (the summary's ``image_root``);
* with ``formats`` including ``"labelme"``: ``labelme/<stem>.json`` per image, in the format
  labelme 5.x writes (open them with ``labelme IMAGE_FOLDER --output OUT/labelme``).

Detections below ``score_thresh`` are dropped; with ``refine="grabcut"`` each mask is replaced by
GrabCut's cut inside the detection's box (``d2seg.classical.grabcut``); polygons are simplified
with ``tolerance`` pixels and instances whose polygons cover less than ``min_area`` pixels are
dropped.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from d2seg.errors import D2SegError
from d2seg.io.files import write_json_atomic
from d2seg.io.polygons import mask_to_polygons
from d2seg.label.common import image_files, predicted_instances

__all__ = ["LABELME_VERSION", "suggest", "polygon_annotation", "labelme_document"]

#: the labelme release whose file format the labelme output follows
LABELME_VERSION = "5.5.0"
REFINERS = (None, "grabcut")


def polygon_annotation(polygons, height: int, width: int) -> dict | None:
    """``segmentation``, ``area`` and ``bbox`` of polygons as the labelme converter computes
    them (area of the rasterised polygons, box of the points); None without polygons."""
    if not polygons:
        return None
    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, int(height), int(width)))
    points = np.concatenate([np.asarray(p, float).reshape(-1, 2) for p in polygons])
    (x0, y0), (x1, y1) = points.min(0), points.max(0)
    return {"segmentation": polygons, "area": float(mask_utils.area(rle)),
            "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]}


def labelme_document(image_path: str, height: int, width: int, shapes: list[dict]) -> dict:
    """A labelme 5.x file: one polygon shape per polygon; the polygons of one instance share a
    ``group_id`` (labelme's way, which ``d2seg data convert labelme`` reads back)."""
    return {"version": LABELME_VERSION, "flags": {}, "shapes": shapes, "imagePath": image_path,
            "imageData": None, "imageHeight": int(height), "imageWidth": int(width)}


def _shapes(label: str, polygons, group_id: int | None, score: float) -> list[dict]:
    return [{"label": label, "points": np.asarray(p, float).reshape(-1, 2).tolist(),
             "group_id": group_id if len(polygons) > 1 else None,
             "description": f"score {score:.3f}", "shape_type": "polygon", "flags": {},
             "mask": None} for p in polygons]


def _common_root(files: list[Path]) -> Path:
    parents = [str(f.resolve().parent) for f in files]
    return Path(os.path.commonpath(parents))


def suggest(model, sources, out_dir, *, score_thresh: float = 0.5, min_area: float = 0.0,
            tolerance: float = 1.0, refine: str | None = None, formats=("coco",),
            batch_size: int = 4, progress: bool | None = None) -> dict:
    """Write pre-annotations of the images in ``sources`` (files, folders, globs) into
    ``out_dir`` (see the module doc); ``model`` is a ``d2seg.label.model.LabelModel``. Returns a
    summary: images, annotations, dropped ({"empty": detections whose mask has no
    pixels, so no polygon; "small": below ``min_area``}), paths."""
    from d2seg.engine.predict import output_stems

    if refine not in REFINERS:
        raise D2SegError(f"unknown refinement {refine!r}", where="--refine",
                         hint="use grabcut, or leave it out")
    if not 0.0 <= score_thresh <= 1.0:
        raise D2SegError(f"must be in [0, 1], got {score_thresh}", where="--score-thresh")
    if min_area < 0:
        raise D2SegError(f"must be >= 0, got {min_area}", where="--min-area")
    if tolerance < 0:
        raise D2SegError(f"must be >= 0, got {tolerance}", where="--tolerance")
    unknown = set(formats) - {"coco", "labelme"}
    if unknown:
        raise D2SegError(f"unknown format {sorted(unknown)[0]!r}", where="--format",
                         hint="use coco or labelme")
    files = image_files(sources)
    root = _common_root(files)
    out = Path(out_dir)
    labelme_dir = out / "labelme"
    if "labelme" in formats:
        labelme_dir.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    stems = dict(zip(files, output_stems(files)))
    names = dict(zip(model.category_ids, model.class_names))
    images, annotations, dropped = [], [], {"empty": 0, "small": 0}
    if refine == "grabcut":
        from d2seg.classical.grabcut import grabcut_box
    for image_id, (f, image, arrays) in enumerate(
            predicted_instances(model, files, batch_size, progress, desc="suggest"), start=1):
        h, w = image.shape[:2]
        images.append({"id": image_id, "file_name": f.resolve().relative_to(root).as_posix(),
                       "height": int(h), "width": int(w)})
        shapes, group = [], 0
        order = np.argsort(-arrays["scores"], kind="stable")
        for i in order:
            score = float(arrays["scores"][i])
            if score < score_thresh:
                continue
            mask = arrays["masks"][i]
            if refine == "grabcut":
                x0, y0, x1, y1 = (float(v) for v in arrays["boxes"][i])
                mask = grabcut_box(np.ascontiguousarray(image[:, :, ::-1]),
                                   [x0, y0, x1 - x0, y1 - y0])
            polygons = mask_to_polygons(mask, tolerance)
            entry = polygon_annotation(polygons, h, w)
            if entry is None or entry["area"] == 0:
                dropped["empty"] += 1  # an empty mask (or one GrabCut emptied): no polygon
                continue
            if entry["area"] < min_area:
                dropped["small"] += 1
                continue
            category = int(model.category_ids[int(arrays["classes"][i])])
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": category, "iscrowd": 0, **entry,
                                "score": round(score, 6)})
            group += 1
            shapes += _shapes(names[category], polygons, group, score)
        if "labelme" in formats:
            doc = labelme_document(os.path.relpath(f.resolve(), labelme_dir.resolve()), h, w,
                                   shapes)
            write_json_atomic(labelme_dir / f"{stems[f]}.json", doc, indent=1)
    coco = {"images": images, "annotations": annotations, "categories": model.categories(),
            "info": {"description": "pre-annotations by d2seg label suggest",
                     "image_root": str(root)}}
    write_json_atomic(out / "instances.json", coco)
    return {"images": len(images), "annotations": len(annotations), "dropped": dropped,
            "coco": str(out / "instances.json"), "image_root": str(root),
            "labelme": str(labelme_dir) if "labelme" in formats else None}
