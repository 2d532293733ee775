"""TIDE-style error analysis (Bolya et al., ECCV 2020) on numpy and pycocotools' RLE ops.

Every detection that is not a true positive at the foreground IoU (0.5) gets one error type,
tested in this order (the same order, thresholds and tie rules as the reference ``tidecv``):

``localization``  right class, best same-class IoU in [background IoU, foreground IoU]
``classification`` wrong class, IoU >= foreground IoU with a box/mask of another class
``duplicate``     right class, IoU >= foreground IoU with an object already matched
``background``    IoU <= background IoU (0.1) with every object of any class
``both``          everything else (wrong class and badly localised)

and every object no detection explains is ``missed``. The dAP of a type is the AP gained when
all errors of that type are fixed (one detection per object becomes a true positive, the rest
are dropped; missed objects are removed from the ground truth); ``false_positive`` and
``false_negative`` are the AP gained with perfect precision (every false positive scored 0) and
with perfect recall (every unmatched object removed). AP here is TIDE's: IoU 0.5 only, 101
recall points, averaged over every class with a detection or an object; "mAP" in % (0-100).

The matching is TIDE's, which differs slightly from pycocotools': detections (the 100 highest
scored per image) take, in score order, their highest-IoU unmatched object of their class;
crowd regions (``iscrowd``) swallow unmatched detections whose crowd IoU (intersection over the
detection's area) exceeds the foreground IoU.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_utils

from d2seg.errors import D2SegError
from d2seg.io.json import read_json_or_parsed
from d2seg.io.rle import to_rle

#: Main error types, in TIDE's order, with TIDE's short names.
ERROR_TYPES = ("classification", "localization", "both", "duplicate", "background", "missed")
SHORT_NAMES = {"classification": "Cls", "localization": "Loc", "both": "Both",
               "duplicate": "Dupe", "background": "Bkg", "missed": "Miss",
               "false_positive": "FalsePos", "false_negative": "FalseNeg"}
SPECIAL_TYPES = ("false_positive", "false_negative")
IOU_TYPES = ("bbox", "segm")
MAX_DETS = 100  # per image, as COCO and TIDE


# ------------------------------------------------------------------ inputs

def _geometry(entry: dict, iou_type: str, height: int | None = None, width: int | None = None):
    if iou_type == "bbox":
        box = entry.get("bbox")
        if box is None and entry.get("segmentation") is not None:
            box = mask_utils.toBbox(to_rle(entry["segmentation"], height, width)).tolist()
        return None if box is None else [float(v) for v in box]
    seg = entry.get("segmentation")
    if seg is None:
        return None
    return to_rle(seg, height, width)


def _iou(dets: list, gts: list, crowd: list[bool]) -> np.ndarray:
    if not dets or not gts:
        return np.zeros((len(dets), len(gts)))
    return np.asarray(mask_utils.iou(dets, gts, [int(c) for c in crowd]), np.float64).reshape(
        len(dets), len(gts))


# ------------------------------------------------------------------ results of a run

@dataclass
class Detection:
    index: int        # position in the results file
    image_id: int
    category_id: int
    score: float
    status: str = "tp"  # "tp", "fp", or "ignored" (swallowed by a crowd region)
    error: str | None = None  # its error type when not a true positive
    gt: int | None = None     # the object it matched or its error refers to (index in gt list)
    iou: float = 0.0          # best IoU with an object of its class
    fixed: tuple | None = None  # (class, score) it becomes when its error is fixed; None: dropped


@dataclass
class GroundTruth:
    index: int        # position among the annotations
    id: int           # annotation id
    image_id: int
    category_id: int
    matched: bool = False
    usable: bool = False  # a localization/classification error can be fixed into it
    best_score: float = -1.0
    best_det: int | None = None
    fn_type: str | None = None  # for unmatched objects: "missed" or the error that explains it


@dataclass
class TideRun:
    """One IoU type's matching, errors and the AP data TIDE computes dAPs from."""

    iou_type: str
    pos_iou: float
    bg_iou: float
    categories: dict            # category id -> name
    image_ids: list
    detections: list = field(default_factory=list)   # evaluated Detection objects, push order
    gts: list = field(default_factory=list)          # every non-crowd GroundTruth
    errors: list = field(default_factory=list)       # ("det", Detection) / ("gt", GroundTruth)
    class_order: list = field(default_factory=list)  # classes in TIDE's first-seen order

    # ---------------------------------------------------------------- AP

    def gt_counts(self) -> dict:
        counts = {}
        for g in self.gts:
            counts[g.category_id] = counts.get(g.category_id, 0) + 1
        return counts

    def _base_points(self):
        return [(d.category_id, d.score, d.status == "tp") for d in self.detections
                if d.status != "ignored"]

    def _tp_points(self):
        return [(d.category_id, d.score, True) for d in self.detections if d.status == "tp"]

    def _error_points(self, fix: str | None):
        points, gt_delta = [], defaultdict(int)
        for kind, e in self.errors:
            if kind == "gt":
                if fix == "missed":
                    gt_delta[e.category_id] -= 1
                continue
            if e.error == fix:
                if e.fixed is not None:
                    points.append((e.fixed[0], e.fixed[1], True))
            elif e.status != "ignored":
                points.append((e.category_id, e.score, False))
        return points, gt_delta

    def ap(self) -> float:
        return mean_ap(self._base_points(), self.gt_counts())

    def fixed_ap(self, error_type: str) -> float:
        points, delta = self._error_points(error_type)
        counts = self.gt_counts()
        for c, d in delta.items():
            counts[c] = counts.get(c, 0) + d
        return mean_ap(points + self._tp_points(), counts, self._known_classes())

    def _known_classes(self):
        return set(self.gt_counts()) | {c for c, _, _ in self._base_points()}

    def main_errors(self) -> dict:
        base = self.ap()
        return {t: max(self.fixed_ap(t) - base, 0.0) for t in ERROR_TYPES}

    def special_errors(self) -> dict:
        base = self.ap()
        points, _ = self._error_points(None)
        points += self._tp_points()
        perfect_precision = [(c, 1.0 if tp else 0.0, tp) for c, _, tp in points]
        counts = self.gt_counts()
        fn = defaultdict(int)
        for g in self.gts:
            if not g.matched:
                fn[g.category_id] += 1
        perfect_recall = {c: n - fn.get(c, 0) for c, n in counts.items()}
        known = self._known_classes()
        return {"false_positive": mean_ap(perfect_precision, counts, known) - base,
                "false_negative": mean_ap(points, perfect_recall, known) - base}

    def error_counts(self) -> dict:
        counts = {t: 0 for t in ERROR_TYPES}
        for kind, e in self.errors:
            counts["missed" if kind == "gt" else e.error] += 1
        return counts

    def summary(self) -> dict:
        return {"ap50": self.ap(), "dAP": self.main_errors(), "special_dAP": self.special_errors(),
                "counts": self.error_counts(),
                "num_detections": sum(d.status != "ignored" for d in self.detections),
                "num_objects": len(self.gts)}


def ap_of(points, num_gt: int) -> float:
    """TIDE's AP (%) of one class: ``points`` are (score, is_true) in push order (ties keep it)."""
    if num_gt <= 0:
        return 0.0
    if not points:
        return 0.0
    scores = np.array([s for s, _ in points], np.float64)
    true = np.array([t for _, t in points], bool)
    order = np.argsort(-scores, kind="stable")
    true = true[order]
    tp = np.cumsum(true)
    fp = np.cumsum(~true)
    precision = tp / (tp + fp)
    recall = tp / num_gt
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    x = np.arange(101) / 100
    idx = np.searchsorted(recall, x, side="left")
    y = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
    return float(math.fsum(y.tolist()) / 101 * 100)


def per_class_ap(points, gt_counts: dict, classes=None) -> dict:
    """TIDE AP (%) per class, for every class with a detection or an object."""
    by_class = defaultdict(list)
    for c, s, t in points:
        by_class[c].append((s, t))
    classes = set(classes or ()) | set(by_class) | set(gt_counts)
    return {c: ap_of(by_class.get(c, []), gt_counts.get(c, 0)) for c in classes
            if by_class.get(c) or gt_counts.get(c, 0) != 0}


def mean_ap(points, gt_counts: dict, classes=None) -> float:
    aps = per_class_ap(points, gt_counts, classes)
    return float(sum(aps.values()) / len(aps)) if aps else 0.0


# ------------------------------------------------------------------ matching and errors

def run_tide(gt, results, iou_type: str = "bbox", pos_iou: float = 0.5,
             bg_iou: float = 0.1, max_dets: int = MAX_DETS) -> TideRun:
    """Match ``results`` (COCO results list or file) to ``gt`` (COCO dict or file) and classify
    every error of one IoU type ("bbox" or "segm")."""
    if iou_type not in IOU_TYPES:
        raise D2SegError(f"unknown IoU type {iou_type!r}", hint="use bbox or segm")
    gt = read_json_or_parsed(gt, "ground truth")
    results = read_json_or_parsed(results, "results")
    if not isinstance(gt, dict) or "images" not in gt or "annotations" not in gt:
        raise D2SegError("the ground truth is not a COCO instances file (needs images and "
                         "annotations)")
    if not isinstance(results, list):
        raise D2SegError("the results are not a COCO results list")
    images = {im["id"]: im for im in gt["images"]}
    categories = {c["id"]: c.get("name", str(c["id"])) for c in gt.get("categories", [])}
    run = TideRun(iou_type, pos_iou, bg_iou, categories, list(images))

    anns_by_image = defaultdict(list)
    for k, ann in enumerate(gt["annotations"]):
        anns_by_image[ann["image_id"]].append((k, ann))
    dets_by_image = defaultdict(list)
    for k, det in enumerate(results):
        dets_by_image[det["image_id"]].append((k, det))

    for image_id, im in images.items():
        _match_image(run, im, anns_by_image.get(image_id, []), dets_by_image.get(image_id, []),
                     max_dets)

    seen = []
    for g in run.gts:
        if g.category_id not in seen:
            seen.append(g.category_id)
    for d in run.detections:
        if d.category_id not in seen:
            seen.append(d.category_id)
    run.class_order = seen
    # the fixes of localization/classification errors: only the best scored per object
    for kind, e in run.errors:
        if kind == "det" and e.error in ("localization", "classification") and e.fixed:
            g = run._gt_by_index[e.gt]
            if g.best_det != e.index:
                e.fixed = None
    for g in run.gts:
        if not g.matched:
            if g.usable:
                best = next(d for d in run._det_by_index.values() if d.index == g.best_det)
                g.fn_type = best.error
            else:
                g.fn_type = "missed"
    return run


def _match_image(run: TideRun, image: dict, anns: list, dets: list, max_dets: int) -> None:
    if not hasattr(run, "_gt_by_index"):
        run._gt_by_index, run._det_by_index = {}, {}
    h, w = image.get("height"), image.get("width")
    objects, crowds = [], []
    for k, ann in anns:
        geom = _geometry(ann, run.iou_type, h, w)
        target = crowds if ann.get("iscrowd", 0) else objects
        target.append((k, ann, geom))
    gts = []
    for k, ann, _ in objects:
        g = GroundTruth(k, ann.get("id", k), image["id"], ann["category_id"])
        gts.append(g)
        run.gts.append(g)
        run._gt_by_index[k] = g

    # the highest scored first (stable: ties keep the file's order), at most max_dets
    dets = sorted(dets, key=lambda kd: -float(kd[1]["score"]))[:max_dets]
    detections, geoms = [], []
    for k, det in dets:
        geom = _geometry(det, run.iou_type, h, w)
        if geom is None:
            raise D2SegError(f"a detection has no {'box' if run.iou_type == 'bbox' else 'mask'}",
                             where=f"results entry {k}",
                             hint="evaluate only the IoU types the results have (--iou-types)")
        d = Detection(k, image["id"], det["category_id"], float(det["score"]))
        detections.append(d)
        geoms.append(geom)
        run._det_by_index[k] = d

    iou = _iou(geoms, [geom for _, _, geom in objects], [False] * len(objects))
    det_cls = np.array([d.category_id for d in detections])
    gt_cls = np.array([g.category_id for g in gts])
    same = det_cls[:, None] == gt_cls[None, :] if gts and detections else np.zeros(iou.shape, bool)
    cls_iou = iou * same
    buffer = cls_iou.copy()
    for i, d in enumerate(detections):
        d.status = "fp"
        if gts:
            j = int(np.argmax(buffer[i]))
            d.iou = float(cls_iou[i].max())
            if buffer[i, j] >= run.pos_iou:
                d.status, d.gt = "tp", gts[j].index
                gts[j].matched = True
                buffer[:, j] = 0
    for k, ann, geom in crowds:
        crowd_iou = _iou(geoms, [geom], [True])[:, 0] if geom is not None else None
        if crowd_iou is None:
            continue
        for i, d in enumerate(detections):
            if d.status != "tp" and crowd_iou[i] > run.pos_iou and ann["category_id"] in (
                    d.category_id, -1):
                d.status = "ignored"

    run.detections.extend(detections)
    used = np.array([g.matched for g in gts], bool)[None, :]
    other_iou = iou * ~same
    used_iou = iou * same * used
    for i, d in enumerate(detections):
        if d.status == "tp":
            continue
        if not gts:
            _error(run, d, "background")
            continue
        j = int(np.argmax(cls_iou[i]))
        if run.bg_iou <= cls_iou[i, j] <= run.pos_iou:
            _fixable_error(run, d, "localization", gts[j], d.category_id)
            continue
        j = int(np.argmax(other_iou[i]))
        if other_iou[i, j] >= run.pos_iou:
            _fixable_error(run, d, "classification", gts[j], gts[j].category_id)
            continue
        j = int(np.argmax(used_iou[i]))
        if used_iou[i, j] >= run.pos_iou:
            d.gt = gts[j].index
            _error(run, d, "duplicate")
            continue
        if iou[i].max() <= run.bg_iou:
            _error(run, d, "background")
            continue
        _error(run, d, "both")
    for g in gts:
        if not g.matched and not g.usable:
            run.errors.append(("gt", g))


def _error(run: TideRun, d: Detection, kind: str) -> None:
    d.error = kind
    d.fixed = None
    run.errors.append(("det", d))


def _fixable_error(run: TideRun, d: Detection, kind: str, g: GroundTruth, fixed_class) -> None:
    d.error, d.gt = kind, g.index
    run.errors.append(("det", d))
    if g.matched:  # the object is someone else's true positive: fixing drops this detection
        d.fixed = None
        return
    g.usable = True
    d.fixed = (fixed_class, d.score)
    if g.best_score < d.score:
        g.best_score, g.best_det = d.score, d.index
