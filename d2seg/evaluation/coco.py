"""COCO detection/segmentation metrics: the 12 pycocotools numbers, per-class AP, PR curves,
a class confusion matrix, as JSON, Markdown and PNG.

Numbers come from detectron2's ``COCOeval_opt`` (served by d2seg's numpy fast path, identical
to pycocotools). Masks are scored without their boxes, as detectron2 does.
"""

from __future__ import annotations

import contextlib
import io
import json
import os

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from d2seg.errors import D2SegError
from d2seg.files import write_json_atomic, write_text_atomic

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


def load_results(results) -> list[dict]:
    """COCO results from a list or a JSON file; each must have image_id, category_id, score."""
    if isinstance(results, (str, os.PathLike)):
        try:
            with open(results) as f:
                results = json.load(f)
        except FileNotFoundError:
            raise D2SegError("results file not found", file=str(results)) from None
        except json.JSONDecodeError as e:
            raise D2SegError(f"not valid JSON ({e.msg} at line {e.lineno})", file=str(results)) from None
    if not isinstance(results, list):
        raise D2SegError("COCO results must be a JSON list of detections", file=str(results))
    for i, r in enumerate(results):
        missing = [k for k in ("image_id", "category_id", "score") if k not in r]
        if missing:
            raise D2SegError(f"detection {i} lacks {', '.join(missing)}", file="results")
    return results


def evaluate_coco(gt, results, iou_types=("bbox", "segm"), image_ids=None) -> dict:
    """Score COCO results: ``{iou_type: {"stats": {...12...}, "per_class": {name: AP}, ...}}``.

    AP values are fractions (0-1) as pycocotools reports them; -1 where undefined.
    """
    from detectron2.evaluation.fast_eval_api import COCOeval_opt

    coco_gt = load_gt(gt)
    results = load_results(results)
    names = {c["id"]: c["name"] for c in coco_gt.loadCats(coco_gt.getCatIds())}
    report = {}
    for iou_type in iou_types:
        # loadRes and COCOeval only set top-level keys (id, area, iscrowd, bbox/segmentation):
        # a shallow copy per detection keeps the caller's list intact and shares the nested
        # boxes and RLE dicts instead of duplicating every detection (memory on large sets).
        dets = [dict(d) for d in results]
        if iou_type == "segm":
            dets = [d for d in dets if "segmentation" in d]
            for d in dets:
                d.pop("bbox", None)
        elif iou_type == "bbox":
            dets = [d for d in dets if "bbox" in d]
        if not dets:
            report[iou_type] = {"stats": {n: -1.0 for n in STAT_NAMES}, "per_class": {}, "num_detections": 0}
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco_gt.loadRes(dets)
            ev = COCOeval_opt(coco_gt, coco_dt, iou_type)
            if image_ids is not None:
                ev.params.imgIds = list(image_ids)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        precision = ev.eval["precision"]  # [T, R, K, A, M]
        per_class = {}
        for k, cat_id in enumerate(ev.params.catIds):
            p = precision[:, :, k, 0, -1]
            p = p[p > -1]
            per_class[names[cat_id]] = float(p.mean()) if p.size else -1.0
        report[iou_type] = {
            "stats": dict(zip(STAT_NAMES, map(float, ev.stats))),
            "per_class": per_class,
            "num_detections": len(dets),
            "_precision": precision,
            "_cat_ids": list(ev.params.catIds),
        }
        # Only the numbers leave the loop: without this, the previous IoU type's detections,
        # IoU matrices and per-image matches would still be alive while the next one is built.
        del dets, coco_dt, ev
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
    results = load_results(results)
    cat_ids = sorted(coco_gt.getCatIds())
    index = {c: i for i, c in enumerate(cat_ids)}
    bg = len(cat_ids)
    matrix = np.zeros((bg + 1, bg + 1), np.int64)
    by_image = {}
    for r in results:
        if r["score"] >= score_threshold:
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
    names = [coco_gt.cats[c]["name"] for c in cat_ids] + ["background"]
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
    from d2seg.evaluation import plots as plotting

    os.makedirs(out_dir, exist_ok=True)
    public = {t: {k: v for k, v in r.items() if not k.startswith("_")} for t, r in report.items()}
    written = {"json": str(write_json_atomic(os.path.join(out_dir, "metrics.json"), public,
                                             indent=1)),
               "markdown": str(write_text_atomic(os.path.join(out_dir, "metrics.md"),
                                                 markdown_table(report)))}
    if plots:
        coco_gt = load_gt(gt) if gt is not None else None
        for iou_type, r in report.items():
            if "_precision" in r and coco_gt is not None:
                names = [coco_gt.cats[c]["name"] for c in r["_cat_ids"]]
                written[f"pr_{iou_type}"] = plotting.pr_curves(
                    r["_precision"], names, os.path.join(out_dir, f"pr_curves_{iou_type}.png"), iou_type)
            if coco_gt is not None and results is not None and r.get("num_detections"):
                matrix, names = confusion_matrix(coco_gt, results, iou_type)
                written[f"confusion_{iou_type}"] = plotting.confusion_matrix_png(
                    matrix, names, os.path.join(out_dir, f"confusion_{iou_type}.png"), iou_type)
    return written
