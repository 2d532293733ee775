"""The README's main job: generate the demo data, train, evaluate and draw, under runs/demo/.

One function a user can also call from Python; ``d2seg demo`` only prints what it returns.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
INSTANCE_CONFIG = CONFIGS / "instance" / "mask_rcnn_R18_GN_FPN_cpu_quick.yaml"


def run_instance_demo(out_dir="runs/demo", max_iter: int | None = None, num_pictures: int = 8,
                      seed: int = 42) -> dict:
    """Train the CPU quick Mask R-CNN on demo_instances, evaluate on val, draw predictions.

    Returns the paths written and the COCO numbers (fractions, as pycocotools reports them).
    """
    from detectron2.data import MetadataCatalog

    from d2seg.data.demo import ensure_demo
    from d2seg.engine import run as engine
    from d2seg.evaluation import coco

    ensure_demo()
    out = Path(out_dir) / "instance"
    overrides = ["DATASETS.TRAIN", "('demo_instances_train',)", "DATASETS.TEST", "('demo_instances_val',)"]
    if max_iter is not None:
        overrides += ["SOLVER.MAX_ITER", str(max_iter), "SOLVER.STEPS", f"({int(max_iter * 0.7)}, {int(max_iter * 0.9)})",
                      "TEST.EVAL_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD", str(max_iter)]
    cfg = engine.setup(INSTANCE_CONFIG, overrides, output_dir=out, seed=seed)
    engine.train(cfg, resume=False)

    meta = MetadataCatalog.get("demo_instances_val")
    results = out / "eval" / "demo_instances_val" / "coco_instances_results.json"
    report = coco.evaluate_coco(meta.json_file, str(results))
    written = coco.write_report(report, out / "report", gt=meta.json_file, results=str(results))
    written["pictures"] = _draw(meta, results, out / "pictures", num_pictures)
    summary = {t: {k: r["stats"][k] for k in ("AP", "AP50", "AP75")} for t, r in report.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return {"metrics": summary, "written": {k: str(v) for k, v in written.items()}, "output": str(out)}


def _draw(meta, results: Path, out: Path, n: int) -> str:
    from d2seg.visualize.files import visualize_coco

    visualize_coco(meta.image_root, out, gt=meta.json_file, pred=str(results), n=n)
    return str(out)


def main_summary(result: dict) -> str:
    lines = [f"{task}: AP {100 * m['AP']:.1f}, AP50 {100 * m['AP50']:.1f}, AP75 {100 * m['AP75']:.1f}"
             for task, m in result["metrics"].items()]
    lines.append(f"outputs in {result['output']} (report/, pictures/, metrics.json, TensorBoard events)")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(main_summary(run_instance_demo(os.environ.get("D2SEG_DEMO_OUT", "runs/demo"))))
