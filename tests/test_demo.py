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

    # report.html of the panoptic run: per-class PQ and the worst images by PQ, drawn; each
    # image's PQ is panopticapi's on that image alone (its single-image path, in its own process)
    report = out / "report.html"
    assert result["written"]["html"] == str(report) and report.is_file()
    page = report.read_text()
    assert 'id="per-class-panoptic"' in page and 'id="worst-panoptic"' in page
    pq = json.loads((out / "report" / "pq.json").read_text())
    code = ("import json, sys, contextlib, io\n"
            "from panopticapi.evaluation import pq_compute_single_core\n"
            "gt, pred = (json.load(open(p)) for p in sys.argv[1:3])\n"
            "cats = {c['id']: c for c in gt['categories']}\n"
            "by_id = {a['image_id']: a for a in pred['annotations']}\n"
            "out = {}\n"
            "for a in gt['annotations']:\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        s = pq_compute_single_core(0, [(a, by_id[a['image_id']])], *sys.argv[3:5], cats)\n"
            "    out[a['image_id']] = s.pq_average(cats, None)[0] if any(\n"
            "        v.tp + v.fp + v.fn for v in s.pq_per_cat.values()) else None\n"
            "print(json.dumps(out))")
    proc = subprocess.run([sys.executable, "-c", code, meta.panoptic_json, str(pred_json),
                           meta.panoptic_root, str(pred_json.with_suffix(""))],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    per_image = {int(k): v for k, v in json.loads(proc.stdout).items()}
    assert len(pq["per_image"]) == len(per_image)
    for row in pq["per_image"]:
        if per_image[row["image_id"]] is not None:
            assert {k: row[k] for k in ("pq", "sq", "rq", "n")} == per_image[row["image_id"]]
    scored = sorted((v["pq"], str(k)) for k, v in per_image.items() if v is not None)
    worst = pq["worst_images"]
    assert [(w["pq"], str(w["image_id"])) for w in worst] == scored[:len(worst)]
    assert worst and all((out / "report" / w["png"]).is_file() for w in worst)


def test_panoptic_training_writes_a_pq_report(tmp_path):
    """``d2seg train`` of the demo's Panoptic FPN (3 iterations; its own run report, not the
    demo's): report/pq.json holds the PQ panopticapi computes from the predictions the last
    evaluation kept, and report.html the per-class PQ table and the worst images by PQ, drawn."""
    from d2seg.data.demo import ensure_demo
    from d2seg.runners.demo import PANOPTIC_CONFIG, _schedule
    from d2seg.engine import run as engine
    from d2seg.evaluation.panoptic_evaluator import PREDICTIONS_DIR, PREDICTIONS_JSON

    from detectron2.data import MetadataCatalog

    ensure_demo()
    cfg = engine.setup(PANOPTIC_CONFIG, _schedule(3), output_dir=tmp_path, seed=42)
    engine.train(cfg, resume=False)
    dataset = cfg.DATASETS.TEST[0]
    meta = MetadataCatalog.get(dataset)
    folder = tmp_path / "eval" / dataset
    code = ("import json, sys, contextlib, io; from panopticapi.evaluation import pq_compute\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    r = pq_compute(*sys.argv[1:5])\n"
            "print(json.dumps(r['All']))")
    proc = subprocess.run([sys.executable, "-c", code, meta.panoptic_json,
                           str(folder / PREDICTIONS_JSON), meta.panoptic_root,
                           str(folder / PREDICTIONS_DIR)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    pq = json.loads((tmp_path / "report" / "pq.json").read_text())
    assert pq["All"] == json.loads(proc.stdout)
    worst = pq["worst_images"]
    assert worst and all((tmp_path / "report" / w["png"]).is_file() for w in worst)
    page = (tmp_path / "report.html").read_text()
    assert 'id="per-class-panoptic"' in page and 'id="worst-panoptic"' in page
