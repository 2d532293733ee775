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


def image_scores(matrix: np.ndarray) -> dict:
    """mIoU (over the classes in this image's ground truth or prediction) and pixel accuracy of
    one image's confusion matrix, in percent."""
    confusion = SemanticConfusion(matrix.shape[0], ignore_label=None)
    confusion.matrix = np.asarray(matrix, np.int64)
    m = confusion.metrics()
    return {"mIoU": _pct(m["mIoU"]), "pACC": _pct(m["pixel_accuracy"])}


def build_report(matrix: np.ndarray, class_names: list[str], per_image: list[dict],
                 worst: int = 10) -> dict:
    """The report of a whole split: ``matrix`` (rows ground truth, columns prediction) summed
    over its images, ``per_image`` rows ({"file_name", "mIoU", "pACC"}) from :func:`image_scores`."""
    confusion = SemanticConfusion(len(class_names), ignore_label=None)
    confusion.matrix = np.asarray(matrix, np.int64)
    m = confusion.metrics()
    gt_pixels, pred_pixels = confusion.matrix.sum(axis=1), confusion.matrix.sum(axis=0)
    per_class = {}
    for k, name in enumerate(class_names):
        per_class[name] = {"id": k, "IoU": _pct(m["per_class_iou"][k]),
                           "ACC": _pct(m["per_class_accuracy"][k]),
                           "gt_pixels": int(gt_pixels[k]), "pred_pixels": int(pred_pixels[k])}
    rows = sorted(per_image, key=lambda r: (math.inf if r["mIoU"] is None else r["mIoU"],
                                            str(r.get("file_name"))))
    return {"sem_seg": {"mIoU": _pct(m["mIoU"]), "fwIoU": _pct(m["fwIoU"]),
                        "mACC": _pct(m["mean_accuracy"]), "pACC": _pct(m["pixel_accuracy"]),
                        "num_images": len(per_image), "per_class": per_class,
                        "confusion": confusion.matrix.tolist(), "class_names": list(class_names),
                        "worst_images": rows[:worst], "per_image": rows}}


def markdown(report: dict) -> str:
    r = report["sem_seg"]
    lines = [f"| mIoU | fwIoU | mACC | pACC | images |", "|---|---|---|---|---|",
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


def write_report(report: dict, out_dir, plots: bool = True) -> dict:
    """metrics.json, metrics.md and (with ``plots``) confusion_sem_seg.png in ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    written = {"json": str(write_json_atomic(os.path.join(out_dir, "metrics.json"), report, indent=1)),
               "markdown": str(write_text_atomic(os.path.join(out_dir, "metrics.md"), markdown(report)))}
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


def _pct(v) -> float | None:
    return None if v is None or not math.isfinite(v) else 100.0 * float(v)


def _f(v) -> str:
    return "-" if v is None else f"{v:.1f}"
