"""``analyze``: the whole error analysis of one results file, written to one folder.

Writes ``analysis.json`` (everything, read by ``d2seg report``), ``analysis.md`` (the tables),
``errors_<type>.png`` (dAP per error type), ``pr_f1_<type>.png`` (per-class precision-recall
with the best-F1 point) and ``worst/NN_<image>.png`` (ground truth | prediction).
"""

from __future__ import annotations

import os
from pathlib import Path

from d2seg.analysis import metrics
from d2seg.analysis.tide import (
    ERROR_TYPES, IOU_TYPES, SPECIAL_TYPES, run_tide,
)
from d2seg.errors import D2SegError
from d2seg.io.json import read_json_or_parsed

ANALYSIS_JSON = "analysis.json"


def available_iou_types(results: list) -> list[str]:
    """The IoU types the results can be scored on (segm needs masks)."""
    if not results:
        return list(IOU_TYPES)
    types = []
    if all("bbox" in r or "segmentation" in r for r in results):
        types.append("bbox")
    if all("segmentation" in r for r in results):
        types.append("segm")
    return types


def analyze(gt, results, out_dir, *, images_dir=None, iou_types=None,
            score_threshold: float = 0.5, worst: int = 8, draw_threshold: float | None = None,
            pos_iou: float = 0.5, bg_iou: float = 0.1, plots: bool = True) -> dict:
    """Analyse ``results`` (COCO results file or list) against ``gt`` (COCO instances file or
    dict); write everything to ``out_dir``; return the content of analysis.json.

    ``score_threshold``: the user's threshold for P/R/F1 (the best-F1 one is always given too).
    ``worst``: how many images to draw (needs ``images_dir``). ``draw_threshold``: the lowest
    score drawn (default: the best-F1 threshold over all classes, else ``score_threshold``).
    """
    gt_source = gt if isinstance(gt, (str, os.PathLike)) else None
    res_source = results if isinstance(results, (str, os.PathLike)) else None
    gt = read_json_or_parsed(gt, "ground truth")
    results = read_json_or_parsed(results, "results")
    if not isinstance(results, list):
        raise D2SegError("the results are not a COCO results list", file=res_source)
    possible = available_iou_types(results)
    if iou_types is None:
        iou_types = possible
    missing = [t for t in iou_types if t not in possible]
    if missing:
        raise D2SegError(f"the results have no {' or '.join(missing)} for every detection",
                         file=res_source, hint=f"use --iou-types {' '.join(possible) or 'bbox'}")
    if not iou_types:
        raise D2SegError("nothing to analyse: the detections have neither boxes nor masks",
                         file=res_source)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"gt": str(gt_source) if gt_source else None,
              "results": str(res_source) if res_source else None,
              "pos_iou": pos_iou, "bg_iou": bg_iou, "score_threshold": score_threshold,
              "error_types": list(ERROR_TYPES), "special_types": list(SPECIAL_TYPES),
              "iou_types": {}, "worst": [], "files": {}}
    runs = {}
    for iou_type in iou_types:
        run = run_tide(gt, results, iou_type, pos_iou=pos_iou, bg_iou=bg_iou)
        runs[iou_type] = run
        section = run.summary()
        section["overall"] = metrics.overall_prf(run, score_threshold)
        section["per_class"] = metrics.per_class(run, score_threshold)
        section["per_image"] = metrics.per_image(run)
        report["iou_types"][iou_type] = section
        if plots:
            report["files"][f"errors_{iou_type}"] = _errors_plot(section, iou_type, out_dir)
            report["files"][f"pr_f1_{iou_type}"] = _pr_plot(run, section, iou_type, out_dir)

    primary = "segm" if "segm" in runs else iou_types[0]
    report["worst_iou_type"] = primary
    rows = metrics.worst_images(report["iou_types"][primary]["per_image"], worst)
    if draw_threshold is None:
        best = report["iou_types"][primary]["overall"].get("best_threshold")
        draw_threshold = best if best is not None else score_threshold
    report["draw_threshold"] = draw_threshold
    if images_dir is not None and rows:
        from d2seg.analysis.draw import draw_worst

        report["worst"] = draw_worst(runs[primary], gt, results, rows, images_dir,
                                     out_dir / "worst", draw_threshold)
    else:
        names = {im["id"]: im.get("file_name") for im in gt["images"]}
        report["worst"] = [dict(r, file_name=names.get(r["image_id"])) for r in rows]

    from d2seg.io.files import write_json_atomic, write_text_atomic

    write_json_atomic(out_dir / ANALYSIS_JSON, report, indent=1)
    write_text_atomic(out_dir / "analysis.md", markdown(report))
    return report


# ------------------------------------------------------------------ text

def _num(v, digits=1, scale=1.0) -> str:
    return "-" if v is None else f"{scale * v:.{digits}f}"


def markdown(report: dict) -> str:
    lines = []
    for t, s in report["iou_types"].items():
        lines += [f"## {t}: TIDE error breakdown (AP50 {s['ap50']:.2f})", "",
                  "| " + " | ".join(["dAP"] + list(ERROR_TYPES) + list(SPECIAL_TYPES)) + " |",
                  "|---" * (1 + len(ERROR_TYPES) + len(SPECIAL_TYPES)) + "|",
                  "| dAP | " + " | ".join(f"{s['dAP'][e]:.2f}" for e in ERROR_TYPES) + " | "
                  + " | ".join(f"{s['special_dAP'][e]:.2f}" for e in SPECIAL_TYPES) + " |",
                  "| count | " + " | ".join(str(s["counts"][e]) for e in ERROR_TYPES)
                  + " | | |", ""]
        thr = report["score_threshold"]
        lines += [f"**{t} per class** (IoU {report['pos_iou']}; P/R/F1 at the best-F1 score "
                  f"threshold and at {thr})", "",
                  "| class | objects | detections | AP50 | best F1 | at score | P | R | "
                  f"P@{thr} | R@{thr} | F1@{thr} |", "|---" * 11 + "|"]
        for r in s["per_class"]:
            lines.append(
                f"| {r['name']} | {r['num_objects']} | {r['num_detections']} | "
                f"{_num(r['ap50'])} | {_num(r['best_f1'], 3)} | {_num(r['best_threshold'], 3)} | "
                f"{_num(r['precision_at_best'], 3)} | {_num(r['recall_at_best'], 3)} | "
                f"{_num(r['precision'], 3)} | {_num(r['recall'], 3)} | {_num(r['f1'], 3)} |")
        lines.append("")
    if report["worst"]:
        lines += [f"**worst images** ({report['worst_iou_type']}, lowest AP50 first)", "",
                  "| image | AP50 | objects | detections | errors | drawing |", "|---" * 6 + "|"]
        for r in report["worst"]:
            errs = ", ".join(f"{k} {v}" for k, v in r["errors"].items() if v)
            lines.append(f"| {r.get('file_name') or r['image_id']} | {_num(r['ap50'])} | "
                         f"{r['num_objects']} | {r['num_detections']} | {errs or '-'} | "
                         f"{r.get('png') or r.get('skipped', '-')} |")
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------ plots

def _errors_plot(section: dict, iou_type: str, out_dir: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from d2seg.analysis.draw import colour_hex
    from d2seg.io.files import save_figure_atomic

    names = list(ERROR_TYPES) + list(SPECIAL_TYPES)
    values = [section["dAP"][e] for e in ERROR_TYPES] + [section["special_dAP"][e]
                                                         for e in SPECIAL_TYPES]
    colours = [colour_hex(e) for e in ERROR_TYPES] + ["#607d8b", "#90a4ae"]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.barh(names[::-1], values[::-1], color=colours[::-1])
    for y, v in enumerate(values[::-1]):
        ax.text(v, y, f" {v:.2f}", va="center", fontsize=8)
    ax.set_xlabel("dAP (AP50 points gained when fixed)")
    ax.set_title(f"{iou_type}: AP50 {section['ap50']:.2f}; error breakdown (TIDE)", fontsize=9)
    ax.set_xlim(0, max(values + [1.0]) * 1.2)
    fig.tight_layout()
    return str(save_figure_atomic(fig, out_dir / f"errors_{iou_type}.png", dpi=100))


def _pr_plot(run, section: dict, iou_type: str, out_dir: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from d2seg.io.files import save_figure_atomic

    by_class = metrics.class_detections(run)
    counts = run.gt_counts()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    colours = plt.get_cmap("tab10")(np.arange(10))
    for k, row in enumerate(r for r in section["per_class"] if r["num_objects"]):
        scores, true = by_class.get(row["category_id"], ([], []))
        recall, precision = metrics.pr_curve(scores, true, counts.get(row["category_id"], 0))
        colour = colours[k % 10]
        ax.plot(recall, precision, color=colour, linewidth=1,
                label=f"{row['name']} (F1 {row['best_f1']:.2f} @ {_num(row['best_threshold'], 2)})")
        if row["recall_at_best"] is not None and row["precision_at_best"] is not None:
            ax.plot([row["recall_at_best"]], [row["precision_at_best"]], "o", color=colour)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7, loc="lower left")
    ax.set_title(f"{iou_type} precision-recall at IoU {run.pos_iou} (dot: best F1)", fontsize=9)
    fig.tight_layout()
    return str(save_figure_atomic(fig, out_dir / f"pr_f1_{iou_type}.png", dpi=100))
