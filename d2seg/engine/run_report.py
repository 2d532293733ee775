"""After a run: the files a user looks at, written from what the run's evaluation produced.

``d2seg train`` (and the demo) end with the last evaluation's COCO results in
``OUTPUT_DIR/eval/<dataset>/``. From those, without scoring or running the model again, this
writes ``report/`` (metrics.json/.md, PR curves, confusion matrices; for a semantic model
per-class IoU, the class confusion and the worst images by mIoU), ``analysis/`` (the
TIDE-style error breakdown, per-class P/R/F1, worst images) and ``report.html`` (one offline
page: curves, tables, plots, errors, config). Each step is best-effort: a failure there is one
warning line and never costs the trained model.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger("d2seg")

RESULTS_JSON = "coco_instances_results.json"


def coco_results(cfg) -> tuple[str, Path] | None:
    """(dataset, its evaluation folder) of the first test dataset whose COCO results the run's
    evaluation wrote, or None."""
    for dataset in cfg.DATASETS.TEST:
        folder = Path(cfg.OUTPUT_DIR) / "eval" / dataset
        if (folder / RESULTS_JSON).is_file():
            return dataset, folder
    return None


def write_run_report(cfg, worst: int = 8, panoptic: bool = True) -> dict:
    """Write report/, analysis/ and report.html in OUTPUT_DIR; return what was written
    (``report``, ``analysis``, ``pq``, ``html``: paths) and ``warnings`` (one line per step that
    failed). With ``panoptic``, the last evaluation's panoptic quality (when it made one) goes
    to report/pq.json, pq.md with its worst images drawn; the demo, which scores its own
    exported predictions, passes False."""
    out = Path(cfg.OUTPUT_DIR)
    written: dict = {"warnings": []}

    def step(name, fn):
        try:
            written[name] = fn()
        except Exception as e:  # noqa: BLE001  (a report must never cost the trained model)
            line = f"could not write the run's {name}: {type(e).__name__}: {e}"
            logger.warning(line)
            written["warnings"].append(line)

    found = coco_results(cfg)
    if found is not None:
        dataset, folder = found
        from detectron2.data import MetadataCatalog

        meta = MetadataCatalog.get(dataset)
        gt = meta.get("json_file", None)
        results = str(folder / RESULTS_JSON)
        if gt and os.path.isfile(gt):
            step("report", lambda: _coco_report(folder, gt, results, out / "report"))
            step("analysis", lambda: _analysis(gt, results, meta.get("image_root", None),
                                               out / "analysis", worst))
            if "analysis" in written:
                step("hints", lambda: _hints(cfg, out))
    else:
        semantic = _semantic_report_file(cfg)
        if semantic is not None:
            step("report", lambda: _semantic_report(semantic, out / "report"))
    if panoptic:
        found = _panoptic_results(cfg)
        if found is not None:
            step("pq", lambda: _pq_report(found[0], found[1], out / "report", worst))
    step("html", lambda: str(_html(out)))
    return written


def _panoptic_results(cfg) -> tuple[str, Path] | None:
    """(dataset, evaluation folder) of the first test dataset the run's PanopticEvaluator
    scored, or None."""
    from d2seg.evaluation.panoptic_evaluator import PQ_JSON

    for dataset in cfg.DATASETS.TEST:
        folder = Path(cfg.OUTPUT_DIR) / "eval" / dataset
        if (folder / PQ_JSON).is_file():
            return dataset, folder
    return None


def _pq_report(dataset: str, folder: Path, report_dir: Path, worst: int) -> str:
    """report/pq.json, pq.md and the worst images by PQ drawn, from the evaluator's pq.json and
    the predictions it kept (not scored again)."""
    from detectron2.data import MetadataCatalog

    from d2seg.evaluation.panoptic_evaluator import PQ_JSON, PREDICTIONS_DIR, PREDICTIONS_JSON
    from d2seg.evaluation.panoptic_quality import read_results, write_pq_report
    from d2seg.io.json import read_json

    meta = MetadataCatalog.get(dataset)
    pq = read_results(folder / PQ_JSON)
    images = meta.get("image_root", None)
    pictures = None
    if images and os.path.isdir(images) and (folder / PREDICTIONS_JSON).is_file():
        pictures = dict(images_dir=images, gt_json=meta.panoptic_json, gt_dir=meta.panoptic_root,
                        pred_json=str(folder / PREDICTIONS_JSON),
                        pred_dir=str(folder / PREDICTIONS_DIR))
    write_pq_report(pq, read_json(meta.panoptic_json, "panoptic JSON file")["categories"],
                    report_dir, pictures, worst=worst)
    return str(report_dir)


def _semantic_report_file(cfg) -> Path | None:
    from d2seg.evaluation.semantic_report import REPORT_JSON

    for dataset in cfg.DATASETS.TEST:
        path = Path(cfg.OUTPUT_DIR) / "eval" / dataset / REPORT_JSON
        if path.is_file():
            return path
    return None


def _semantic_report(path: Path, report_dir: Path) -> str:
    import json

    from d2seg.evaluation import semantic_report

    semantic_report.write_report(json.loads(path.read_text()), report_dir, source_dir=path.parent)
    return str(report_dir)


def _coco_report(folder: Path, gt: str, results: str, report_dir: Path) -> str:
    from d2seg.evaluation import coco

    report = coco.load_report(folder)  # what the evaluator computed: not scored again
    if report is None:
        report = coco.evaluate_coco(gt, results)
    coco.write_report(report, report_dir, gt=gt, results=results)
    return str(report_dir)


def _analysis(gt: str, results: str, images: str | None, out_dir: Path, worst: int) -> str:
    from d2seg.analysis import analyze

    images = images if images and os.path.isdir(images) else None
    analyze(gt, results, out_dir, images_dir=images, worst=worst if images else 0)
    return str(out_dir)


def _hints(cfg, out: Path) -> int:
    """Add to analysis.json what the training data and config say about the largest errors
    (d2seg.analysis.hints); returns how many hints apply."""
    import json

    from detectron2.data import MetadataCatalog

    from d2seg.analysis.hints import hints, training_facts
    from d2seg.io.files import write_json_atomic

    path = out / "analysis" / "analysis.json"
    analysis = json.loads(path.read_text())
    facts = None
    train_json = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("json_file", None) \
        if cfg.DATASETS.TRAIN else None
    if train_json and os.path.isfile(train_json):
        facts = training_facts(train_json)
    config = {"FILTER_EMPTY_ANNOTATIONS": bool(cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS),
              "MIN_SIZE_TRAIN": list(cfg.INPUT.MIN_SIZE_TRAIN), "MIN_SIZE_TEST": cfg.INPUT.MIN_SIZE_TEST}
    metrics_file = out / "report" / "metrics.json"
    coco_metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
    analysis["hints"] = hints(analysis, facts, config, coco_metrics)
    analysis["training_facts"] = facts
    write_json_atomic(path, analysis, indent=1)
    return len(analysis["hints"])


def _html(out: Path) -> Path:
    from d2seg.report import write_report

    return write_report(out)
