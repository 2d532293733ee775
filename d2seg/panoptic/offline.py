"""Combine saved predictions (COCO instance results + semantic maps on disk) into COCO panoptic.

The offline counterpart of Panoptic FPN inference, for predictions made by any models:

* instances: a COCO results JSON (``image_id``, ``category_id``, ``score``, RLE ``segmentation``);
* semantic: one file per image named after the image (``<stem>.png`` or ``<stem>.npy``): a PNG
  label map whose values are the dataset's category ids, or an ``.npy`` array holding such a
  label map (H, W) or scores (C, H, W) whose channel i is the i-th category of the dataset;
* the dataset JSON gives the images (``id``, ``file_name``, ``height``, ``width``) and the
  categories with ``isthing``.

No torch: the combination runs on NumPy (``d2seg.panoptic.combine_numpy``).

The semantic map is used as a full label map: only stuff categories fill the pixels no instance
took, thing and unknown values (VOID, e.g. 0 or 255) never do.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from d2seg.errors import D2SegError
from d2seg.io.json import read_json
from d2seg.io.labels import read_label_png
from d2seg.panoptic.combine_numpy import (
    DEFAULT_OVERLAP_THRESHOLD,
    DEFAULT_SCORE_THRESHOLD,
    DEFAULT_STUFF_AREA_THRESHOLD,
    combine_panoptic_numpy,
    decode_coco_results,
)
from d2seg.panoptic.export import export_coco_panoptic


def load_semantic(folder: Path, image: dict, categories: list[dict]) -> np.ndarray:
    """The category-id label map of one image from ``<stem>.png`` or ``<stem>.npy``."""
    stem = Path(image["file_name"]).stem
    png, npy = folder / f"{stem}.png", folder / f"{stem}.npy"
    if png.is_file():
        return read_label_png(png, "semantic PNG").astype(np.int64)
    if npy.is_file():
        array = np.load(npy)
        if array.ndim == 2:
            return array.astype(np.int64)
        if array.ndim == 3 and array.shape[0] == len(categories):
            ids = np.array([c["id"] for c in categories], dtype=np.int64)
            return ids[array.argmax(axis=0)]
        raise D2SegError(f"array of shape {array.shape}: expected (H, W) category ids or "
                         f"({len(categories)}, H, W) scores", file=str(npy))
    raise D2SegError(f"no semantic prediction for image {image['id']}", file=str(png),
                     hint=f"write {stem}.png (label map) or {stem}.npy in the semantic folder")


def combine_saved_predictions(instances_json, semantic_dir, dataset_json, out_dir, *,
                              score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                              overlap_threshold: float = DEFAULT_OVERLAP_THRESHOLD,
                              stuff_area_threshold: float = DEFAULT_STUFF_AREA_THRESHOLD,
                              progress: bool | None = None) -> dict:
    """Write ``out_dir/panoptic.json`` and ``out_dir/panoptic/*.png``; returns the JSON."""
    from tqdm import tqdm
    import sys

    dataset = read_json(dataset_json, "dataset JSON file")
    if not isinstance(dataset, dict) or "images" not in dataset or "categories" not in dataset:
        raise D2SegError("needs 'images' and 'categories'", file=str(dataset_json),
                         hint="give the dataset's COCO (panoptic) JSON")
    categories = dataset["categories"]
    if any("isthing" not in c for c in categories):
        raise D2SegError("categories need an 'isthing' field", file=str(dataset_json),
                         hint="use the COCO panoptic categories")
    results = read_json(instances_json, "instances results file")
    if not isinstance(results, list):
        raise D2SegError("expected a list of COCO results", file=str(instances_json))
    by_image = defaultdict(list)
    for r in results:
        by_image[r["image_id"]].append(r)
    stuff_ids = {c["id"] for c in categories if c["isthing"] != 1}
    thing_ids = {c["id"] for c in categories if c["isthing"] == 1}
    semantic_dir = Path(semantic_dir)
    if not semantic_dir.is_dir():
        raise D2SegError("semantic folder not found", file=str(semantic_dir))

    def predictions():
        bar = tqdm(dataset["images"], desc="combine", unit="img",
                   disable=not sys.stderr.isatty() if progress is None else not progress)
        for image in bar:
            h, w = image["height"], image["width"]
            sem = load_semantic(semantic_dir, image, categories)
            if sem.shape != (h, w):
                raise D2SegError(f"semantic map is {sem.shape[1]}x{sem.shape[0]}, image is "
                                 f"{w}x{h}", where=f"image {image['id']}")
            scores, classes, masks = decode_coco_results(by_image.get(image["id"], []), h, w)
            unknown = set(classes.tolist()) - thing_ids
            if unknown:
                raise D2SegError(f"instance category_id {min(unknown)} is not a thing category",
                                 file=str(instances_json), where=f"image {image['id']}")
            present = set(np.unique(sem).tolist())
            panoptic, segments = combine_panoptic_numpy(
                scores, classes, masks, sem, score_threshold=score_threshold,
                overlap_threshold=overlap_threshold, stuff_area_threshold=stuff_area_threshold,
                skip_semantic_labels=present - stuff_ids)
            yield image, panoptic, segments

    out_dir = Path(out_dir)
    return export_coco_panoptic(predictions(), out_dir / "panoptic.json", categories,
                                out_dir / "panoptic")
