"""COCO bbox/segm evaluation equal to pycocotools' ``COCOeval``, array for array, in a few
vectorised passes.

pycocotools spends its time in Python: one ``evaluateImg`` call per (image, category, area
range) with a loop per IoU threshold, detection and ground truth, and per-detection work in
``loadRes``. Here every step runs over all detections at once:

* **loading**: detections become flat arrays (image, category, score, box or RLE, area); areas
  of RLE masks come from one batched ``pycocotools.mask.area`` call; detections are ordered by
  (image, category, score) with the same stable sort pycocotools uses and cut to ``maxDets``;
* **IoUs**: only (detection, ground truth) pairs of the same image and category exist. Box IoUs
  are one numpy expression over all pairs, with the operations of pycocotools' C ``bbIou`` in
  its order (so bit-identical). Mask IoUs are one ``pycocotools.mask.iou`` call per image on the
  detections and ground truths that have a partner of their category there: its C code skips
  pairs whose boxes do not overlap and decodes each RLE once per call;
* **matching**: pycocotools' greedy matching (best available IoU, regular ground truths before
  ignored ones, crowds reusable) for every (image, category) group at once, one step per
  detection rank, vectorised over groups, area ranges and IoU thresholds; groups are taken in
  chunks so that memory stays bounded on COCO-size sets;
* **accumulation**: per category, the cumulative TP/FP counts, precision envelope and recall
  sampling of ``COCOeval.accumulate`` with the same float operations in the same order;
* **summary**: pycocotools' own ``COCOeval.summarize`` on the accumulated arrays.

The result has pycocotools' ``eval`` layout (``precision`` [T,R,K,A,M], ``recall`` [T,K,A,M],
``scores``) and ``stats``; tests compare all of them with pycocotools for exact equality.

faster-coco-eval (``faster_coco_eval``) is a faster drop-in for pycocotools' bbox path, but its
C++ accumulation drops pycocotools' ``np.spacing(1)`` in the precision denominator, so a few
precision cells differ in the last bit (1.0 instead of 0.9999999999999998); d2seg therefore does
not take its accumulation, and its mask IoU is no faster than pycocotools' C per image. The
benchmark (bench/bench_coco_eval.py) and the tests run it beside pycocotools as a reference.
"""

from __future__ import annotations

import contextlib
import datetime
import io

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.cocoeval import COCOeval, Params

# (image, category) groups per matching chunk: bounded so that the padded IoU and state
# tensors of one chunk stay at a few tens of MB whatever the size of the data set.
_CHUNK_ELEMENTS = 2_000_000


class Evaluation:
    """What pycocotools' ``COCOeval`` holds after evaluate/accumulate/summarize: ``params``,
    ``eval`` (precision, recall, scores, counts) and ``stats``."""

    def __init__(self, params, eval_: dict, stats: np.ndarray, num_detections: int):
        self.params = params
        self.eval = eval_
        self.stats = stats
        self.num_detections = num_detections


def evaluate(coco_gt, detections: list[dict], iou_type: str, image_ids=None,
             max_dets=(1, 10, 100)) -> Evaluation:
    """pycocotools' ``COCOeval(coco_gt, coco_gt.loadRes(detections), iou_type)`` with
    evaluate, accumulate and summarize, for "bbox" (detections with ``bbox``) or "segm"
    (detections with an RLE ``segmentation``). ``detections`` are not modified; checking them
    (image ids in the ground truth, required keys) is the caller's job."""
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be bbox or segm, not {iou_type!r}")
    p = Params(iouType=iou_type)
    p.imgIds = [int(i) for i in np.unique(sorted(coco_gt.getImgIds()) if image_ids is None
                                          else list(image_ids))]
    p.catIds = [int(c) for c in np.unique(sorted(coco_gt.getCatIds()))]
    p.maxDets = sorted(int(m) for m in max_dets)
    num_k = len(p.catIds)

    gt = _ground_truth_table(coco_gt, p, iou_type)
    dt = _detection_table(coco_gt, detections, p, iou_type)

    matched, dt_ignore = _match(gt, dt, p, iou_type, coco_gt)
    eval_ = _accumulate(gt, dt, matched, dt_ignore, p, num_k)

    summary = COCOeval(iouType=iou_type)
    summary.params = p
    summary.eval = eval_
    with contextlib.redirect_stdout(io.StringIO()):
        summary.summarize()
    return Evaluation(p, eval_, np.asarray(summary.stats, dtype=np.float64), dt["count"])


# ------------------------------------------------------------------ tables


def _ground_truth_table(coco_gt, p, iou_type) -> dict:
    # pycocotools: loadAnns(getAnnIds(imgIds, catIds)): images in p.imgIds order, annotations
    # in file order within an image; _gts[img, cat] keeps that order.
    anns = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=p.imgIds, catIds=p.catIds))
    img_index = {i: n for n, i in enumerate(p.imgIds)}
    cat_index = {c: n for n, c in enumerate(p.catIds)}
    img = np.fromiter((img_index[a["image_id"]] for a in anns), np.int64, len(anns))
    cat = np.fromiter((cat_index[a["category_id"]] for a in anns), np.int64, len(anns))
    key = img * len(p.catIds) + cat
    order = np.argsort(key, kind="stable")
    anns = [anns[i] for i in order]
    table = {
        "anns": anns,
        "key": key[order],
        "img": img[order],
        "id": np.fromiter((a["id"] for a in anns), np.int64, len(anns)),
        "area": np.fromiter((a["area"] for a in anns), np.float64, len(anns)),
        # pycocotools: ignore = iscrowd (a given "ignore" is overwritten); crowd for the IoU
        "crowd": np.fromiter((int(a.get("iscrowd", 0)) for a in anns), np.int64, len(anns)),
    }
    table["ignore"] = table["crowd"] != 0
    if iou_type == "bbox" and anns:
        table["box"] = np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    return table


def _detection_table(coco_gt, detections, p, iou_type) -> dict:
    img_index = {i: n for n, i in enumerate(p.imgIds)}
    cat_index = {c: n for n, c in enumerate(p.catIds)}
    n = len(detections)
    img = np.fromiter((img_index.get(d["image_id"], -1) for d in detections), np.int64, n)
    cat = np.fromiter((cat_index.get(d["category_id"], -1) for d in detections), np.int64, n)
    score = np.fromiter((d["score"] for d in detections), np.float64, n)
    inside = np.nonzero((img >= 0) & (cat >= 0))[0]
    key = img[inside] * len(p.catIds) + cat[inside]
    # pycocotools sorts each (image, category)'s detections, in file order, by -score with a
    # stable mergesort and keeps the first maxDets[-1]; lexsort is stable as well.
    order = np.lexsort((-score[inside], key))
    index = inside[order]
    key = key[order]
    starts = np.r_[0, np.flatnonzero(np.diff(key)) + 1] if len(key) else np.zeros(0, np.int64)
    rank = np.arange(len(key)) - np.repeat(starts, np.diff(np.r_[starts, len(key)]))
    keep = rank < p.maxDets[-1]
    index, key, rank = index[keep], key[keep], rank[keep]
    table = {"index": index, "key": key, "rank": rank, "score": score[index],
             "img": img[index], "count": n}
    if iou_type == "bbox":
        boxes = np.asarray([detections[i]["bbox"] for i in index], dtype=np.float64).reshape(-1, 4)
        table["box"] = boxes
        table["area"] = boxes[:, 2] * boxes[:, 3]  # loadRes: area = w * h
    else:
        segs = [_rle(coco_gt, detections[i]) for i in index]
        table["segm"] = segs
        # loadRes: area = maskUtils.area(segmentation); batched (pycocotools' own C code)
        table["area"] = np.concatenate(
            [mask_util.area(segs[s:s + 200]).astype(np.float64) for s in range(0, len(segs), 200)]
        ) if segs else np.zeros(0)
    return table


def _rle(coco_gt, det) -> dict:
    segm = det["segmentation"]
    if isinstance(segm, dict) and isinstance(segm.get("counts"), list):  # uncompressed RLE
        image = coco_gt.imgs[det["image_id"]]
        return mask_util.frPyObjects(segm, image["height"], image["width"])
    return segm


# ------------------------------------------------------------------ IoUs and matching


def _pairs(gt, dt):
    """Every (detection, ground truth) pair of the same (image, category), grouped: returns the
    groups' keys, their detection and ground-truth starts and counts."""
    d_keys, d_start, d_count = np.unique(dt["key"], return_index=True, return_counts=True)
    g_keys, g_start, g_count = np.unique(gt["key"], return_index=True, return_counts=True)
    both, di, gi = np.intersect1d(d_keys, g_keys, assume_unique=True, return_indices=True)
    return both, d_start[di], d_count[di], g_start[gi], g_count[gi]


def _flat_pairs(d_start, d_count, g_start, g_count):
    sizes = d_count * g_count
    group = np.repeat(np.arange(len(sizes)), sizes)
    k = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    r = k // g_count[group]
    j = k - r * g_count[group]
    return group, r, j, d_start[group] + r, g_start[group] + j


def _box_ious(db, gb, crowd):
    """pycocotools' bbIou over pairs, operation for operation (maskApi.c)."""
    da = db[:, 2] * db[:, 3]
    ga = gb[:, 2] * gb[:, 3]
    w = np.minimum(db[:, 2] + db[:, 0], gb[:, 2] + gb[:, 0]) - np.maximum(db[:, 0], gb[:, 0])
    h = np.minimum(db[:, 3] + db[:, 1], gb[:, 3] + gb[:, 1]) - np.maximum(db[:, 1], gb[:, 1])
    i = w * h
    u = np.where(crowd != 0, da, da + ga - i)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = i / u
    return np.where((w <= 0) | (h <= 0), 0.0, iou)


def _mask_ious(gt, dt, coco_gt, d_idx, g_idx):
    """IoUs of the pairs (d_idx[n], g_idx[n]) (sorted by image), one pycocotools.mask.iou call
    per image over the detections and ground truths that take part in a pair there."""
    out = np.empty(len(d_idx))
    if not len(d_idx):
        return out
    # the taking-part detections / ground truths, in table order (grouped by image), and each
    # one's position within its image's list
    d_part = np.unique(d_idx)
    g_part = np.unique(g_idx)
    d_img, g_img = dt["img"][d_part], gt["img"][g_part]
    images = np.unique(d_img)
    d_lo, d_hi = np.searchsorted(d_img, images), np.searchsorted(d_img, images, side="right")
    g_lo, g_hi = np.searchsorted(g_img, images), np.searchsorted(g_img, images, side="right")
    d_local = np.zeros(len(dt["key"]), np.int64)
    d_local[d_part] = np.arange(len(d_part)) - np.repeat(d_lo, d_hi - d_lo)
    g_local = np.zeros(len(gt["key"]), np.int64)
    g_local[g_part] = np.arange(len(g_part)) - np.repeat(g_lo, g_hi - g_lo)
    g_rles = _gt_rles(coco_gt, [gt["anns"][i] for i in g_part])
    g_crowd = [int(c) for c in gt["crowd"][g_part]]
    pair_img = dt["img"][d_idx]
    p_lo, p_hi = np.searchsorted(pair_img, images), np.searchsorted(pair_img, images, side="right")
    segs = dt["segm"]
    for n in range(len(images)):
        ds, de, gs, ge = d_lo[n], d_hi[n], g_lo[n], g_hi[n]
        ious = np.asarray(mask_util.iou([segs[i] for i in d_part[ds:de]], g_rles[gs:ge],
                                        g_crowd[gs:ge]))
        s, e = p_lo[n], p_hi[n]
        out[s:e] = ious.reshape(de - ds, ge - gs)[d_local[d_idx[s:e]], g_local[g_idx[s:e]]]
    return out


def _gt_rles(coco_gt, anns) -> list:
    """``coco_gt.annToRLE(ann)`` for each (what COCOeval._prepare does), single polygons of
    images of one size in one ``frPyObjects`` call: merging one RLE returns it unchanged."""
    rles = [None] * len(anns)
    batches = {}
    for n, ann in enumerate(anns):
        segm = ann["segmentation"]
        if isinstance(segm, list) and len(segm) == 1 and len(segm[0]) > 4:
            image = coco_gt.imgs[ann["image_id"]]
            batches.setdefault((image["height"], image["width"]), []).append(n)
        else:
            rles[n] = coco_gt.annToRLE(ann)
    for (h, w), members in batches.items():
        for n, rle in zip(members, mask_util.frPyObjects([anns[n]["segmentation"][0] for n in members], h, w)):
            rles[n] = rle
    return rles


def _match(gt, dt, p, iou_type, coco_gt):
    """pycocotools' evaluateImg for every group: per kept detection, ``matched`` (A, T) (matched
    to a ground truth with a non-zero id) and ``ignore`` (A, T)."""
    num_d = len(dt["key"])
    area_rng = np.asarray(p.areaRng, dtype=np.float64)
    lo, hi = area_rng[:, 0], area_rng[:, 1]
    thr = np.minimum(np.asarray(p.iouThrs, dtype=np.float64), 1 - 1e-10)
    num_a, num_t = len(lo), len(thr)
    matched = np.zeros((num_d, num_a, num_t), bool)
    ignore = np.zeros((num_d, num_a, num_t), bool)
    gt_outside = (gt["area"][:, None] < lo) | (gt["area"][:, None] > hi)  # (G, A)
    gt_ignore = gt["ignore"][:, None] | gt_outside

    keys, d_start, d_count, g_start, g_count = _pairs(gt, dt)
    if len(keys):
        # IoUs of all pairs, then matching in chunks of groups of similar detection counts
        group, r, j, d_idx, g_idx = _flat_pairs(d_start, d_count, g_start, g_count)
        if iou_type == "bbox":
            ious = _box_ious(dt["box"][d_idx], gt["box"][g_idx], gt["crowd"][g_idx])
        else:
            ious = _mask_ious(gt, dt, coco_gt, d_idx, g_idx)
        pair_start = np.cumsum(d_count * g_count) - d_count * g_count
        by_size = np.argsort(d_count, kind="stable")
        s = 0
        while s < len(by_size):  # chunks of groups whose padded tensors stay bounded
            e = s + 1
            d_max, g_max = d_count[by_size[s]], g_count[by_size[s]]
            while e < len(by_size):
                dm, gm = max(d_max, d_count[by_size[e]]), max(g_max, g_count[by_size[e]])
                if (e - s + 1) * dm * gm * num_a * num_t > _CHUNK_ELEMENTS:
                    break
                d_max, g_max = dm, gm
                e += 1
            _match_chunk(by_size[s:e], d_start, d_count, g_start, g_count, pair_start, ious,
                         gt, gt_ignore, thr, matched, ignore)
            s = e

    dt_outside = (dt["area"][:, None] < lo) | (dt["area"][:, None] > hi)  # (D, A)
    ignore |= ~matched & dt_outside[:, :, None]
    return matched, ignore


def _match_chunk(groups, d_start, d_count, g_start, g_count, pair_start, ious, gt, gt_ignore,
                 thr, matched, ignore):
    n = len(groups)
    dc, gc = d_count[groups], g_count[groups]
    d_max, g_max = int(dc.max()), int(gc.max())
    num_a, num_t = gt_ignore.shape[1], len(thr)
    # padded (group, rank, gt) IoUs; -1 never reaches a threshold
    iou = np.full((n, d_max, g_max), -1.0)
    sizes = dc * gc
    row = np.repeat(np.arange(n), sizes)
    k = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    r = k // gc[row]
    iou[row, r, k - r * gc[row]] = ious[np.repeat(pair_start[groups], sizes) + k]
    col = np.arange(g_max)
    valid_gt = col[None, :] < gc[:, None]  # (n, G)
    g_index = np.where(valid_gt, g_start[groups][:, None] + col[None, :], 0)
    g_ids = np.where(valid_gt, gt["id"][g_index], 0)
    g_crowd = valid_gt & (gt["crowd"][g_index] != 0)
    g_ign = np.where(valid_gt[:, :, None], gt_ignore[g_index], True).transpose(0, 2, 1)  # (n, A, G)
    g_regular = ~g_ign[:, :, None, :]  # (n, A, 1, G)
    taken = np.zeros((n, num_a, num_t, g_max), bool)
    thr4 = thr[None, None, :, None]
    for rank in range(d_max):
        act = np.nonzero(dc > rank)[0]
        vals = iou[act, rank]  # (m, G)
        if not (vals >= thr[0]).any():
            continue
        v4 = vals[:, None, None, :]
        ok = ~taken[act] & (v4 >= thr4)  # (m, A, T, G)
        ok_regular = ok & g_regular[act]
        ok = np.where(ok_regular.any(axis=3, keepdims=True), ok_regular, ok)
        best_vals = np.where(ok, v4, -np.inf)
        best = best_vals.max(axis=3, keepdims=True)
        hit = ok & (best_vals == best)
        any_hit = hit.any(axis=3)  # (m, A, T)
        gsel = g_max - 1 - np.argmax(hit[..., ::-1], axis=3)  # the last best, as pycocotools
        m_idx, a_idx, t_idx = np.nonzero(any_hit)
        gs = gsel[m_idx, a_idx, t_idx]
        grp = act[m_idx]
        det = d_start[groups[grp]] + rank
        matched[det, a_idx, t_idx] = g_ids[grp, gs] != 0  # an id of 0 reads as unmatched
        ignore[det, a_idx, t_idx] = g_ign[grp, a_idx, gs]
        keep = ~g_crowd[grp, gs]  # crowds stay available
        taken[grp[keep], a_idx[keep], t_idx[keep], gs[keep]] = True


# ------------------------------------------------------------------ accumulation


def _accumulate(gt, dt, matched, dt_ignore, p, num_k) -> dict:
    rec_thrs = np.asarray(p.recThrs, dtype=np.float64)
    num_t, num_r, num_a, num_m = len(p.iouThrs), len(rec_thrs), len(p.areaRng), len(p.maxDets)
    precision = -np.ones((num_t, num_r, num_k, num_a, num_m))
    recall = -np.ones((num_t, num_k, num_a, num_m))
    scores = -np.ones((num_t, num_r, num_k, num_a, num_m))
    eps = np.spacing(1)

    area_rng = np.asarray(p.areaRng, dtype=np.float64)
    gt_outside = (gt["area"][:, None] < area_rng[:, 0]) | (gt["area"][:, None] > area_rng[:, 1])
    gt_pos = ~(gt["ignore"][:, None] | gt_outside)  # (G, A)
    gt_cat = gt["key"] % num_k if num_k else gt["key"]
    npig = np.zeros((num_k, num_a), np.int64)
    np.add.at(npig, gt_cat, gt_pos.astype(np.int64))

    d_cat = dt["key"] % num_k if num_k else dt["key"]
    # detections by (category, image, rank): the concatenation order of pycocotools' accumulate
    base = np.lexsort((dt["rank"], dt["img"], d_cat))
    tps_all = matched & ~dt_ignore  # (D, A, T)
    fps_all = ~matched & ~dt_ignore
    cat_sorted = d_cat[base]
    bounds = np.searchsorted(cat_sorted, np.arange(num_k + 1))
    for k in range(num_k):
        if not npig[k].any():
            continue
        sel_k = base[bounds[k]:bounds[k + 1]]
        for m, max_det in enumerate(p.maxDets):
            sel = sel_k[dt["rank"][sel_k] < max_det]
            sel = sel[np.argsort(-dt["score"][sel], kind="mergesort")]
            sorted_scores = dt["score"][sel]
            nd = len(sel)
            tp_count = np.cumsum(tps_all[sel], axis=0)  # (N, A, T), integers
            fp_count = np.cumsum(fps_all[sel], axis=0)
            for a in range(num_a):
                n_pos = int(npig[k, a])
                if n_pos == 0:
                    continue
                tp = tp_count[:, a, :].T.astype(float)  # (T, N), as pycocotools' tp_sum
                fp = fp_count[:, a, :].T.astype(float)
                pr = tp / (fp + tp + eps)
                recall[:, k, a, m] = tp[:, -1] / n_pos if nd else 0
                if not nd:
                    precision[:, :, k, a, m] = 0
                    scores[:, :, k, a, m] = 0
                    continue
                pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # precision envelope
                # searchsorted(tp / n_pos, recThrs, "left") for all T rows at once, in integers:
                # rc = c / n_pos is nondecreasing in the count c, so rc >= thr <=> c >= the
                # first count whose float quotient reaches thr (same division, same rounding)
                need = np.searchsorted(np.arange(n_pos + 1) / n_pos, rec_thrs, side="left")
                stride = n_pos + 2
                flat = (tp_count[:, a, :].T + stride * np.arange(num_t)[:, None]).ravel()
                inds = (np.searchsorted(flat, need[None, :] + stride * np.arange(num_t)[:, None])
                        - nd * np.arange(num_t)[:, None])  # (T, R)
                valid = inds < nd  # pycocotools stops (leaving 0) past the last detection
                safe = np.where(valid, inds, 0)
                precision[:, :, k, a, m] = np.where(valid, np.take_along_axis(pr, safe, axis=1), 0)
                scores[:, :, k, a, m] = np.where(valid, sorted_scores[safe], 0)
    return {
        "params": p,
        "counts": [num_t, num_r, num_k, num_a, num_m],
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
        "precision": precision,
        "recall": recall,
        "scores": scores,
    }
