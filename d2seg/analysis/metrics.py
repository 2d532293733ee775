"""Per-class precision / recall / F1 and per-image AP and error counts, from a TIDE matching
(IoU >= 0.5, the 100 highest scored detections per image, crowd regions ignored)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from d2seg.analysis.tide import ERROR_TYPES, TideRun, ap_of, per_class_ap


def _curve(scores: np.ndarray, true: np.ndarray, num_gt: int):
    """Precision, recall, F1 and the score threshold at each distinct score (highest first)."""
    order = np.argsort(-scores, kind="stable")
    scores, true = scores[order], true[order]
    tp = np.cumsum(true)
    fp = np.cumsum(~true)
    last = np.r_[scores[1:] != scores[:-1], True] if len(scores) else np.zeros(0, bool)
    tp, fp, thr = tp[last], fp[last], scores[last]
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / num_gt if num_gt else np.zeros(len(tp))
    denom = precision + recall
    f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0.0)
    return precision, recall, f1, thr, tp, fp


def prf(scores, true, num_gt: int, score_threshold: float) -> dict:
    """P/R/F1 at the threshold maximising F1 (the highest such threshold) and at
    ``score_threshold`` (detections scored >= it); ``None`` where undefined."""
    scores = np.asarray(scores, np.float64)
    true = np.asarray(true, bool)
    precision, recall, f1, thr, tp, fp = _curve(scores, true, num_gt)
    out = {"num_objects": int(num_gt), "num_detections": int(len(scores))}
    if len(thr):
        k = int(np.argmax(f1))
        out.update(best_f1=float(f1[k]), best_threshold=float(thr[k]),
                   precision_at_best=float(precision[k]),
                   recall_at_best=float(recall[k]) if num_gt else None)
    else:
        out.update(best_f1=0.0 if num_gt else None, best_threshold=None, precision_at_best=None,
                   recall_at_best=0.0 if num_gt else None)
    keep = scores >= score_threshold
    n_tp, n_det = int(true[keep].sum()), int(keep.sum())
    p = n_tp / n_det if n_det else None
    r = n_tp / num_gt if num_gt else None
    f = (2 * p * r / (p + r) if (p + r) > 0 else 0.0) if p is not None and r is not None else (
        0.0 if num_gt else None)
    out.update(threshold=float(score_threshold), precision=p, recall=r, f1=f, tp=n_tp,
               fp=n_det - n_tp, fn=int(num_gt) - n_tp)
    return out


def pr_curve(scores, true, num_gt: int):
    """(recall, precision) arrays of the raw curve, for plots."""
    precision, recall, _, _, _, _ = _curve(np.asarray(scores, np.float64),
                                           np.asarray(true, bool), num_gt)
    return recall, precision


def class_detections(run: TideRun):
    """Per class: the scores of its counted detections and whether each is a true positive."""
    by_class = defaultdict(lambda: ([], []))
    for d in run.detections:
        if d.status != "ignored":
            s, t = by_class[d.category_id]
            s.append(d.score)
            t.append(d.status == "tp")
    return by_class


def per_class(run: TideRun, score_threshold: float = 0.5) -> list[dict]:
    """One row per class (the ground truth's categories, then any other detected class)."""
    by_class = class_detections(run)
    gt_counts = run.gt_counts()
    errors = defaultdict(lambda: {t: 0 for t in ERROR_TYPES})
    for kind, e in run.errors:
        errors[e.category_id]["missed" if kind == "gt" else e.error] += 1
    classes = list(run.categories) + [c for c in run.class_order if c not in run.categories]
    rows = []
    for c in classes:
        scores, true = by_class.get(c, ([], []))
        n_gt = gt_counts.get(c, 0)
        row = {"category_id": c, "name": run.categories.get(c, str(c)),
               "ap50": ap_of(list(zip(scores, true)), n_gt) if (scores or n_gt) else None}
        row.update(prf(scores, true, n_gt, score_threshold))
        row["errors"] = dict(errors[c])
        rows.append(row)
    return rows


def overall_prf(run: TideRun, score_threshold: float = 0.5) -> dict:
    """P/R/F1 with every class pooled (micro average)."""
    scores = [d.score for d in run.detections if d.status != "ignored"]
    true = [d.status == "tp" for d in run.detections if d.status != "ignored"]
    return prf(scores, true, len(run.gts), score_threshold)


def per_image(run: TideRun) -> list[dict]:
    """AP (TIDE's, IoU 0.5, mean over the image's classes) and error counts of every image;
    ``ap50`` is None for an image with neither objects nor detections."""
    points = defaultdict(list)
    gt_counts = defaultdict(lambda: defaultdict(int))
    for d in run.detections:
        if d.status != "ignored":
            points[d.image_id].append((d.category_id, d.score, d.status == "tp"))
    for g in run.gts:
        gt_counts[g.image_id][g.category_id] += 1
    errors = defaultdict(lambda: {t: 0 for t in ERROR_TYPES})
    for kind, e in run.errors:
        errors[e.image_id]["missed" if kind == "gt" else e.error] += 1
    rows = []
    for image_id in run.image_ids:
        aps = per_class_ap(points.get(image_id, []), gt_counts.get(image_id, {}))
        n_gt = sum(gt_counts.get(image_id, {}).values())
        pts = points.get(image_id, [])
        rows.append({"image_id": image_id, "num_objects": n_gt, "num_detections": len(pts),
                     "tp": sum(t for _, _, t in pts),
                     "ap50": float(sum(aps.values()) / len(aps)) if aps else None,
                     "errors": dict(errors[image_id])})
    return rows


def worst_images(rows: list[dict], n: int) -> list[dict]:
    """The ``n`` images with the lowest AP (then the most errors), images without any object
    or detection left out."""
    scored = [r for r in rows if r["ap50"] is not None]
    scored.sort(key=lambda r: (r["ap50"], -sum(r["errors"].values())))
    return scored[:max(int(n), 0)]
