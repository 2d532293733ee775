"""Panoptic quality (PQ, SQ, RQ) from two COCO panoptic folders + JSONs, equal to panopticapi.

The definitions are those of ``panopticapi.evaluation.pq_compute`` (Kirillov et al.): a ground
truth and a predicted segment of the same category match when IoU > 0.5, where the predicted
segment's pixels on VOID (id 0) are left out of the union; crowd ground truth never matches and
is never a false negative; an unmatched predicted segment lying more than half on VOID or on the
crowd region of its category is not a false positive. Ground truth areas come from the JSON,
predicted areas from the PNG, as in the reference.

Per image the work is one table of pixel counts per (ground truth, prediction) pair: each PNG
decoded (by Wuffs where installed, see :mod:`d2seg.io.panoptic_png`), its ids mapped to compact
table indices by one gather from a 2^24-entry lookup table, then one ``np.bincount``; buffers
are reused from image to image, and images run in a process pool. IoUs are summed in the
reference's order so the numbers are bit-identical, not just close.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from d2seg.errors import D2SegError
from d2seg.io.json import read_json
from d2seg.io.panoptic_png import ids_of_rgba, read_panoptic_png, read_rgba

MATCH_IOU = 0.5


# Per process, reused from image to image: a fresh array per image costs page faults that
# weigh as much as the counting itself.
_LOOKUP: np.ndarray | None = None  # id -> table index, all 0 between uses
_BUFFERS: dict = {}


def _buffer(key, shape: tuple, dtype) -> np.ndarray:
    buf = _BUFFERS.get(key)
    if buf is None or buf.shape != shape:
        buf = _BUFFERS[key] = np.empty(shape, dtype)
    return buf


def _release_buffers() -> None:
    global _LOOKUP
    _LOOKUP = None
    _BUFFERS.clear()


def _table_indices(png_path, known: np.ndarray, values: np.ndarray, slot: int):
    """Per pixel of the PNG: ``values[i]`` where its id is ``known[i]``, 0 where the id is not
    known; int32, flat, in a buffer reused by the next call with the same ``slot``.

    A 2^24-entry table (zero pages until touched, kept per process) makes this one gather.
    """
    global _LOOKUP
    rgba = read_rgba(png_path, out=_BUFFERS.get(("rgba", slot)))
    _BUFFERS[("rgba", slot)] = rgba
    shape = rgba.shape[:2]
    ids = ids_of_rgba(rgba)
    if _LOOKUP is None:
        _LOOKUP = np.zeros(1 << 24, dtype=np.int32)
    valid = (known >= 0) & (known < 1 << 24)  # other ids cannot be in a PNG
    known, values = known[valid], values[valid]
    _LOOKUP[known] = values
    try:
        # ids < 2^24, so "wrap" never wraps; unlike "raise" it writes to ``out`` unbuffered,
        # and it is the cheapest of the three modes
        out = np.take(_LOOKUP, ids.view("<i4"), out=_buffer(("index", slot), ids.shape, np.int32),
                      mode="wrap")
    finally:
        _LOOKUP[known] = 0
    return out, shape


def image_stats(gt_ann: dict, pred_ann: dict, gt_folder: str, pred_folder: str,
                categories: dict) -> dict:
    """One image's matches (category, IoU; in the reference's order), false negatives, positives."""
    pred_png_path = os.path.join(pred_folder, pred_ann["file_name"])
    gt_segs = {s["id"]: s for s in gt_ann["segments_info"]}
    pred_segs = {s["id"]: s for s in pred_ann["segments_info"]}
    image = gt_ann["image_id"]

    if 0 in pred_segs or 0 in gt_segs:
        raise D2SegError("segment id 0 is reserved for VOID", where=f"image {image}",
                         file=pred_png_path if 0 in pred_segs else None)
    # table rows: ids missing from the JSON, VOID (id 0), then the ground truth segments by id;
    # columns: the same for the prediction
    gt_known = np.array(sorted({0, *gt_segs}), dtype=np.int64)
    pred_known = np.array(sorted({0, *pred_segs}), dtype=np.int64)
    cols = pred_known.size + 1
    flat, gt_shape = _table_indices(os.path.join(gt_folder, gt_ann["file_name"]), gt_known,
                                    np.arange(1, gt_known.size + 1, dtype=np.int32) * cols, 0)
    pred_flat, pred_shape = _table_indices(pred_png_path, pred_known,
                                           np.arange(1, cols, dtype=np.int32), 1)
    if gt_shape != pred_shape:
        raise D2SegError(f"prediction is {pred_shape[::-1]} but the ground truth is "
                         f"{gt_shape[::-1]}", file=pred_png_path)
    flat += pred_flat
    table = np.bincount(flat, minlength=(gt_known.size + 1) * cols).reshape(-1, cols)
    unknown_pred = int(table[:, 0].sum())
    void_row = table[1, 2:]
    unknown_gt_row = table[0, 2:]
    gt_known, pred_known = gt_known[1:], pred_known[1:]  # the segments proper
    n_gt, n_pred = gt_known.size, pred_known.size
    table = table[2:, 2:]  # ground truth segments x predicted segments

    if unknown_pred:
        bad = np.setdiff1d(np.unique(read_panoptic_png(pred_png_path)), np.append(pred_known, 0))
        raise D2SegError(f"segment id {int(bad[0])} is in the PNG but not in the JSON",
                         file=pred_png_path, where=f"image {image}")
    pred_area = table.sum(axis=0) + void_row + unknown_gt_row
    if n_pred and (pred_area == 0).any():
        missing = pred_known[pred_area == 0].tolist()
        raise D2SegError(f"segment ids {missing} are in the JSON but not in the PNG",
                         file=pred_png_path, where=f"image {image}")
    pred_cat = np.array([pred_segs[int(i)]["category_id"] for i in pred_known], dtype=np.int64)
    unknown_cat = [int(c) for c in pred_cat if int(c) not in categories]
    if unknown_cat:
        raise D2SegError(f"unknown category_id {unknown_cat[0]} in the prediction",
                         where=f"image {image}", hint="use the ground truth's category ids")
    gt_cat = np.array([gt_segs[int(i)]["category_id"] for i in gt_known], dtype=np.int64)
    gt_crowd = np.array([gt_segs[int(i)].get("iscrowd", 0) == 1 for i in gt_known], dtype=bool)
    gt_area = np.array([gt_segs[int(i)]["area"] for i in gt_known], dtype=np.int64)
    void_overlap = void_row

    inter = table[:n_gt, :n_pred]
    candidate = (inter > 0) & ~gt_crowd[:, None] & (gt_cat[:, None] == pred_cat[None, :])
    rows, cols_ = np.nonzero(candidate)  # row-major: sorted by (gt id, pred id) like the reference
    i_pair = inter[rows, cols_]
    union = pred_area[cols_] + gt_area[rows] - i_pair - void_overlap[cols_]
    iou = i_pair / union
    good = iou > MATCH_IOU
    rows, cols_, iou = rows[good], cols_[good], iou[good]
    gt_matched = np.zeros(n_gt, bool)
    gt_matched[rows] = True
    pred_matched = np.zeros(n_pred, bool)
    pred_matched[cols_] = True

    fn: dict[int, int] = defaultdict(int)
    crowd_of_category: dict[int, int] = {}
    row_of_id = {int(i): r for r, i in enumerate(gt_known)}
    for seg_id, seg in gt_segs.items():
        r = row_of_id.get(int(seg_id))
        if r is not None and gt_matched[r]:
            continue
        if seg.get("iscrowd", 0) == 1:
            crowd_of_category[seg["category_id"]] = r
            continue
        fn[seg["category_id"]] += 1

    fp: dict[int, int] = defaultdict(int)
    for c in np.nonzero(~pred_matched)[0]:
        ignored = int(void_overlap[c])
        crowd_row = crowd_of_category.get(int(pred_cat[c]))
        if crowd_row is not None:
            ignored += int(table[crowd_row, c])
        if ignored / pred_area[c] > 0.5:
            continue
        fp[int(pred_cat[c])] += 1
    return {"matches": (gt_cat[rows].tolist(), iou.tolist()), "fn": dict(fn), "fp": dict(fp)}


def _stats_of_chunk(jobs):
    return [image_stats(*job) for job in jobs]


def _pair_annotations(gt: dict, pred: dict, pred_json: str) -> list[tuple[dict, dict]]:
    for name, d, path in (("ground truth", gt, None), ("prediction", pred, pred_json)):
        if "annotations" not in d:
            raise D2SegError(f"the {name} JSON has no 'annotations'", file=path,
                             hint="give a COCO panoptic JSON")
    by_image = {a["image_id"]: a for a in pred["annotations"]}
    pairs = []
    for gt_ann in gt["annotations"]:
        if gt_ann["image_id"] not in by_image:
            raise D2SegError(f"no prediction for image {gt_ann['image_id']}", file=pred_json,
                             hint="predict every ground truth image")
        pairs.append((gt_ann, by_image[gt_ann["image_id"]]))
    return pairs


def _sum_like_reference(per_image: list[dict], n_chunks: int):
    """Totals per category, summed in panopticapi's order (per worker chunk, then chunks)."""
    total = defaultdict(lambda: {"iou": 0.0, "tp": 0, "fp": 0, "fn": 0})
    for chunk in np.array_split(np.arange(len(per_image)), max(n_chunks, 1)):
        part = defaultdict(lambda: {"iou": 0.0, "tp": 0, "fp": 0, "fn": 0})
        for k in chunk:
            stats = per_image[k]
            for cat, iou in zip(*stats["matches"]):
                part[cat]["tp"] += 1
                part[cat]["iou"] += iou
            for cat, n in stats["fn"].items():
                part[cat]["fn"] += n
            for cat, n in stats["fp"].items():
                part[cat]["fp"] += n
        for cat, s in part.items():
            for key in ("iou", "tp", "fp", "fn"):
                total[cat][key] += s[key]
    return total


def _average(total, categories: dict, isthing: bool | None):
    pq = sq = rq = 0.0
    n = 0
    per_class = {}
    for cat, info in categories.items():
        if isthing is not None and (info.get("isthing", 0) == 1) != isthing:
            continue
        s = total.get(cat, {"iou": 0.0, "tp": 0, "fp": 0, "fn": 0})
        tp, fp, fn, iou = s["tp"], s["fp"], s["fn"], s["iou"]
        if tp + fp + fn == 0:
            per_class[cat] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
            continue
        n += 1
        denominator = tp + 0.5 * fp + 0.5 * fn
        per_class[cat] = {"pq": iou / denominator, "sq": iou / tp if tp else 0,
                          "rq": tp / denominator}
        pq += per_class[cat]["pq"]
        sq += per_class[cat]["sq"]
        rq += per_class[cat]["rq"]
    if n == 0:
        return {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}, per_class
    return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per_class


def pq_compute_folders(gt_json, gt_folder, pred_json, pred_folder, categories=None, *,
                       workers: int | None = None, progress: bool | None = None) -> dict:
    """PQ/SQ/RQ for "All", "Things", "Stuff" and ``per_class`` (keyed by category id).

    Same result layout and numbers as ``panopticapi.evaluation.pq_compute``, plus per-class
    ``tp``/``fp``/``fn`` counts under ``counts``. ``categories``: a list of COCO categories (or
    an id -> category dict); the ground truth JSON's when None. A class with no segments at all
    scores 0 in ``per_class`` and is left out of the means; a group without any class
    ("Stuff" on a things-only dataset) reports n = 0 and zeros (panopticapi divides by zero).
    """
    gt = read_json(gt_json, "ground-truth JSON file")
    pred = read_json(pred_json, "prediction JSON file")
    for folder in (gt_folder, pred_folder):
        if not Path(folder).is_dir():
            raise D2SegError("folder with panoptic PNGs not found", file=str(folder))
    if categories is None:
        if "categories" not in gt:
            raise D2SegError("the ground truth JSON has no 'categories'", file=str(gt_json))
        categories = gt["categories"]
    if not isinstance(categories, dict):
        categories = {c["id"]: c for c in categories}
    pairs = _pair_annotations(gt, pred, str(pred_json))
    jobs = [(g, p, str(gt_folder), str(pred_folder), categories) for g, p in pairs]
    workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
    try:
        per_image = _run(jobs, workers, progress)
    finally:
        _release_buffers()  # in this process (workers=1); forked workers exit anyway
    total = _sum_like_reference(per_image, multiprocessing.cpu_count())
    results: dict = {}
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        results[name], per_class = _average(total, categories, isthing)
        if name == "All":
            results["per_class"] = per_class
    results["counts"] = {cat: {k: total[cat][k] for k in ("tp", "fp", "fn")}
                         for cat in categories if cat in total}
    results["per_image"] = [dict(image_id=g["image_id"], file_name=g.get("file_name"),
                                 **image_pq(stats, categories))
                            for (g, _), stats in zip(pairs, per_image)]
    return results


def image_pq(stats: dict, categories: dict) -> dict:
    """PQ/SQ/RQ of one image (what ``pq_compute`` gives on a JSON holding only that image: the
    mean over the categories with a segment in its ground truth or prediction), with ``n``
    those categories and the image's tp/fp/fn counts."""
    summary, _ = _average(_sum_like_reference([stats], 1), categories, None)
    return {**summary, "tp": len(stats["matches"][0]), "fp": sum(stats["fp"].values()),
            "fn": sum(stats["fn"].values())}


def worst_images(results: dict, n: int) -> list[dict]:
    """The ``n`` images with the lowest PQ (ties by image id), from ``results["per_image"]``;
    an image without any segment (no category scored) comes last."""
    rows = results.get("per_image") or []
    return sorted(rows, key=lambda r: (r["pq"] if r["n"] else float("inf"),
                                       str(r["image_id"])))[:n]


def _run(jobs, workers: int, progress: bool | None) -> list[dict]:
    """Per-image stats in image order: one process, or ``workers`` forked processes each
    taking a few large contiguous chunks (little pickling, a progress bar per chunk)."""
    import sys

    from tqdm import tqdm

    disable = not sys.stderr.isatty() if progress is None else not progress
    if workers <= 1 or len(jobs) < 8:
        return [image_stats(*job) for job in tqdm(jobs, desc="PQ", unit="img", disable=disable)]
    n_chunks = min(len(jobs), workers * 4)
    chunks = [list(c) for c in np.array_split(np.arange(len(jobs)), n_chunks)]
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods()
                                      else "spawn")
    out: list[dict] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool, \
            tqdm(total=len(jobs), desc="PQ", unit="img", disable=disable) as bar:
        for chunk, stats in zip(chunks, pool.map(_stats_of_chunk,
                                                 [[jobs[i] for i in c] for c in chunks])):
            out.extend(stats)
            bar.update(len(chunk))
    return out


def _scored_classes(results: dict):
    """Per-class rows for the classes that have any segment (tp + fp + fn > 0)."""
    counts = results.get("counts", {})
    for cat, r in results["per_class"].items():
        if sum(counts.get(cat, {}).values()):
            yield cat, r


def format_table(results: dict, categories: dict | list | None = None) -> str:
    """The summary table (All / Things / Stuff) in percent, then one row per scored class."""
    if categories is not None and not isinstance(categories, dict):
        categories = {c["id"]: c for c in categories}
    lines = [f"{'':<24}{'PQ':>7}{'SQ':>7}{'RQ':>7}{'N':>6}", "-" * 51]
    for name in ("All", "Things", "Stuff"):
        r = results[name]
        lines.append(f"{name:<24}{100 * r['pq']:>7.1f}{100 * r['sq']:>7.1f}"
                     f"{100 * r['rq']:>7.1f}{r['n']:>6d}")
    lines.append("-" * 51)
    for cat, r in _scored_classes(results):
        name = str((categories or {}).get(cat, {}).get("name", cat))[:23]
        lines.append(f"{name:<24}{100 * r['pq']:>7.1f}{100 * r['sq']:>7.1f}{100 * r['rq']:>7.1f}")
    return "\n".join(lines)


def read_results(path) -> dict:
    """A ``pq.json`` as :func:`pq_compute_folders` returned it (category ids back to ints)."""
    pq = read_json(path, "PQ results file")
    pq["per_class"] = {int(k): v for k, v in pq["per_class"].items()}
    pq["counts"] = {int(k): v for k, v in pq.get("counts", {}).items()}
    return pq


WORST_PICTURES = "worst_panoptic"
WORST = 8


def write_pq_report(results: dict, categories: list, out_dir, pictures: dict | None = None,
                    worst: int = WORST) -> str:
    """``pq.json`` (the results, with each category's name and kind under ``category_names`` /
    ``category_isthing`` and the ``worst`` images by PQ under ``worst_images``, for the report
    page) and ``pq.md`` in ``out_dir``, atomically; returns the Markdown.

    ``pictures``: where to find what to draw the worst images with ({"images_dir", "gt_json",
    "gt_dir", "pred_json", "pred_dir"}); each is then drawn as ground truth | prediction under
    ``out_dir/worst_panoptic/`` and its row gets ``png`` (relative to ``out_dir``), or
    ``skipped`` with the reason."""
    from d2seg.io.files import write_json_atomic, write_text_atomic

    markdown = format_markdown(results, categories)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [dict(r) for r in worst_images(results, worst)]
    if pictures and rows:
        rows = _draw_worst(rows, pictures, categories, out_dir / WORST_PICTURES)
    named = {**results, "category_names": {str(c["id"]): c.get("name") for c in categories},
             "category_isthing": {str(c["id"]): int(c.get("isthing", 0)) for c in categories},
             "worst_images": rows}
    write_json_atomic(out_dir / "pq.json", named, indent=1, default=float)
    write_text_atomic(out_dir / "pq.md", markdown)
    return markdown


def _draw_worst(rows: list[dict], pictures: dict, categories: list, out_dir: Path) -> list[dict]:
    from d2seg.errors import D2SegError
    from d2seg.visualize.files import visualize_panoptic

    if out_dir.is_dir():  # never leave an earlier report's pictures beside new ones
        for old in out_dir.glob("*.png"):
            old.unlink()
    for row in rows:
        try:
            path, = visualize_panoptic(pictures["images_dir"], out_dir, pictures["gt_json"],
                                       pictures["gt_dir"], pictures["pred_json"],
                                       pictures["pred_dir"], categories=categories,
                                       image_ids=[row["image_id"]], progress=False)
        except D2SegError as e:
            row["skipped"] = e.one_line()
            continue
        row["png"] = f"{out_dir.name}/{path.name}"
    return rows


def format_markdown(results: dict, categories: dict | list | None = None) -> str:
    """The same numbers as a Markdown table."""
    if categories is not None and not isinstance(categories, dict):
        categories = {c["id"]: c for c in categories}
    rows = ["| | PQ | SQ | RQ | N |", "|---|---:|---:|---:|---:|"]
    for name in ("All", "Things", "Stuff"):
        r = results[name]
        rows.append(f"| **{name}** | {100 * r['pq']:.2f} | {100 * r['sq']:.2f} | "
                    f"{100 * r['rq']:.2f} | {r['n']} |")
    for cat, r in _scored_classes(results):
        name = (categories or {}).get(cat, {}).get("name", cat)
        rows.append(f"| {name} | {100 * r['pq']:.2f} | {100 * r['sq']:.2f} | "
                    f"{100 * r['rq']:.2f} | |")
    return "\n".join(rows) + "\n"
