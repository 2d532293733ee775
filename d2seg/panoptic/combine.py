"""Combine instance and semantic predictions into one panoptic map (the Panoptic FPN heuristic).

The heuristic of Kirillov et al. (Panoptic Segmentation, section 7), as detectron2's Panoptic FPN
and panopticapi's combine script apply it:

1. instances in decreasing score order; stop at the first score below ``score_threshold``;
2. an instance whose mask overlaps already painted pixels by more than ``overlap_threshold`` of
   its own area is dropped, otherwise it paints its still-free pixels (empty masks are skipped);
3. each semantic label, in increasing label order, paints the pixels still free if there are at
   least ``stuff_area_threshold`` of them; labels in ``skip_semantic_labels`` never paint.

Two conventions for the semantic map:

* detectron2's (default, ``skip_semantic_labels=(0,)``): label 0 stands for "any thing" and the
  other labels are stuff classes. Output (map and ``segments_info``) is identical to
  ``detectron2.modeling.meta_arch.panoptic_fpn.combine_semantic_and_instance_outputs``.
* a full label map (``skip_semantic_labels`` = the thing labels plus any void label): thing
  labels never fill stuff regions, as in panopticapi's
  ``combine_semantic_and_instance_predictions``;
  pixels whose label is skipped and not covered by an instance stay 0 (VOID).

Segment ids are 1, 2, ... in painting order. detectron2 loops over every instance and every
label with full-image operations; here each instance works only inside its mask's bounding box
and all stuff labels are painted in one pass, which gives the same result several times faster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from d2seg.errors import D2SegError

DEFAULT_SCORE_THRESHOLD = 0.5
DEFAULT_OVERLAP_THRESHOLD = 0.5
DEFAULT_STUFF_AREA_THRESHOLD = 4096


@dataclass
class InstancePredictions:
    """The three fields of detectron2 ``Instances`` that the combination reads."""

    scores: torch.Tensor  # (N,) float
    pred_classes: torch.Tensor  # (N,) int
    pred_masks: torch.Tensor  # (N, H, W) bool (any dtype: non-zero is foreground)

    def __len__(self) -> int:
        return int(self.scores.shape[0])


@dataclass
class PanopticPrediction:
    """A panoptic map (int32, 0 = VOID) and one dict per segment, in detectron2's format."""

    panoptic_seg: torch.Tensor
    segments_info: list[dict]


def semantic_labels(semantic) -> torch.Tensor:
    """An (H, W) label map from a label map, or from (C, H, W) logits/probabilities (argmax)."""
    sem = torch.as_tensor(semantic)
    if sem.ndim == 3:
        return sem.argmax(dim=0)
    if sem.ndim != 2:
        raise D2SegError(f"semantic prediction has shape {tuple(sem.shape)}",
                         hint="give an (H, W) label map or (C, H, W) logits/probabilities")
    if sem.is_floating_point():
        raise D2SegError("a 2-D semantic prediction must hold integer labels, not floats",
                         hint="pass (C, H, W) scores to take the argmax")
    return sem


def instances_from_coco_results(results: Iterable[dict], height: int, width: int,
                                category_to_label: dict[int, int] | None = None
                                ) -> InstancePredictions:
    """Instances of one image from COCO results entries (``segmentation`` as RLE, ``score``).

    ``category_to_label`` maps the results' ``category_id`` to the label stored in
    ``pred_classes`` (identity when None).
    """
    from d2seg.panoptic.combine_numpy import decode_coco_results

    scores, cats, masks = decode_coco_results(results, height, width)
    cats = cats.tolist()
    if category_to_label is not None:
        missing = sorted({c for c in cats if c not in category_to_label})
        if missing:
            raise D2SegError(f"unknown category_id {missing[0]} in instance results",
                             hint="check that the results and the categories file belong together")
        cats = [category_to_label[c] for c in cats]
    return InstancePredictions(
        scores=torch.from_numpy(scores),
        pred_classes=torch.tensor(cats, dtype=torch.int64),
        pred_masks=torch.from_numpy(masks),
    )


def _bounding_slices(mask: torch.Tensor) -> tuple[slice, slice] | None:
    """Row and column slices of the smallest box holding every True pixel (None if empty)."""
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    if rows.numel() == 0:
        return None
    cols = torch.nonzero(mask[rows[0]: rows[-1] + 1].any(dim=0)).flatten()
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def _paint_instances(panoptic: torch.Tensor, instances, score_threshold: float,
                     overlap_threshold: float) -> list[dict]:
    scores = instances.scores
    order = torch.argsort(-scores)  # the same call as detectron2, so ties resolve identically
    masks = instances.pred_masks
    score_list = scores.tolist()
    class_list = instances.pred_classes.tolist()
    segments: list[dict] = []
    for inst in order.tolist():
        score = score_list[inst]
        if score < score_threshold:
            break
        mask = masks[inst]
        if mask.dtype != torch.bool:
            mask = mask.to(torch.bool)
        if mask.device != panoptic.device:
            mask = mask.to(panoptic.device)
        box = _bounding_slices(mask)
        if box is None:
            continue
        mask_box, pan_box = mask[box], panoptic[box]  # views: painting pan_box paints panoptic
        area = int(mask_box.sum())
        free_in_mask = mask_box & (pan_box == 0)
        free_area = int(free_in_mask.sum())
        if (area - free_area) * 1.0 / area > overlap_threshold:
            continue
        segment_id = len(segments) + 1
        pan_box.masked_fill_(free_in_mask, segment_id)
        segments.append({"id": segment_id, "isthing": True, "score": score,
                         "category_id": class_list[inst], "instance_id": inst})
    return segments


def _paint_stuff(panoptic: torch.Tensor, sem: torch.Tensor, skip: set[int],
                 stuff_area_threshold: float, first_id: int) -> list[dict]:
    free = panoptic == 0
    flat = sem.reshape(-1).to(torch.int64)
    if flat.numel() == 0:
        return []
    low, high = (int(v) for v in torch.aminmax(flat))
    if low >= 0 and high < (1 << 20):
        present = torch.bincount(flat, minlength=high + 1)
        labels = torch.nonzero(present).flatten()
        index = flat  # label -> its own slot
        free_counts = torch.bincount(flat[free.reshape(-1)], minlength=high + 1)[labels]
        slots = labels
        n_slots = high + 1
    else:  # negative or huge labels: compact them first
        labels, index = torch.unique(flat, sorted=True, return_inverse=True)
        free_counts = torch.bincount(index[free.reshape(-1)], minlength=labels.numel())
        slots = torch.arange(labels.numel())
        n_slots = labels.numel()
    lut = torch.zeros(n_slots, dtype=torch.int32)
    segments: list[dict] = []
    for label, slot, count in zip(labels.tolist(), slots.tolist(), free_counts.tolist()):
        if label in skip or count < stuff_area_threshold:
            continue
        segment_id = first_id + len(segments)
        lut[slot] = segment_id
        segments.append({"id": segment_id, "isthing": False, "category_id": label,
                         "area": count})
    if segments:
        painted = lut.to(panoptic.device)[index].reshape(panoptic.shape)
        panoptic.copy_(torch.where(free, painted, panoptic))
    return segments


def combine_panoptic(instances, semantic, *,
                     score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                     overlap_threshold: float = DEFAULT_OVERLAP_THRESHOLD,
                     stuff_area_threshold: float = DEFAULT_STUFF_AREA_THRESHOLD,
                     skip_semantic_labels: Sequence[int] = (0,)) -> PanopticPrediction:
    """Panoptic map + ``segments_info`` from instance and semantic predictions of one image.

    ``instances``: detectron2 ``Instances`` (``scores``, ``pred_classes``, ``pred_masks``) or
    :class:`InstancePredictions`; ``semantic``: (H, W) labels or (C, H, W) scores (tensor or
    array). With the defaults the result equals detectron2's
    ``combine_semantic_and_instance_outputs``;
    for a full label map pass the thing labels (and any void label) as ``skip_semantic_labels``.
    """
    sem = semantic_labels(semantic)
    n_instances = int(instances.scores.shape[0]) if hasattr(instances, "scores") else 0
    if n_instances and tuple(instances.pred_masks.shape[-2:]) != tuple(sem.shape):
        raise D2SegError(f"instance masks are {tuple(instances.pred_masks.shape[-2:])} but the "
                         f"semantic map is {tuple(sem.shape)}",
                         hint="resize both predictions to the image size first")
    panoptic = torch.zeros(sem.shape, dtype=torch.int32, device=sem.device)
    segments = _paint_instances(panoptic, instances, score_threshold, overlap_threshold) \
        if n_instances else []
    segments += _paint_stuff(panoptic, sem, {int(v) for v in skip_semantic_labels},
                             stuff_area_threshold, len(segments) + 1)
    return PanopticPrediction(panoptic, segments)
