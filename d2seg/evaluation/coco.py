"""COCO detection/segmentation metrics: the 12 pycocotools numbers, per-class AP, PR curves,
a class confusion matrix, as JSON, Markdown and PNG.

Numbers come from :mod:`d2seg.evaluation.fast_coco` (identical to pycocotools' ``COCOeval``:
the 12 numbers, per-class AP, the precision/recall arrays). Masks are scored without their
boxes, as detectron2 does. The same path serves ``d2seg eval``, ``evaluate_coco`` and the
COCO evaluator of training and ``--eval-only`` (:mod:`d2seg.evaluation.evaluator`).
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import math
import os
import warnings

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from d2seg.errors import D2SegError
from d2seg.io.coco import load_results
from d2seg.io.files import write_json_atomic, write_text_atomic

STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def load_gt(gt) -> COCO:
    """A pycocotools COCO from a path or an already loaded COCO (quietly)."""
    if isinstance(gt, COCO):
        return gt
    if not os.path.isfile(gt):
        raise D2SegError("ground-truth file not found", file=str(gt))
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            return COCO(str(gt))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise D2SegError(f"not a COCO instances file ({e})", file=str(gt)) from None


#: What a detection needs to be scored.
SCORED_KEYS = ("image_id", "category_id", "score")


class CocoResultsWarning(UserWarning):
    """Detections that pycocotools would accept silently but that cannot score as meant."""


def check_results(coco_gt: COCO, results: list[dict], name: str = "results") -> None:
    """One line for detections pycocotools would reject with a traceback (image ids not in the
    ground truth); one warning each, with a count, for those it would take silently (a NaN
    score, a category not in the ground truth)."""
    images = coco_gt.imgs
    bad = [r["image_id"] for r in results if r["image_id"] not in images]
    if bad:
        distinct = len(set(map(repr, bad)))
        raise D2SegError(f"image_id {bad[0]!r} is not in the ground truth ({len(bad)} detections "
                         f"on {distinct} such image id{'s' * (distinct != 1)})", file=name,
                         hint="score against the ground truth the results were made for")
    cats = coco_gt.cats
    unknown = [r["category_id"] for r in results if r["category_id"] not in cats]
    if unknown:
        warnings.warn(f"{name}: {len(unknown)} detections have a category_id not in the ground "
                      f"truth (first: {unknown[0]!r}); they are not scored", CocoResultsWarning,
                      stacklevel=3)
    nan = sum(1 for r in results if isinstance(r["score"], float) and math.isnan(r["score"]))
    if nan:
        warnings.warn(f"{name}: {nan} detections have a NaN score; they rank last",
                      CocoResultsWarning, stacklevel=3)


def class_labels(coco_gt: COCO, cat_ids) -> dict:
    """``{category id: label}``: the name, or ``name (id N)`` where two categories share it."""
    names = {c: coco_gt.cats[c]["name"] for c in cat_ids}
    counts = collections.Counter(names.values())
    repeated = {n for n, count in counts.items() if count > 1}
    return {c: f"{n} (id {c})" if n in repeated else n for c, n in names.items()}


def evaluate_coco(gt, results, iou_types=("bbox", "segm"), image_ids=None) -> dict:
    """Score COCO results: ``{iou_type: {"stats": {...12...}, "per_class": {label: AP},
    "per_class_by_id": {category id: AP}, ...}}``.

    AP values are fractions (0-1) as pycocotools reports them; -1 where undefined. Labels are
    category names, ``name (id N)`` where names repeat. The numbers, per-class AP and the
    precision/recall arrays are pycocotools' (d2seg.evaluation.fast_coco computes them).
    """
    from d2seg.evaluation import fast_coco

    name = str(results) if isinstance(results, (str, os.PathLike)) else "results"
    coco_gt = load_gt(gt)
    results = load_results(results, SCORED_KEYS)
    check_results(coco_gt, results, name)
    report = {}
    for iou_type in iou_types:
        key = "segmentation" if iou_type == "segm" else "bbox"
        dets = [d for d in results if key in d]
        if not dets:
            report[iou_type] = {"stats": {n: -1.0 for n in STAT_NAMES}, "per_class": {},
                                "per_class_by_id": {}, "num_detections": 0}
            continue
        ev = fast_coco.evaluate(coco_gt, dets, iou_type, image_ids=image_ids)
        report[iou_type] = report_from_evaluation(coco_gt, ev, len(dets))
    return report


def report_from_evaluation(coco_gt: COCO, ev, num_detections: int) -> dict:
    """One IoU type's report from an evaluation with pycocotools' ``stats``/``eval``/``params``."""
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    cat_ids = [int(c) for c in ev.params.catIds]
    by_id = {}
    for k, cat_id in enumerate(cat_ids):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        by_id[cat_id] = float(p.mean()) if p.size else -1.0
    labels = class_labels(coco_gt, cat_ids)
    return {
        "stats": dict(zip(STAT_NAMES, map(float, ev.stats))),
        "per_class": {labels[c]: ap for c, ap in by_id.items()},
        "per_class_by_id": by_id,
        "num_detections": num_detections,
        "_precision": precision,
        "_recall": ev.eval["recall"],
        "_cat_ids": cat_ids,
    }


REPORT_JSON = "coco_report.json"
REPORT_ARRAYS = "coco_report.npz"


def save_report(report: dict, folder) -> None:
    """Keep a report (with its precision/recall arrays) beside the results it scored, so that
    ``d2seg eval --config-file`` reports what the evaluator computed instead of scoring again."""
    public = {t: {k: v for k, v in r.items() if not k.startswith("_")} for t, r in report.items()}
    arrays = {f"{t}_{k[1:]}": np.asarray(r[k]) for t, r in report.items()
              for k in ("_precision", "_recall", "_cat_ids") if k in r}
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{REPORT_ARRAYS}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, os.path.join(folder, REPORT_ARRAYS))
    write_json_atomic(os.path.join(folder, REPORT_JSON), public, indent=1)


def load_report(folder) -> dict | None:
    """The report :func:`save_report` kept in ``folder``, or None when there is none."""
    path = os.path.join(folder, REPORT_JSON)
    if not os.path.isfile(path) or not os.path.isfile(os.path.join(folder, REPORT_ARRAYS)):
        return None
    with open(path) as f:
        report = json.load(f)
    with np.load(os.path.join(folder, REPORT_ARRAYS)) as arrays:
        for t, r in report.items():
            r["per_class_by_id"] = {int(k): v for k, v in r.get("per_class_by_id", {}).items()}
            for k in ("precision", "recall", "cat_ids"):
                if f"{t}_{k}" in arrays:
                    r[f"_{k}"] = arrays[f"{t}_{k}"]
            if "_cat_ids" in r:
                r["_cat_ids"] = [int(c) for c in r["_cat_ids"]]
    return report


def _iou_matrix(dets, gts, iou_type):
    if iou_type == "bbox":
        d = [x["bbox"] for x in dets]
        g = [x["bbox"] for x in gts]
    else:
        d = [x["segmentation"] for x in dets]
        g = [x["segmentation"] for x in gts]
    if not d or not g:
        return np.zeros((len(d), len(g)))
    return np.asarray(mask_util.iou(d, g, [0] * len(g)))


def confusion_matrix(gt, results, iou_type="segm", iou_threshold=0.5, score_threshold=0.5):
    """Class confusion ``[K+1, K+1]``: rows true class, columns predicted, last = background.

    Per image, detections above the score threshold (highest first) take the unmatched
    non-crowd ground truth they overlap most at IoU >= threshold, whatever its class.
    """
    coco_gt = load_gt(gt)
    results = load_results(results, SCORED_KEYS)
    cat_ids = sorted(coco_gt.getCatIds())
    index = {c: i for i, c in enumerate(cat_ids)}
    bg = len(cat_ids)
    matrix = np.zeros((bg + 1, bg + 1), np.int64)
    by_image = {}
    for r in results:  # (categories not in the ground truth are not scored; evaluate_coco warns)
        if r["category_id"] in index and r["score"] >= score_threshold:
            by_image.setdefault(r["image_id"], []).append(r)
    for image_id in coco_gt.getImgIds():
        anns = [a for a in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=image_id)) if not a.get("iscrowd", 0)]
        if iou_type == "segm":
            anns = [dict(a, segmentation=coco_gt.annToRLE(a)) for a in anns]
        dets = sorted(by_image.get(image_id, []), key=lambda r: -r["score"])
        ious = _iou_matrix(dets, anns, iou_type)
        taken = np.zeros(len(anns), bool)
        for i, det in enumerate(dets):
            j = -1
            if len(anns):
                candidates = np.where(~taken & (ious[i] >= iou_threshold))[0]
                if candidates.size:
                    j = candidates[np.argmax(ious[i, candidates])]
            if j >= 0:
                taken[j] = True
                matrix[index[anns[j]["category_id"]], index[det["category_id"]]] += 1
            else:
                matrix[bg, index[det["category_id"]]] += 1
        for j, ann in enumerate(anns):
            if not taken[j]:
                matrix[index[ann["category_id"]], bg] += 1
    labels = class_labels(coco_gt, cat_ids)
    names = [labels[c] for c in cat_ids] + ["background"]
    return matrix, names


def markdown_table(report: dict) -> str:
    """The 12 numbers per IoU type and per-class AP, as Markdown (AP in percent)."""
    lines = ["| type | " + " | ".join(STAT_NAMES) + " |", "|---" * (len(STAT_NAMES) + 1) + "|"]
    for iou_type, r in report.items():
        lines.append(f"| {iou_type} | " + " | ".join(_pct(r["stats"][n]) for n in STAT_NAMES) + " |")
    for iou_type, r in report.items():
        if r["per_class"]:
            lines += ["", f"**{iou_type} AP per class**", "", "| class | AP |", "|---|---|"]
            lines += [f"| {name} | {_pct(ap)} |" for name, ap in r["per_class"].items()]
    return "\n".join(lines) + "\n"


def _pct(v: float) -> str:
    return "-" if v < 0 else f"{100 * v:.1f}"


def write_report(report: dict, out_dir, gt=None, results=None, plots: bool = True) -> dict:
    """Write metrics.json, metrics.md and (with ``plots``) PR curves and confusion matrices."""
    os.makedirs(out_dir, exist_ok=True)
    public = {t: {k: v for k, v in r.items() if not k.startswith("_")} for t, r in report.items()}
    written = {"json": str(write_json_atomic(os.path.join(out_dir, "metrics.json"), public,
                                             indent=1)),
               "markdown": str(write_text_atomic(os.path.join(out_dir, "metrics.md"),
                                                 markdown_table(report)))}
    if plots:
        from d2seg.evaluation import plots as plotting  # matplotlib: ~1 s to import

        coco_gt = load_gt(gt) if gt is not None else None
        for iou_type, r in report.items():
            if "_precision" in r and coco_gt is not None:
                labels = class_labels(coco_gt, r["_cat_ids"])
                names = [labels[c] for c in r["_cat_ids"]]
                written[f"pr_{iou_type}"] = plotting.pr_curves(
                    r["_precision"], names, os.path.join(out_dir, f"pr_curves_{iou_type}.png"), iou_type)
            if coco_gt is not None and results is not None and r.get("num_detections"):
                matrix, names = confusion_matrix(coco_gt, results, iou_type)
                written[f"confusion_{iou_type}"] = plotting.confusion_matrix_png(
                    matrix, names, os.path.join(out_dir, f"confusion_{iou_type}.png"), iou_type)
    return written
