"""numpy stand-ins for the fast COCO evaluation entry points of ``detectron2._C``.

``detectron2.evaluation.fast_eval_api.COCOeval_opt`` (used by ``COCOEvaluator(use_fast_impl=True)``,
the default) hands per-image matching and accumulation to three C++ symbols:
``InstanceAnnotation``, ``COCOevalEvaluateImages`` and ``COCOevalAccumulate``.  Without a compiled
extension they are served here.  The results equal pycocotools' ``COCOeval.evaluateImg`` +
``COCOeval.accumulate`` bit for bit; speed comes from matching all area ranges and IoU thresholds
of one (image, category) at once and from accumulating each category over all images with a
handful of array operations instead of per-image Python dictionaries.

Semantics kept from pycocotools (see the comments in the code):

* detections are ordered by a *stable* sort on ``-score`` and cut to ``maxDet``; the IoU matrix
  rows are in that order, its columns in the original ground-truth order;
* a detection takes the available ground truth with the highest IoU >= threshold (ties: the later
  one in pycocotools' order, where ignored ground truths are moved last by a stable sort); a
  non-crowd ground truth is available once, a crowd one always; regular ground truths win over
  ignored ones whatever their IoU;
* matches are recorded by annotation *id*, so an id of 0 reads as "unmatched", as in pycocotools;
* unmatched detections outside the area range are ignored;
* accumulation concatenates images in order, re-sorts by score with a stable sort, builds the
  precision envelope and samples it at the recall thresholds with ``searchsorted(side="left")``
  (0 beyond the last detection); -1 marks (category, area, maxDet) cells without evaluations or
  without non-ignored ground truth.
"""

from __future__ import annotations

import datetime

import numpy as np

__all__ = ["InstanceAnnotation", "COCOevalEvaluateImages", "COCOevalAccumulate"]


class InstanceAnnotation:
    """One ground truth or detection as ``COCOeval_opt`` passes it: id, score, area, crowd, ignore."""

    __slots__ = ("id", "score", "area", "is_crowd", "ignore")

    def __init__(self, id: int, score: float, area: float, is_crowd: bool, ignore: bool):  # noqa: A002
        self.id = int(id)
        self.score = float(score)
        self.area = float(area)
        self.is_crowd = bool(is_crowd)
        self.ignore = bool(ignore)

    def __repr__(self) -> str:
        return (
            f"InstanceAnnotation(id={self.id}, score={self.score}, area={self.area}, "
            f"is_crowd={self.is_crowd}, ignore={self.ignore})"
        )


class _ImageCategoryResult:
    """Matching of one (image, category) for every area range and IoU threshold."""

    __slots__ = ("scores", "matched", "dt_ignore", "gt_ignore")

    def __init__(self, scores, matched, dt_ignore, gt_ignore):
        self.scores = scores  # (D,) float64, descending (stable)
        self.matched = matched  # (A, T, D) bool: matched to a ground truth with a non-zero id
        self.dt_ignore = dt_ignore  # (A, T, D) bool
        self.gt_ignore = gt_ignore  # (A, G) bool


class ImageEvaluations:
    """Opaque result of :func:`COCOevalEvaluateImages`, consumed by :func:`COCOevalAccumulate`.

    ``per_category[k][i]`` is the result for category ``k`` and image ``i`` or ``None`` when that
    pair has neither ground truths nor detections (pycocotools' ``None`` entries of ``evalImgs``).
    """

    def __init__(self, per_category, num_images, num_area_ranges, num_iou_thresholds, max_det):
        self.per_category = per_category
        self.num_images = num_images
        self.num_area_ranges = num_area_ranges
        self.num_iou_thresholds = num_iou_thresholds
        self.max_det = max_det

    def __len__(self) -> int:
        """As many entries as pycocotools' ``evalImgs``: categories x area ranges x images."""
        return len(self.per_category) * self.num_area_ranges * self.num_images


def _evaluate_image_category(gts, dts, ious, area_lo, area_hi, iou_thrs, max_det):
    """pycocotools' ``evaluateImg`` for one (image, category), all area ranges at once."""
    if len(gts) == 0 and len(dts) == 0:
        return None
    num_areas = len(area_lo)
    num_thrs = len(iou_thrs)

    dt_scores = np.array([d.score for d in dts], dtype=np.float64)
    order = np.argsort(-dt_scores, kind="mergesort")[:max_det]
    scores = dt_scores[order]
    dt_ids = np.array([d.id for d in dts], dtype=np.int64)[order]
    dt_area = np.array([d.area for d in dts], dtype=np.float64)[order]
    num_dt = len(order)

    num_gt = len(gts)
    gt_ids = np.array([g.id for g in gts], dtype=np.int64)
    gt_area = np.array([g.area for g in gts], dtype=np.float64)
    gt_crowd = np.array([g.is_crowd for g in gts], dtype=bool)
    gt_flag = np.array([g.ignore for g in gts], dtype=bool)
    # (A, G): ignored by flag or outside the area range (pycocotools' g['_ignore']).
    gt_outside = (gt_area[None, :] < area_lo[:, None]) | (gt_area[None, :] > area_hi[:, None])
    gt_ignore = gt_flag[None, :] | gt_outside

    dt_match_id = np.zeros((num_areas, num_thrs, num_dt), dtype=np.int64)  # pycocotools' dtMatches
    dt_ignore = np.zeros((num_areas, num_thrs, num_dt), dtype=bool)

    iou = np.asarray(ious, dtype=np.float64)
    if iou.size and num_gt and num_dt:
        iou = iou.reshape(-1, num_gt)[:num_dt]
        _greedy_match(iou, gt_ids, gt_crowd, gt_ignore, dt_ids, iou_thrs, dt_match_id, dt_ignore)

    # Unmatched detections outside the area range are ignored.
    dt_outside = (dt_area[None, :] < area_lo[:, None]) | (dt_area[None, :] > area_hi[:, None])
    dt_ignore |= (dt_match_id == 0) & dt_outside[:, None, :]
    return _ImageCategoryResult(scores, dt_match_id != 0, dt_ignore, gt_ignore)


def _greedy_match(iou, gt_ids, gt_crowd, gt_ignore, dt_ids, iou_thrs, dt_match_id, dt_ignore):
    """Greedy matching in score order, vectorised over (area range, IoU threshold).

    pycocotools walks the ground truths sorted with ignored ones last (stable), keeps the last
    one whose IoU reaches the running best (starting at the threshold), skips matched non-crowd
    ones and stops at the first ignored one once a regular one is held.  That is: among the
    available regular ground truths with IoU >= threshold take the highest IoU (ties: the last in
    the original order, which the stable sort keeps within each group); only when there is none,
    do the same among the available ignored ones.  Working in the original order needs no sort.
    """
    num_gt = len(gt_ids)
    thr = np.minimum(np.asarray(iou_thrs, dtype=np.float64), 1 - 1e-10)[None, :, None]  # (1, T, 1)
    gt_regular = ~gt_ignore[:, None, :]  # (A, 1, G)
    gt_taken = np.zeros(dt_match_id.shape[:2] + (num_gt,), dtype=bool)  # (A, T, G): matched, non-crowd
    # A detection whose best IoU is below every threshold matches nothing whatever came before.
    candidates = np.nonzero(iou.max(axis=1) >= thr.min())[0]
    for d in candidates:
        row = iou[d]
        ok = ~gt_taken & (row[None, None, :] >= thr)  # (A, T, G)
        ok_regular = ok & gt_regular
        has_regular = ok_regular.any(axis=2, keepdims=True)
        ok = np.where(has_regular, ok_regular, ok)
        values = np.where(ok, row[None, None, :], -np.inf)
        best = values.max(axis=2, keepdims=True)
        hit = ok & (values == best)
        a_idx, t_idx = np.nonzero(hit.any(axis=2))
        if a_idx.size == 0:
            continue
        g_idx = num_gt - 1 - np.argmax(hit[a_idx, t_idx, ::-1], axis=1)  # last best one
        dt_match_id[a_idx, t_idx, d] = gt_ids[g_idx]
        dt_ignore[a_idx, t_idx, d] = gt_ignore[a_idx, g_idx]
        # pycocotools stores the detection id: a ground truth counts as taken when that id is > 0,
        # and crowd ground truths stay available.
        if dt_ids[d] > 0:
            keep = ~gt_crowd[g_idx]
            gt_taken[a_idx[keep], t_idx[keep], g_idx[keep]] = True
        else:  # an id <= 0 overwrites an earlier match with "not taken"
            gt_taken[a_idx, t_idx, g_idx] = False


def COCOevalEvaluateImages(
    area_ranges, max_det, iou_thresholds, ious, ground_truth_instances, detected_instances
):
    """Match detections to ground truths for every image, category and area range.

    ``ious[i][k]`` is ``COCOeval.computeIoU``'s matrix (detections sorted by score and cut to
    ``max_det`` x ground truths in their original order) or an empty list;
    ``ground_truth_instances[i][k]`` / ``detected_instances[i][k]`` are lists of
    :class:`InstanceAnnotation` in ``COCOeval._gts`` / ``_dts`` order.
    """
    area_ranges = np.asarray(area_ranges, dtype=np.float64).reshape(-1, 2)
    area_lo, area_hi = area_ranges[:, 0], area_ranges[:, 1]
    iou_thresholds = np.asarray(iou_thresholds, dtype=np.float64).reshape(-1)
    max_det = int(max_det)
    num_images = len(ground_truth_instances)
    num_categories = len(ground_truth_instances[0]) if num_images else 0
    per_category = [[None] * num_images for _ in range(num_categories)]
    for i in range(num_images):
        gts_i, dts_i, ious_i = ground_truth_instances[i], detected_instances[i], ious[i]
        for k in range(num_categories):
            per_category[k][i] = _evaluate_image_category(
                gts_i[k], dts_i[k], ious_i[k], area_lo, area_hi, iou_thresholds, max_det
            )
    return ImageEvaluations(per_category, num_images, len(area_lo), len(iou_thresholds), max_det)


def COCOevalAccumulate(params, evaluations: ImageEvaluations) -> dict:
    """pycocotools' ``COCOeval.accumulate`` over :func:`COCOevalEvaluateImages`' result.

    ``params`` is the ``Params`` object the evaluation ran with.  Returns ``params``, ``counts``
    ``[T, R, K, A, M]``, ``date`` and the ``precision`` / ``scores`` ``(T, R, K, A, M)`` and
    ``recall`` ``(T, K, A, M)`` arrays, -1 where pycocotools leaves -1.
    """
    rec_thrs = np.asarray(params.recThrs, dtype=np.float64).reshape(-1)
    max_dets = [int(m) for m in params.maxDets]
    num_t = len(params.iouThrs)
    num_r = len(rec_thrs)
    num_k = len(params.catIds) if params.useCats else 1
    num_a = len(params.areaRng)
    num_m = len(max_dets)
    if evaluations.per_category and len(evaluations.per_category) != num_k:
        raise ValueError(
            f"evaluations cover {len(evaluations.per_category)} categories, params name {num_k}"
        )
    precision = -np.ones((num_t, num_r, num_k, num_a, num_m))
    recall = -np.ones((num_t, num_k, num_a, num_m))
    scores = -np.ones((num_t, num_r, num_k, num_a, num_m))
    eps = np.spacing(1)

    for k, per_image in enumerate(evaluations.per_category):
        results = [r for r in per_image if r is not None]
        if not results:
            continue
        dt_scores = np.concatenate([r.scores for r in results])
        rank = np.concatenate([np.arange(len(r.scores)) for r in results])  # position within image
        matched = np.concatenate([r.matched for r in results], axis=2)  # (A, T, N)
        dt_ignore = np.concatenate([r.dt_ignore for r in results], axis=2)
        num_pos = np.count_nonzero(~np.concatenate([r.gt_ignore for r in results], axis=1), axis=1)  # (A,)
        if not num_pos.any():
            continue
        tps_all = matched & ~dt_ignore
        fps_all = ~matched & ~dt_ignore
        for m, max_det in enumerate(max_dets):
            keep = np.nonzero(rank < max_det)[0]  # each image's first max_det, concatenation order
            order = keep[np.argsort(-dt_scores[keep], kind="mergesort")]
            sorted_scores = dt_scores[order]
            tp_sum = np.cumsum(tps_all[:, :, order], axis=2).astype(np.float64)
            fp_sum = np.cumsum(fps_all[:, :, order], axis=2).astype(np.float64)
            nd = len(order)
            for a in range(num_a):
                npig = int(num_pos[a])
                if npig == 0:
                    continue
                tp, fp = tp_sum[a], fp_sum[a]  # (T, N)
                rc = tp / npig
                pr = tp / (fp + tp + eps)
                recall[:, k, a, m] = rc[:, -1] if nd else 0
                pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # precision envelope
                for t in range(num_t):
                    inds = np.searchsorted(rc[t], rec_thrs, side="left")
                    valid = inds < nd  # pycocotools stops (leaving 0) at the first index past the end
                    q = np.zeros(num_r)
                    ss = np.zeros(num_r)
                    q[valid] = pr[t, inds[valid]]
                    ss[valid] = sorted_scores[inds[valid]]
                    precision[t, :, k, a, m] = q
                    scores[t, :, k, a, m] = ss

    return {
        "params": params,
        "counts": [num_t, num_r, num_k, num_a, num_m],
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
        "precision": precision,
        "recall": recall,
        "scores": scores,
    }
