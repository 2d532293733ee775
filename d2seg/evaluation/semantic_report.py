"""The semantic counterpart of the COCO report: metrics.json / metrics.md, a class confusion
matrix and the worst images by mIoU, so that a semantic run gets the same files and report
page as an instance run.

Built from a confusion matrix in :class:`d2seg.evaluation.semantic_metrics.SemanticConfusion`'s
orientation (rows ground truth, columns prediction, ignored pixels left out) and per-image
rows; the metrics are SemanticConfusion's (equal to detectron2's SemSegEvaluator, in percent
here as detectron2 reports them). Torch-free.
"""

from __future__ import annotations

import math
import os

import numpy as np

from d2seg.evaluation.semantic_metrics import SemanticConfusion
from d2seg.io.files import write_json_atomic, write_text_atomic

REPORT_JSON = "sem_seg_report.json"  # kept beside the evaluator's output, read by d2seg eval
WORST_PREDICTIONS = "sem_seg_worst"   # the evaluator's label PNGs of the worst images
WORST_PICTURES = "worst_sem_seg"      # ground truth | prediction drawings beside metrics.json
WORST = 10                            # images listed (and drawn) as the worst
MIN_HEIGHT = 360                      # smaller images are enlarged so that labels stay readable


def worst_key(row: dict) -> tuple:
    """Sort key of a per-image row: lowest mIoU first (an image without any labelled pixel,
    mIoU None, last), then by file name."""
    return (math.inf if row.get("mIoU") is None else row["mIoU"], str(row.get("file_name")))


def image_scores(matrix: np.ndarray) -> dict:
    """mIoU (over the classes in this image's ground truth or prediction) and pixel accuracy of
    one image's confusion matrix, in percent."""
    confusion = SemanticConfusion(matrix.shape[0], ignore_label=None)
    confusion.matrix = np.asarray(matrix, np.int64)
    m = confusion.metrics()
    return {"mIoU": _pct(m["mIoU"]), "pACC": _pct(m["pixel_accuracy"])}


def build_report(matrix: np.ndarray, class_names: list[str], per_image: list[dict],
                 worst: int = WORST, worst_files: dict | None = None,
                 class_colors: list | None = None, ignore_label: int | None = None) -> dict:
    """The report of a whole split: ``matrix`` (rows ground truth, columns prediction) summed
    over its images, ``per_image`` rows ({"file_name", "mIoU", "pACC"}) from :func:`image_scores`.

    ``worst_files``: file name -> {"image", "ground_truth", "prediction"} (the input image, its
    label PNG and the predicted label PNG relative to the report file's folder), added to those
    worst images' rows so that :func:`write_report` can draw them; ``class_colors`` (RGB per
    class) and ``ignore_label`` are kept for that drawing."""
    confusion = SemanticConfusion(len(class_names), ignore_label=None)
    confusion.matrix = np.asarray(matrix, np.int64)
    m = confusion.metrics()
    gt_pixels, pred_pixels = confusion.matrix.sum(axis=1), confusion.matrix.sum(axis=0)
    per_class = {}
    for k, name in enumerate(class_names):
        per_class[name] = {"id": k, "IoU": _pct(m["per_class_iou"][k]),
                           "ACC": _pct(m["per_class_accuracy"][k]),
                           "gt_pixels": int(gt_pixels[k]), "pred_pixels": int(pred_pixels[k])}
    rows = sorted(per_image, key=worst_key)
    worst_rows = [dict(r, **(worst_files or {}).get(r.get("file_name"), {})) for r in rows[:worst]]
    return {"sem_seg": {"mIoU": _pct(m["mIoU"]), "fwIoU": _pct(m["fwIoU"]),
                        "mACC": _pct(m["mean_accuracy"]), "pACC": _pct(m["pixel_accuracy"]),
                        "num_images": len(per_image), "per_class": per_class,
                        "confusion": confusion.matrix.tolist(), "class_names": list(class_names),
                        "worst_images": worst_rows, "per_image": rows,
                        "class_colors": class_colors, "ignore_label": ignore_label}}


def markdown(report: dict) -> str:
    r = report["sem_seg"]
    lines = ["| mIoU | fwIoU | mACC | pACC | images |", "|---|---|---|---|---|",
             f"| {_f(r['mIoU'])} | {_f(r['fwIoU'])} | {_f(r['mACC'])} | {_f(r['pACC'])} | "
             f"{r['num_images']} |", "", "| class | IoU | ACC | ground-truth pixels | predicted pixels |",
             "|---|---|---|---|---|"]
    for name, c in r["per_class"].items():
        lines.append(f"| {name} | {_f(c['IoU'])} | {_f(c['ACC'])} | {c['gt_pixels']} | "
                     f"{c['pred_pixels']} |")
    if r["worst_images"]:
        lines += ["", "Worst images by mIoU:", "", "| image | mIoU | pACC |", "|---|---|---|"]
        lines += [f"| {w['file_name']} | {_f(w['mIoU'])} | {_f(w['pACC'])} |" for w in r["worst_images"]]
    return "\n".join(lines) + "\n"


def write_report(report: dict, out_dir, plots: bool = True, source_dir=None) -> dict:
    """metrics.json, metrics.md and (with ``plots``) confusion_sem_seg.png in ``out_dir``; with
    ``plots`` and ``source_dir`` (the folder of the evaluator's report file, which holds the
    worst images' predicted label PNGs) also each worst image drawn as ground truth | prediction
    under ``out_dir/worst_sem_seg/``, its path (relative to ``out_dir``) in the row's ``png``."""
    os.makedirs(out_dir, exist_ok=True)
    written = {}
    if plots and source_dir is not None and report["sem_seg"].get("worst_images"):
        report = {**report, "sem_seg": {**report["sem_seg"], "worst_images": draw_worst(
            report["sem_seg"], source_dir, os.path.join(out_dir, WORST_PICTURES))}}
        if any(w.get("png") for w in report["sem_seg"]["worst_images"]):
            written["worst"] = os.path.join(out_dir, WORST_PICTURES)
    written.update({"json": str(write_json_atomic(os.path.join(out_dir, "metrics.json"), report,
                                                   indent=1)),
                    "markdown": str(write_text_atomic(os.path.join(out_dir, "metrics.md"), markdown(report)))})
    if plots:
        from d2seg.evaluation.plots import confusion_matrix_png

        r = report["sem_seg"]
        counts = np.asarray(r["confusion"], np.float64)
        rows = counts.sum(axis=1, keepdims=True)
        share = np.rint(100 * np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0))
        written["confusion"] = confusion_matrix_png(
            share.astype(np.int64), r["class_names"],
            os.path.join(out_dir, "confusion_sem_seg.png"), "sem_seg",
            caption="% of each true class's pixels")
    return written


def draw_worst(sem: dict, source_dir, out_dir) -> list[dict]:
    """Draw each worst image of the report ``sem`` (its ``sem_seg`` part) as ground truth |
    prediction with d2seg's renderer to ``out_dir/NN_<image>.png``; returns the rows with ``png``
    (relative to out_dir's parent) or ``skipped`` (why it was not drawn) added."""
    import cv2

    from d2seg.io.images import read_image
    from d2seg.errors import D2SegError
    from d2seg.io.files import write_png_atomic
    from d2seg.visualize import draw_semantic, side_by_side

    names = sem["class_names"]
    colours = sem.get("class_colors")
    bgr = [tuple(int(v) for v in c[::-1]) for c in colours] if colours else None
    ignore = sem.get("ignore_label")
    if os.path.isdir(out_dir):  # never leave an earlier evaluation's pictures beside new ones
        for old in os.listdir(out_dir):
            if old.endswith(".png"):
                os.remove(os.path.join(out_dir, old))
    drawn = []
    for rank, row in enumerate(sem["worst_images"], 1):
        row = {k: v for k, v in row.items() if k not in ("png", "skipped")}
        if not row.get("prediction") or not row.get("image") or not row.get("ground_truth"):
            drawn.append(dict(row, skipped="no saved prediction for this image"))
            continue
        try:
            image = read_image(row["image"], "BGR")
            labels = []
            for path in (row["ground_truth"], os.path.join(source_dir, row["prediction"])):
                labels.append(read_labels(path))
            if labels[0].shape != image.shape[:2] or labels[1].shape != image.shape[:2]:
                raise D2SegError(f"label maps {labels[0].shape}/{labels[1].shape} differ from the "
                                 f"image {image.shape[:2]}", file=str(row["image"]))
        except D2SegError as e:
            drawn.append(dict(row, skipped=e.one_line()))
            continue
        h, w = image.shape[:2]
        scale = int(math.ceil(MIN_HEIGHT / max(h, 1))) if h < MIN_HEIGHT else 1
        if scale > 1:
            image = cv2.resize(image, (w * scale, h * scale), interpolation=cv2.INTER_LINEAR)
            labels = [cv2.resize(m.astype(np.int32), (w * scale, h * scale),
                                 interpolation=cv2.INTER_NEAREST) for m in labels]
        miou = "-" if row.get("mIoU") is None else f"{row['mIoU']:.1f}"
        panels = [draw_semantic(image, labels[0], names, bgr, ignore_label=ignore),
                  draw_semantic(image, labels[1], names, bgr, ignore_label=None)]
        canvas = side_by_side(panels, ["ground truth", f"prediction (mIoU {miou})"])
        stem = os.path.splitext(os.path.basename(str(row.get("file_name") or rank)))[0]
        target = os.path.join(out_dir, f"{rank:02d}_{stem}.png")
        write_png_atomic(target, canvas)
        drawn.append(dict(row, png=f"{os.path.basename(os.path.normpath(out_dir))}/"
                                   f"{os.path.basename(target)}"))
    return drawn


def read_labels(path) -> np.ndarray:
    """A label PNG as (H, W) int64 class ids (:func:`d2seg.io.labels.read_label_png`: palette
    indices as detectron2's SemSegEvaluator reads them)."""
    from d2seg.io.labels import read_label_png

    return read_label_png(path).astype(np.int64)


def evaluate_folders(gt_dir, pred_dir, class_names: list[str], ignore_label: int | None = 255,
                     images_dir=None, class_colors: list | None = None,
                     worst: int = WORST) -> dict:
    """The report of label PNGs in ``pred_dir`` against the ground-truth label PNGs of
    ``gt_dir``, paired by file name (``d2seg predict`` writes ``semantic/<image stem>.png``);
    the same metrics and per-image rows as :class:`SemSegReportEvaluator`'s. With
    ``images_dir`` (the images, by stem) the worst images can be drawn by :func:`write_report`
    with ``source_dir=pred_dir``."""
    from pathlib import Path

    from d2seg.errors import D2SegError

    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for folder, what in ((gt_dir, "ground-truth label"), (pred_dir, "prediction")):
        if not folder.is_dir():
            raise D2SegError(f"no {what} folder", file=str(folder))
    gts = sorted(gt_dir.glob("*.png"))
    if not gts:
        raise D2SegError("no label PNGs in the ground-truth folder", file=str(gt_dir))
    images = {}
    if images_dir is not None:
        for path in sorted(Path(images_dir).iterdir()):
            images.setdefault(path.stem, path)
    n = len(class_names)
    total = np.zeros((n, n), np.int64)
    rows, files = [], {}
    for gt_path in gts:
        pred_path = pred_dir / gt_path.name
        if not pred_path.is_file():
            raise D2SegError(f"no prediction for {gt_path.name}", file=str(pred_dir),
                             hint="give a PNG of class ids per ground-truth image, with its name")
        confusion = SemanticConfusion(n, ignore_label)
        try:
            confusion.update(read_labels(gt_path), read_labels(pred_path))
        except D2SegError as e:
            if e.file:
                raise
            raise D2SegError(e.reason, file=str(pred_path), hint=e.hint) from None
        total += confusion.matrix
        image = images.get(gt_path.stem)
        name = image.name if image is not None else gt_path.name
        rows.append({"file_name": name, **image_scores(confusion.matrix)})
        if image is not None:
            files[name] = {"image": str(image), "ground_truth": str(gt_path),
                           "prediction": str(pred_path.resolve())}
    return build_report(total, class_names, rows, worst=worst, worst_files=files,
                        class_colors=class_colors, ignore_label=ignore_label)


def _pct(v) -> float | None:
    return None if v is None or not math.isfinite(v) else 100.0 * float(v)


def _f(v) -> str:
    return "-" if v is None else f"{v:.1f}"
