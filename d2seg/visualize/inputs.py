"""Turn COCO JSON and detectron2 outputs into the arguments of ``draw_instances``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_utils

from d2seg.errors import D2SegError
from d2seg.io.coco import load_coco
from d2seg.io.rle import to_rle


@dataclass
class InstanceSet:
    """What ``draw_instances`` draws: masks (RLEs or arrays; may be None), XYXY boxes, classes."""

    masks: list | np.ndarray | None
    boxes: np.ndarray
    classes: list
    scores: list | None = None
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.classes)

    def draw_kwargs(self) -> dict:
        """Keyword arguments for ``draw_instances``."""
        return {"masks": self.masks, "boxes": self.boxes, "classes": self.classes,
                "scores": self.scores}

    def above(self, score_thresh: float) -> "InstanceSet":
        """The instances scoring at least ``score_thresh`` (all when there are no scores)."""
        if self.scores is None:
            return self
        keep = [i for i, s in enumerate(self.scores) if s >= score_thresh]
        masks = None if self.masks is None else [self.masks[i] for i in keep]
        return InstanceSet(masks, self.boxes[keep].reshape(-1, 4), [self.classes[i] for i in keep],
                           [self.scores[i] for i in keep])


def _xywh_to_xyxy(boxes) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
    b[:, 2:] += b[:, :2]
    return b


def _image_size(coco: Mapping, image_id) -> tuple[int, int]:
    for im in coco.get("images", []):
        if im["id"] == image_id:
            return int(im["height"]), int(im["width"])
    raise D2SegError(f"image id {image_id} is not in the annotation file")


def instances_from_coco_results(results: Sequence[Mapping], image_id,
                                image_size: tuple[int, int] | None = None) -> InstanceSet:
    """The detections of one image from a COCO results list (RLE masks and/or XYWH boxes).

    ``image_size`` (height, width) is needed only for polygon segmentations.
    """
    return results_to_instances([r for r in results if r.get("image_id") == image_id],
                                image_size, where=f"image {image_id}")


def results_to_instances(entries: Sequence[Mapping], image_size: tuple[int, int] | None = None,
                         *, where: str = "") -> InstanceSet:
    """COCO result entries already selected for one image -> an ``InstanceSet``."""
    rles, boxes = [], []
    has_masks = any("segmentation" in r for r in entries)
    for j, r in enumerate(entries):
        here = f"{where}: result {j}" if where else f"result {j}"
        if has_masks:
            seg = r.get("segmentation")
            if seg is None:
                raise D2SegError("some results of this image have no segmentation", where=here)
            if isinstance(seg, Mapping) and "size" in seg:
                h, w = seg["size"]
            elif image_size is not None:
                h, w = image_size
            else:
                raise D2SegError("polygon results need the image size", where=here)
            rles.append(to_rle(seg, int(h), int(w), where=here))
        if "bbox" in r:
            boxes.append(r["bbox"])
        elif has_masks:
            boxes.append(mask_utils.toBbox(rles[-1]).tolist())
        else:
            raise D2SegError("result has neither bbox nor segmentation", where=here)
    return InstanceSet(rles if has_masks else None, _xywh_to_xyxy(boxes),
                       [r["category_id"] for r in entries],
                       [float(r.get("score", 1.0)) for r in entries])


def annotations_from_coco(coco, image_id) -> InstanceSet:
    """The ground truth of one image (polygons and RLEs decoded with pycocotools), no scores.

    ``extra["iscrowd"]`` tells which annotations are crowd regions.
    """
    coco = load_coco(coco)
    h, w = _image_size(coco, image_id)
    anns = [a for a in coco.get("annotations", []) if a.get("image_id") == image_id]
    return annotations_to_instances(anns, h, w)


def annotations_to_instances(anns: Sequence[Mapping], height: int, width: int) -> InstanceSet:
    """COCO annotations already selected for one ``height`` x ``width`` image -> InstanceSet."""
    rles, boxes = [], []
    for a in anns:
        where = f"annotation {a.get('id', '?')}"
        if "segmentation" in a and a["segmentation"]:
            rles.append(to_rle(a["segmentation"], height, width, where=where))
        else:
            rles.append(None)
        if "bbox" in a:
            boxes.append(a["bbox"])
        elif rles[-1] is not None:
            boxes.append(mask_utils.toBbox(rles[-1]).tolist())
        else:
            raise D2SegError("annotation has neither bbox nor segmentation", where=where)
    if any(r is None for r in rles):
        # Boxes-only annotations are drawn as empty masks so boxes and labels still show.
        empty = mask_utils.encode(np.zeros((height, width, 1), np.uint8, order="F"))[0]
        rles = [empty if r is None else r for r in rles]
    return InstanceSet(rles or None, _xywh_to_xyxy(boxes), [a["category_id"] for a in anns],
                       None, {"iscrowd": [bool(a.get("iscrowd", 0)) for a in anns]})


def group_by_image(entries: Sequence[Mapping]) -> dict:
    """Annotations or results keyed by ``image_id`` (one pass, for whole datasets)."""
    groups: dict = {}
    for e in entries:
        groups.setdefault(e.get("image_id"), []).append(e)
    return groups


def instances_from_detectron2(instances) -> InstanceSet:
    """detectron2 ``Instances`` (pred_masks, pred_boxes, scores, pred_classes; all optional)."""
    def get(name):
        return instances.get(name) if instances.has(name) else None

    def as_np(x):
        if x is None:
            return None
        x = getattr(x, "tensor", x)
        return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)

    n = len(instances)
    masks = as_np(get("pred_masks"))
    boxes = as_np(get("pred_boxes"))
    classes = as_np(get("pred_classes"))
    scores = as_np(get("scores"))
    if boxes is None:
        boxes = np.zeros((0, 4)) if masks is None else None
    if masks is not None and masks.dtype.kind == "f":
        masks = masks > 0.5
    if boxes is None:
        from d2seg.visualize.render import normalize_masks

        h, w = instances.image_size
        boxes = np.array([m.box if m else (0, 0, 0, 0) for m in normalize_masks(masks, h, w)],
                         np.float64).reshape(-1, 4)
    return InstanceSet(masks, np.asarray(boxes, np.float64).reshape(-1, 4),
                       [0] * n if classes is None else classes.tolist(),
                       None if scores is None else scores.astype(float).tolist())


def panoptic_from_detectron2(panoptic_seg, segments_info: Sequence[Mapping],
                             thing_classes: Sequence[str], stuff_classes: Sequence[str]) -> dict:
    """detectron2's ``outputs["panoptic_seg"]`` as keyword arguments for ``draw_panoptic``.

    detectron2 numbers thing and stuff categories separately (``thing_classes`` and
    ``stuff_classes`` of the dataset's metadata); stuff ids are shifted past the things here
    so that one list of names, ``isthing`` flags and colours covers both.
    """
    pan = panoptic_seg.detach().cpu().numpy() if hasattr(panoptic_seg, "detach") else panoptic_seg
    offset = len(thing_classes)
    segments = []
    for s in segments_info:
        thing = bool(s.get("isthing", False))
        seg = dict(s, isthing=thing,
                   category_id=int(s["category_id"]) + (0 if thing else offset))
        segments.append(seg)
    return {"panoptic_map": np.asarray(pan), "segments_info": segments,
            "class_names": [*thing_classes, *stuff_classes],
            "isthing": [True] * offset + [False] * len(stuff_classes)}
