"""The README's main job (``d2seg demo``), shortened to a few iterations: every output exists
and the numbers it reports are the ones pycocotools / panopticapi compute from its files."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_instance_demo_outputs_and_numbers(tmp_path):
    from detectron2.data import MetadataCatalog
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from d2seg.runners.demo import run_instance_demo

    # keep every detection of the barely trained model, so AP is computed on real output
    result = run_instance_demo(tmp_path, max_iter=3, num_pictures=2,
                               overrides=["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])
    out = Path(result["output"])
    for name in ("model_final.pth", "metrics.json", "config.yaml", "report/metrics.md", "summary.json"):
        assert (out / name).is_file(), name
    assert len(list((out / "pictures").glob("*.png"))) == 2
    detections = json.loads((out / "eval" / "demo_instances_val" / "coco_instances_results.json").read_text())
    if not detections:
        pytest.fail("3 iterations kept no detection at score threshold 0: nothing to compare")
    assert (out / "report" / "pr_curves_segm.png").is_file()
    for d in detections:
        d.pop("bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(MetadataCatalog.get("demo_instances_val").json_file)
        ev = COCOeval(gt, gt.loadRes(detections), "segm")
        ev.evaluate(); ev.accumulate(); ev.summarize()
    assert result["metrics"]["segm"]["AP"] == ev.stats[0]


def test_panoptic_demo_outputs_and_pq(tmp_path):
    from detectron2.data import MetadataCatalog

    from d2seg.runners.demo import run_panoptic_demo

    result = run_panoptic_demo(tmp_path, max_iter=3, num_pictures=2)
    out = Path(result["output"])
    pred_json = out / "predictions" / "panoptic.json"
    assert pred_json.is_file() and (out / "report" / "pq.md").is_file()
    assert len(list((out / "pictures").glob("*.png"))) == 2
    meta = MetadataCatalog.get("demo_panoptic_val_separated")
    # panopticapi's pq_compute leaves a Pool worker behind: run the reference in its own process
    code = ("import json, sys, contextlib, io; from panopticapi.evaluation import pq_compute\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    r = pq_compute(*sys.argv[1:5])\n"
            "print(json.dumps({g: r[g] for g in ('All', 'Things', 'Stuff')}))")
    proc = subprocess.run([sys.executable, "-c", code, meta.panoptic_json, str(pred_json), meta.panoptic_root,
                           str(pred_json.with_suffix(""))], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    reference = json.loads(proc.stdout)
    for group in ("All", "Things", "Stuff"):
        assert result["metrics"][group]["pq"] == pytest.approx(reference[group]["pq"], abs=1e-12)
