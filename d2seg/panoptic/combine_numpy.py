"""The panoptic combination heuristic of ``d2seg.panoptic.combine`` on NumPy arrays, no torch.

For commands that combine saved predictions (``d2seg panoptic combine``), where no model runs
and importing torch would cost seconds. Same rules and output as
:func:`d2seg.panoptic.combine.combine_panoptic` (tests/panoptic/test_combine_numpy.py compares
them): instances by decreasing score (ties: stable, in input order), each painting the free
pixels of its mask unless more than ``overlap_threshold`` of it is taken; then each semantic
label not in ``skip`` fills its free pixels when at least ``stuff_area_threshold`` remain.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from d2seg.errors import D2SegError

DEFAULT_SCORE_THRESHOLD = 0.5
DEFAULT_OVERLAP_THRESHOLD = 0.5
DEFAULT_STUFF_AREA_THRESHOLD = 4096


def _bounding_slices(mask: np.ndarray):
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask[rows[0]: rows[-1] + 1].any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def combine_panoptic_numpy(scores, classes, masks, semantic, *,
                           score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                           overlap_threshold: float = DEFAULT_OVERLAP_THRESHOLD,
                           stuff_area_threshold: float = DEFAULT_STUFF_AREA_THRESHOLD,
                           skip_semantic_labels: Sequence[int] = (0,)):
    """(panoptic int32 map, segments_info) from N scores, N classes, (N, H, W) masks and an
    (H, W) integer label map."""
    sem = np.asarray(semantic)
    if sem.ndim != 2:
        raise D2SegError(f"semantic prediction has shape {tuple(sem.shape)}",
                         hint="give an (H, W) label map")
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    masks = np.asarray(masks)
    if scores.size and tuple(masks.shape[-2:]) != tuple(sem.shape):
        raise D2SegError(f"instance masks are {tuple(masks.shape[-2:])} but the semantic map is "
                         f"{tuple(sem.shape)}", hint="resize both predictions to the image size first")
    panoptic = np.zeros(sem.shape, dtype=np.int32)
    segments: list[dict] = []
    score_list, class_list = scores.tolist(), classes.tolist()
    for inst in np.argsort(-scores, kind="stable").tolist():
        score = score_list[inst]
        if score < score_threshold:
            break
        mask = masks[inst].astype(bool, copy=False)
        box = _bounding_slices(mask)
        if box is None:
            continue
        mask_box, pan_box = mask[box], panoptic[box]  # views
        area = int(mask_box.sum())
        free_in_mask = mask_box & (pan_box == 0)
        free_area = int(free_in_mask.sum())
        if (area - free_area) * 1.0 / area > overlap_threshold:
            continue
        segment_id = len(segments) + 1
        pan_box[free_in_mask] = segment_id
        segments.append({"id": segment_id, "isthing": True, "score": score,
                         "category_id": class_list[inst], "instance_id": inst})
    skip = {int(v) for v in skip_semantic_labels}
    flat = sem.reshape(-1).astype(np.int64, copy=False)
    if flat.size:
        labels, index = np.unique(flat, return_inverse=True)
        free = (panoptic == 0).reshape(-1)
        free_counts = np.bincount(index[free], minlength=labels.size)
        lut = np.zeros(labels.size, dtype=np.int32)
        next_id = len(segments) + 1
        for slot, (label, count) in enumerate(zip(labels.tolist(), free_counts.tolist())):
            if label in skip or count < stuff_area_threshold:
                continue
            segment_id, next_id = next_id, next_id + 1
            lut[slot] = segment_id
            segments.append({"id": segment_id, "isthing": False, "category_id": label,
                             "area": count})
        if lut.any():
            painted = lut[index].reshape(panoptic.shape)
            np.copyto(panoptic, painted, where=(panoptic == 0))
    return panoptic, segments


def decode_coco_results(results, height: int, width: int):
    """Scores, category ids and (N, H, W) boolean masks of one image's COCO results (RLE
    masks), checked: one error line for a result without an RLE or with another size.
    ``d2seg.panoptic.combine`` turns them into torch tensors."""
    from pycocotools import mask as mask_util

    results = list(results)
    masks = np.zeros((len(results), height, width), dtype=bool)
    for k, r in enumerate(results):
        rle = r.get("segmentation")
        if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
            raise D2SegError("instance result has no RLE segmentation",
                             where=f"image {r.get('image_id')}, result {k}",
                             hint="export instance results with masks (COCO 'segm' format)")
        if list(rle["size"]) != [height, width]:
            raise D2SegError(f"RLE size {rle['size']} differs from the image size "
                             f"{[height, width]}", where=f"image {r.get('image_id')}, result {k}")
        if isinstance(rle["counts"], str):
            rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
        masks[k] = mask_util.decode(rle).astype(bool)
    scores = np.array([float(r["score"]) for r in results], dtype=np.float32)
    classes = np.array([int(r["category_id"]) for r in results], dtype=np.int64)
    return scores, classes, masks
