"""The demo Mask R-CNN after a short training run (the README's main job, shortened), exported
to ONNX and served by ``d2seg predict --model``: pycocotools scores its results.json on the demo
val split with the bbox and segm AP that pycocotools gives the evaluator's own results of the
PyTorch model, i.e. the export changes no number a user would report."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime", reason="pip install onnxruntime (d2seg's deploy runtime)")
pytest.importorskip("onnx", reason="pip install onnx (torch's ONNX exporter)")

from d2seg.cli.main import main  # noqa: E402

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs/instance/mask_rcnn_MNV2_FPN_cpu_quick.yaml"


def _coco_ap(gt, results: list, iou_type: str) -> float:
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(results), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


def test_exported_demo_model_scores_the_same_ap(tmp_path):
    from detectron2.data import MetadataCatalog
    from pycocotools.coco import COCO

    from d2seg.runners.demo import run_instance_demo

    result = run_instance_demo(tmp_path / "demo", max_iter=150, num_pictures=0)
    run = Path(result["output"])
    eager = json.loads((run / "eval" / "demo_instances_val" / "coco_instances_results.json")
                       .read_text())
    assert len(eager) > 50, "150 iterations should give the model detections to compare"
    assert main(["export", "--config-file", str(CONFIG), "--weights",
                 str(run / "model_final.pth"), "--dataset", "demo_instances_train",
                 "--out", str(tmp_path / "export")]) == 0
    meta = MetadataCatalog.get("demo_instances_val")
    assert main(["predict", meta.image_root, "--model", str(tmp_path / "export"),
                 "--out", str(tmp_path / "pred"), "--no-render"]) == 0
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(meta.json_file)
    by_name = {os.path.basename(im["file_name"]): im["id"] for im in gt.dataset["images"]}
    index = {e["id"]: by_name[os.path.basename(e["file_name"])]
             for e in json.loads((tmp_path / "pred" / "images.json").read_text())}
    exported = json.loads((tmp_path / "pred" / "results.json").read_text())
    for r in exported:
        r["image_id"] = index[r["image_id"]]
    assert abs(len(exported) - len(eager)) <= 2
    for iou_type in ("bbox", "segm"):
        ours, reference = _coco_ap(gt, exported, iou_type), _coco_ap(gt, eager, iou_type)
        assert reference > 0.05, (iou_type, reference)  # a model that finds the shapes
        assert ours == pytest.approx(reference, abs=0.005), (iou_type, ours, reference)
