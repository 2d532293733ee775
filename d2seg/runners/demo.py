"""The README's main job: generate the demo data, train, evaluate and draw, under runs/demo/.

One function a user can also call from Python; ``d2seg demo`` only prints what it returns.
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[2] / "configs"  # the checkout's: a wheel has none
INSTANCE_CONFIG = CONFIGS / "instance" / "mask_rcnn_MNV2_FPN_cpu_quick.yaml"
PANOPTIC_CONFIG = CONFIGS / "panoptic" / "panoptic_fpn_MNV2_cpu_quick.yaml"


def run_instance_demo(out_dir="runs/demo", max_iter: int | None = None, num_pictures: int = 8,
                      seed: int = 42, overrides=()) -> dict:
    """Train the CPU quick Mask R-CNN on demo_instances, evaluate on val, draw predictions.

    Returns the paths written and the COCO numbers (fractions, as pycocotools reports them).
    """
    from detectron2.data import MetadataCatalog

    from d2seg.data.demo import ensure_demo
    from d2seg.engine import run as engine
    from d2seg.evaluation import coco

    from d2seg.engine.run_report import write_run_report

    _require_config(INSTANCE_CONFIG)
    ensure_demo()
    out = Path(out_dir) / "instance"
    cfg = engine.setup(INSTANCE_CONFIG, _schedule(max_iter) + list(overrides) + _NO_RUN_REPORT,
                       output_dir=out, seed=seed)
    engine.train(cfg, resume=False)

    meta = MetadataCatalog.get("demo_instances_val")
    results = out / "eval" / "demo_instances_val" / "coco_instances_results.json"
    # the training's last evaluation scored these results already; its report is kept beside them
    report = coco.load_report(results.parent) or coco.evaluate_coco(meta.json_file, str(results))
    written = {"pictures": _draw(meta, results, out / "pictures", num_pictures)}
    written.update(_run_report(write_run_report(cfg)))
    summary = {t: {k: r["stats"][k] for k in ("AP", "AP50", "AP75")} for t, r in report.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return {"metrics": summary, "written": {k: str(v) for k, v in written.items()}, "output": str(out)}


def run_panoptic_demo(out_dir="runs/demo", max_iter: int | None = None, num_pictures: int = 8,
                      seed: int = 42) -> dict:
    """Train the CPU quick Panoptic FPN on demo_panoptic, then export the val predictions as
    COCO panoptic, score PQ against the ground truth and draw ground truth | prediction."""
    from detectron2.data import MetadataCatalog

    from d2seg.data.demo import ensure_demo
    from d2seg.engine import run as engine
    from d2seg.evaluation.panoptic_quality import pq_compute_folders, write_pq_report
    from d2seg.io.json import read_json
    from d2seg.visualize.files import visualize_panoptic

    from d2seg.engine.run_report import write_run_report

    _require_config(PANOPTIC_CONFIG)
    ensure_demo()
    out = Path(out_dir) / "panoptic"
    cfg = engine.setup(PANOPTIC_CONFIG, _schedule(max_iter) + _NO_RUN_REPORT, output_dir=out, seed=seed)
    engine.train(cfg, resume=False)

    meta = MetadataCatalog.get(cfg.DATASETS.TEST[0])
    pred_json = out / "predictions" / "panoptic.json"
    export_panoptic_predictions(cfg, str(out / "model_final.pth"), cfg.DATASETS.TEST[0], pred_json)
    pq = pq_compute_folders(meta.panoptic_json, meta.panoptic_root, pred_json, pred_json.with_suffix(""))
    write_pq_report(pq, read_json(meta.panoptic_json, "panoptic JSON file")["categories"],
                    out / "report", pictures=dict(
                        images_dir=meta.image_root, gt_json=meta.panoptic_json,
                        gt_dir=meta.panoptic_root, pred_json=str(pred_json),
                        pred_dir=str(pred_json.with_suffix(""))))
    visualize_panoptic(meta.image_root, out / "pictures", gt_json=meta.panoptic_json, gt_dir=meta.panoptic_root,
                       pred_json=pred_json, n=num_pictures)
    summary = {group: {k: pq[group][k] for k in ("pq", "sq", "rq")} for group in ("All", "Things", "Stuff")}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return {"metrics": summary, "output": str(out),
            "written": _run_report(write_run_report(cfg, panoptic=False))}


def export_panoptic_predictions(cfg, weights: str, dataset: str, out_json: Path) -> dict:
    """Run a panoptic model on a registered dataset and write COCO panoptic PNGs + JSON."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from d2seg.io.images import read_image
    from d2seg.engine.predict import BatchPredictor
    from d2seg.io.json import read_json
    from d2seg.panoptic.export import export_coco_panoptic

    meta = MetadataCatalog.get(dataset)
    predictor = BatchPredictor(cfg, weights)
    categories = read_json(meta.panoptic_json, "panoptic JSON file")["categories"]

    def predictions():
        for record in DatasetCatalog.get(dataset):
            image = read_image(record["file_name"], "BGR")
            ids, segments = predictor([image])[0]["panoptic_seg"]
            info = {"id": record["image_id"], "file_name": Path(record["file_name"]).name,
                    "height": image.shape[0], "width": image.shape[1]}
            yield info, ids.cpu().numpy(), segments

    return export_coco_panoptic(
        predictions(), out_json, categories,
        thing_label_to_category={v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()},
        stuff_label_to_category={v: k for k, v in meta.stuff_dataset_id_to_contiguous_id.items()})


# the demo writes the run report itself, after its pictures and PQ files
_NO_RUN_REPORT = ["D2SEG.RUN_REPORT", "False"]


def _run_report(written: dict) -> dict:
    """The paths write_run_report wrote (its warnings were logged already)."""
    return {k: str(v) for k, v in written.items() if k != "warnings"}


def _require_config(path: Path) -> None:
    """The demo's configs are the source checkout's configs/, which a wheel install lacks."""
    if not path.is_file():
        from d2seg.errors import D2SegError

        raise D2SegError("the demo's config comes with a source checkout of d2seg (configs/), "
                         "which this installation lacks", file=str(path),
                         hint="install d2seg from a clone (pip install -e .) for `d2seg demo`, or "
                              "run `d2seg train --config-file` with a config of your own")


def _schedule(max_iter: int | None) -> list[str]:
    if max_iter is None:
        return []
    steps = sorted({int(max_iter * 0.7), int(max_iter * 0.9)} - {0})
    steps = steps if len(steps) == 2 and steps[1] < max_iter else []  # too short for LR drops
    return ["SOLVER.MAX_ITER", str(max_iter), "SOLVER.STEPS", f"({', '.join(map(str, steps))}{',' if len(steps) == 1 else ''})",
            "TEST.EVAL_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD", str(max_iter), "SOLVER.WARMUP_ITERS",
            str(min(100, max_iter))]


def _draw(meta, results: Path, out: Path, n: int) -> str:
    from d2seg.visualize.files import visualize_coco

    visualize_coco(meta.image_root, out, gt=meta.json_file, pred=str(results), n=n)
    return str(out)


def main_summary(result: dict) -> str:
    lines = []
    for task, m in result["metrics"].items():
        lines.append(f"{task}: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in m.items()))
    lines.append(f"outputs in {result['output']} (report.html, report/, analysis/, pictures/, metrics.json, TensorBoard events)")
    return "\n".join(lines)


