"""Write panoptic predictions as COCO panoptic: a PNG per image (id = R + 256 G + 256^2 B) + JSON.

The JSON has ``images``, ``categories`` and ``annotations`` with ``segments_info`` entries
(``id``, ``category_id`` in the dataset's original ids, ``isthing``, ``area``, ``bbox`` as
[x, y, w, h], ``iscrowd``), which panopticapi, detectron2's ``COCOPanopticEvaluator`` and
:func:`d2seg.evaluation.panoptic_quality.pq_compute_folders` read. Every file is written under a
temporary name and renamed into place, so an interrupted export never leaves a half file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np

from d2seg.errors import D2SegError
from d2seg.io.files import UniqueNames, write_json_atomic, write_png_atomic
from d2seg.io.panoptic import id_to_rgb


def write_panoptic_png(path: str | os.PathLike, ids: np.ndarray) -> None:
    """Save a segment-id map as a COCO panoptic PNG (atomically)."""
    write_png_atomic(path, id_to_rgb(ids)[..., ::-1])


def segment_area_and_bbox(ids: np.ndarray, segment_id: int) -> tuple[int, list[int]]:
    """Pixel count and [x, y, width, height] box of one segment (0 and [0, 0, 0, 0] if absent)."""
    mask = ids == segment_id
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return 0, [0, 0, 0, 0]
    cols = np.flatnonzero(mask[rows[0]: rows[-1] + 1].any(axis=0))
    return int(mask[rows[0]: rows[-1] + 1].sum()), [int(cols[0]), int(rows[0]),
                                                     int(cols[-1] - cols[0] + 1),
                                                     int(rows[-1] - rows[0] + 1)]


def coco_segments_info(ids: np.ndarray, segments_info: list[dict],
                       thing_label_to_category: dict[int, int] | None = None,
                       stuff_label_to_category: dict[int, int] | None = None) -> list[dict]:
    """COCO panoptic ``segments_info`` for a map and detectron2-style segments.

    ``category_id`` in the segments is a model label: thing labels map through
    ``thing_label_to_category``, stuff labels through ``stuff_label_to_category`` (identity when
    None; detectron2's metadata gives the inverse of ``*_dataset_id_to_contiguous_id``).
    Segments that painted no pixel are dropped (COCO panoptic requires area > 0).
    """
    out = []
    for seg in segments_info:
        isthing = bool(seg.get("isthing", True))
        table = thing_label_to_category if isthing else stuff_label_to_category
        label = int(seg["category_id"])
        if table is not None and label not in table:
            kind = "thing" if isthing else "stuff"
            raise D2SegError(f"{kind} label {label} has no dataset category id",
                             where=f"segment {seg['id']}",
                             hint="check the label -> category mapping")
        area, bbox = segment_area_and_bbox(ids, int(seg["id"]))
        if area == 0:
            continue
        out.append({"id": int(seg["id"]), "category_id": table[label] if table else label,
                    "isthing": int(isthing), "area": area, "bbox": bbox,
                    "iscrowd": int(seg.get("iscrowd", 0))})
    return out


def export_coco_panoptic(predictions: Iterable[tuple[dict, np.ndarray, list[dict]]],
                         out_json: str | os.PathLike, categories: list[dict],
                         png_folder: str | os.PathLike | None = None, *,
                         thing_label_to_category: dict[int, int] | None = None,
                         stuff_label_to_category: dict[int, int] | None = None) -> dict:
    """Write COCO panoptic PNGs + JSON; returns the JSON written.

    ``predictions``: (image, panoptic ids (H, W), detectron2-style segments_info) per image,
    ``image`` a COCO image dict (``id``, ``file_name``, ``height``, ``width``). PNGs go to
    ``png_folder`` (default: ``out_json`` without ``.json``, panopticapi's convention) named
    after the image's file name with a ``.png`` suffix; an image whose name an earlier one
    already took (``a/x.jpg`` and ``b/x.jpg``, or ``x.jpg`` and ``x.png``) gets a numeric
    suffix, ``x_2.png``, ``x_3.png``, ... (``d2seg.io.files.UniqueNames``). Each annotation's
    ``file_name`` names its PNG.
    """
    out_json = Path(out_json)
    png_folder = Path(png_folder) if png_folder else out_json.with_suffix("")
    images, annotations, names = [], [], UniqueNames()
    for image, ids, segments in predictions:
        ids = np.asarray(ids.cpu() if hasattr(ids, "cpu") else ids)
        if "height" in image and tuple(ids.shape) != (image["height"], image["width"]):
            raise D2SegError(f"panoptic map is {ids.shape[1]}x{ids.shape[0]} but the image is "
                             f"{image['width']}x{image['height']}", where=f"image {image['id']}")
        file_name = names.take(Path(image["file_name"]).stem) + ".png"
        write_panoptic_png(png_folder / file_name, ids)
        images.append({k: image[k] for k in ("id", "file_name", "height", "width") if k in image})
        annotations.append({"image_id": image["id"], "file_name": file_name,
                            "segments_info": coco_segments_info(
                                ids, segments, thing_label_to_category, stuff_label_to_category)})
    data = {"images": images, "annotations": annotations, "categories": list(categories)}
    write_json_atomic(out_json, data)
    return data
