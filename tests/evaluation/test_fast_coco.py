"""d2seg.evaluation.fast_coco against pycocotools (independent reference): the 12 stats, per-class
AP and the precision / recall / scores arrays exactly equal, on COCO val2014 (official fake
results), on generated polygon data and on hand-made corner cases; faster-coco-eval (a dependency)
checked against pycocotools as well; bad inputs of ``d2seg eval`` as one line; COCOEvaluator's fast
path (training and --eval-only)."""

from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from d2seg.cli.main import main
from d2seg.evaluation import coco as coco_eval
from d2seg.evaluation import fast_coco

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from bench_coco_eval import for_iou_type, make_data  # noqa: E402


def _coco(dataset: dict) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(dataset)
        coco.createIndex()
    return coco


def _reference(coco_gt, dets, iou_type, cat_ids=None, img_ids=None):
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), iou_type)  # loadRes mutates
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        if img_ids is not None:
            ev.params.imgIds = img_ids
        ev.evaluate(); ev.accumulate(); ev.summarize()
    return ev


def _assert_identical(ours, ref):
    assert list(ours.stats) == list(ref.stats)
    for key in ("precision", "recall", "scores"):
        assert ours.eval[key].shape == ref.eval[key].shape
        np.testing.assert_array_equal(ours.eval[key], ref.eval[key], err_msg=key)


# ------------------------------------------------------------------ equal to pycocotools

@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_val2014_arrays_equal_pycocotools(shared_data, iou_type):
    root = shared_data / "coco_val2014_100"
    gt_path = root / "annotations" / "instances_val2014_100.json"
    dets = for_iou_type(json.loads((root / "results" / f"instances_val2014_fake{iou_type}100_results.json")
                                .read_text()), iou_type)
    coco_gt = _coco(json.loads(gt_path.read_text()))
    ref = _reference(coco_gt, dets, iou_type)
    ours = fast_coco.evaluate(coco_gt, dets, iou_type)
    _assert_identical(ours, ref)
    expected = json.loads((root / "reference_stats_pycocotools.json").read_text())[iou_type]
    assert list(ours.stats) == expected

    # per-class AP (keyed by id) = pycocotools restricted to that category
    report = coco_eval.evaluate_coco(coco_gt, dets, [iou_type])[iou_type]
    for cat_id in sorted(coco_gt.getCatIds())[:8]:
        alone = _reference(coco_gt, dets, iou_type, cat_ids=[cat_id])
        assert report["per_class_by_id"][cat_id] == pytest.approx(alone.stats[0], abs=1e-12)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_generated_polygons_equal_pycocotools(iou_type):
    gt, dets = make_data(60, dets_per_image=30, seed=3)
    dets = for_iou_type(dets, iou_type)
    _assert_identical(fast_coco.evaluate(_coco(gt), dets, iou_type), _reference(_coco(gt), dets, iou_type))
    # a subset of images, unsorted and repeated, as COCOeval takes params.imgIds
    ids = [40, 3, 17, 3, 59]
    _assert_identical(fast_coco.evaluate(_coco(gt), dets, iou_type, image_ids=ids),
                      _reference(_coco(gt), dets, iou_type, img_ids=ids))


def _rle(mask):
    r = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode()
    return r


def _corner_cases():
    """Crowds (IoU over the detection's area, reusable), tied scores and IoUs, a ground truth
    with id 0, >100 detections in one (image, category), boxes that touch, areas on the range
    edges, a category without ground truth, an image without detections, NaN scores."""
    rng = np.random.default_rng(7)
    h, w = 60, 80
    images = [{"id": i, "width": w, "height": h, "file_name": f"{i}.png"} for i in (1, 2, 3, 4)]
    cats = [{"id": c, "name": n} for c, n in ((1, "a"), (2, "b"), (3, "a"), (7, "none"))]
    anns, dets = [], []

    def box_mask(x, y, bw, bh):
        m = np.zeros((h, w), bool)
        m[y:y + bh, x:x + bw] = True
        return m

    def add_gt(ann_id, img, cat, x, y, bw, bh, crowd=0, area=None):
        m = box_mask(x, y, bw, bh)
        anns.append({"id": ann_id, "image_id": img, "category_id": cat, "bbox": [x, y, bw, bh],
                     "area": float(m.sum()) if area is None else area, "iscrowd": crowd,
                     "segmentation": _rle(m) if crowd else
                     [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]})

    add_gt(0, 1, 1, 5, 5, 20, 20)             # id 0: a match reads as unmatched in pycocotools
    add_gt(11, 1, 1, 30, 5, 20, 20)
    add_gt(12, 1, 1, 0, 30, 60, 25, crowd=1)  # crowd region
    add_gt(13, 1, 2, 5, 5, 20, 20)
    add_gt(14, 2, 1, 10, 10, 32, 32, area=1024.0)  # on the small/medium edge
    add_gt(15, 2, 3, 40, 10, 10, 10)
    add_gt(16, 2, 3, 40, 10, 10, 10)           # duplicate: tied IoUs
    add_gt(17, 4, 1, 0, 0, 10, 10)             # no detections on image 4

    def add_det(img, cat, x, y, bw, bh, score):
        m = box_mask(x, y, bw, bh)
        dets.append({"image_id": img, "category_id": cat, "bbox": [float(x), float(y), float(bw), float(bh)],
                     "score": score, "segmentation": _rle(m)})

    add_det(1, 1, 5, 5, 20, 20, 0.9)
    add_det(1, 1, 6, 5, 20, 20, 0.9)           # tied score
    add_det(1, 1, 30, 5, 20, 20, 0.5)
    add_det(1, 1, 50, 5, 20, 20, 0.4)          # touches gt 11's box: IoU 0
    for k in range(8):                         # several on the crowd
        add_det(1, 1, 2 + 5 * k, 32, 8, 8, 0.3 - 0.01 * k)
    add_det(1, 2, 5, 5, 20, 20, 0.8)
    add_det(1, 7, 5, 5, 20, 20, 0.8)           # category without ground truth
    add_det(2, 1, 10, 10, 32, 32, 0.7)
    add_det(2, 3, 40, 10, 10, 10, 0.6)
    add_det(2, 3, 40, 10, 10, 10, 0.6)
    add_det(2, 3, 41, 11, 10, 10, float("nan"))
    for k in range(130):                       # more than maxDets in one (image, category)
        x, y = int(rng.integers(0, 60)), int(rng.integers(0, 40))
        add_det(3, 1, x, y, int(rng.integers(2, 20)), int(rng.integers(2, 20)), float(rng.random()))
    add_gt(18, 3, 1, 10, 10, 15, 15)
    add_gt(19, 3, 1, 30, 20, 15, 15)
    return {"images": images, "annotations": anns, "categories": cats}, dets


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_corner_cases_equal_pycocotools(iou_type):
    gt, dets = _corner_cases()
    dets = for_iou_type(dets, iou_type)
    _assert_identical(fast_coco.evaluate(_coco(gt), dets, iou_type), _reference(_coco(gt), dets, iou_type))


def test_box_ious_equal_pycocotools_bbiou():
    rng = np.random.default_rng(0)
    d = np.round(rng.uniform(0, 50, (300, 4)), 1)
    g = np.round(rng.uniform(0, 50, (40, 4)), 1)
    g[:5] = d[:5]  # identical boxes
    g[5, :2] = d[5, :2] + d[5, 2:]  # touching corner
    crowd = (rng.random(40) < 0.2).astype(int)
    ref = np.asarray(mask_util.iou(d.tolist(), g.tolist(), crowd.tolist()))
    di, gi = np.meshgrid(np.arange(300), np.arange(40), indexing="ij")
    ours = fast_coco._box_ious(d[di.ravel()], g[gi.ravel()], crowd[gi.ravel()]).reshape(300, 40)
    np.testing.assert_array_equal(ours, ref)


def test_faster_coco_eval_dependency_matches_pycocotools_stats(shared_data):
    """faster-coco-eval (Apache-2.0, like d2seg) gives pycocotools' 12 stats to 1e-15, but not bit
    for bit: its accumulation leaves out pycocotools' eps in the precision denominator, so a
    precision of 1 - 2.2e-16 comes out 1.0 and AP50 can move by one ulp. That is why d2seg
    accumulates with pycocotools' own float operations instead."""
    from faster_coco_eval import COCO as FasterCOCO
    from faster_coco_eval import COCOeval_faster

    dist = importlib.metadata.distribution("faster-coco-eval")
    licence = next(f for f in dist.files if f.name.upper().startswith("LICENSE"))
    text = licence.read_text()
    assert "Apache License" in text and "Version 2.0" in text
    assert text.split() == (shared_data / "coco_val2014_100" / "faster_coco_eval_LICENSE").read_text().split()

    root = shared_data / "coco_val2014_100"
    reference = json.loads((root / "reference_stats_pycocotools.json").read_text())
    for iou_type in ("bbox", "segm"):
        dets = for_iou_type(json.loads((root / "results" / f"instances_val2014_fake{iou_type}100_results.json")
                                    .read_text()), iou_type)
        gt = FasterCOCO(str(root / "annotations" / "instances_val2014_100.json"), print_function=lambda *a: None)
        ev = COCOeval_faster(gt, gt.loadRes(dets), iou_type, print_function=lambda *a: None)
        ev.evaluate(); ev.accumulate(); ev.summarize()
        assert [float(s) for s in ev.stats[:12]] == pytest.approx(reference[iou_type], abs=1e-15)


# ------------------------------------------------------------------ bad inputs, CLI

def _small_gt(tmp_path, cats=({"id": 1, "name": "cat"}, {"id": 2, "name": "dog"})):
    gt = {"images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.png"},
                     {"id": 2, "width": 100, "height": 100, "file_name": "b.png"}],
          "categories": list(cats),
          "annotations": [
              {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0},
              {"id": 2, "image_id": 2, "category_id": 2, "bbox": [50, 50, 20, 20], "area": 400, "iscrowd": 0}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return path


def _run_eval(tmp_path, capsys, results, gt=None):
    res = tmp_path / "res.json"
    res.write_text(results if isinstance(results, str) else json.dumps(results))
    gt = gt or _small_gt(tmp_path)
    code = main(["eval", "--results", str(res), "--gt", str(gt), "--iou-types", "bbox",
                 "--out", str(tmp_path / "out"), "--no-plots"])
    captured = capsys.readouterr()
    return code, captured.err.strip(), res


def test_cli_image_not_in_ground_truth_one_line(tmp_path, capsys):
    dets = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "score": 0.9}]
    dets += [{"image_id": i, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5} for i in (77, 78, 77)]
    code, err, res = _run_eval(tmp_path, capsys, dets)
    assert code == 2
    assert err.count("\n") == 0 and err.startswith("error:")
    assert str(res) in err and "image_id 77" in err and "3 detections" in err and "2 such image ids" in err
    assert "Traceback" not in err


def test_cli_results_object_names_the_file_not_its_content(tmp_path, capsys):
    code, err, res = _run_eval(tmp_path, capsys, json.dumps({"annotations": [{"secret": 123}]}))
    assert code == 2 and err.count("\n") == 0
    assert err.startswith(f"error: {res}: ") and "JSON object" in err and "secret" not in err


def test_cli_repeated_category_names_keyed_by_id(tmp_path, capsys):
    gt = _small_gt(tmp_path, cats=({"id": 1, "name": "cat"}, {"id": 2, "name": "cat"}))
    dets = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "score": 0.9},
            {"image_id": 2, "category_id": 2, "bbox": [80, 80, 5, 5], "score": 0.9}]
    code, err, _ = _run_eval(tmp_path, capsys, dets, gt=gt)
    assert code == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())["bbox"]
    assert metrics["per_class_by_id"] == pytest.approx({"1": 1.0, "2": 0.0}, abs=1e-12)
    assert metrics["per_class"] == pytest.approx({"cat (id 1)": 1.0, "cat (id 2)": 0.0}, abs=1e-12)
    md = (tmp_path / "out" / "metrics.md").read_text()
    assert "| cat (id 1) | 100.0 |" in md and "| cat (id 2) | 0.0 |" in md


def test_cli_nan_scores_and_unknown_categories_warn_once_with_count(tmp_path, capsys):
    dets = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "score": 0.9},
            {"image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 20], "score": float("nan")},
            {"image_id": 2, "category_id": 2, "bbox": [5, 5, 20, 20], "score": float("nan")},
            {"image_id": 2, "category_id": 9, "bbox": [5, 5, 20, 20], "score": 0.3},
            {"image_id": 2, "category_id": 9, "bbox": [5, 5, 20, 20], "score": 0.2}]
    res = tmp_path / "res.json"
    res.write_text(json.dumps(dets))  # NaN as JSON's NaN literal, which json.load reads
    code = main(["eval", "--results", str(res), "--gt", str(_small_gt(tmp_path)), "--iou-types", "bbox",
                 "--out", str(tmp_path / "out")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 0
    assert len(lines) == 2 and all(line.startswith(f"warning: {res}: ") for line in lines)
    assert any("2 detections have a NaN score" in line for line in lines)
    assert any("2 detections have a category_id not in the ground truth (first: 9)" in line for line in lines)
    # the numbers are still pycocotools'
    expected = _reference(COCO(str(_small_gt(tmp_path))), dets, "bbox").stats
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())["bbox"]
    assert [metrics["stats"][n] for n in coco_eval.STAT_NAMES] == list(map(float, expected))


# ------------------------------------------------------------------ COCOEvaluator

def test_coco_evaluator_uses_fast_path_and_keeps_report(shared_data, tmp_path, monkeypatch):
    """The evaluator training and --eval-only build scores with d2seg's path (never
    COCOeval_opt), gives detectron2's result dict with pycocotools' numbers and keeps the report
    that ``d2seg eval --config-file`` prints."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances
    from detectron2.evaluation import coco_evaluation

    from d2seg.evaluation.evaluator import CocoEvaluator

    root = shared_data / "coco_val2014_100"
    gt_path = root / "annotations" / "instances_val2014_100.json"
    name = "d2seg_test_fast_coco_val2014_100"
    if name not in DatasetCatalog.list():
        register_coco_instances(name, {}, str(gt_path), str(root))
    DatasetCatalog.get(name)  # fills thing_classes and the id mapping
    meta = MetadataCatalog.get(name)
    to_contiguous = meta.thing_dataset_id_to_contiguous_id

    def no_second_scoring(*a, **k):
        raise AssertionError("COCOeval_opt / pycocotools scoring used")

    monkeypatch.setattr(coco_evaluation, "_evaluate_predictions_on_coco", no_second_scoring)
    coco_gt = COCO(str(gt_path))
    for iou_type in ("bbox", "segm"):
        dets = json.loads((root / "results" / f"instances_val2014_fake{iou_type}100_results.json").read_text())
        by_image = {}
        for d in dets:
            by_image.setdefault(d["image_id"], []).append(dict(d, category_id=to_contiguous[d["category_id"]]))
        out = tmp_path / iou_type
        evaluator = CocoEvaluator(name, tasks=(iou_type,), distributed=False, output_dir=str(out))
        evaluator.reset()
        evaluator._predictions = [{"image_id": i, "instances": v} for i, v in by_image.items()]
        results = evaluator.evaluate()[iou_type]
        ref = _reference(coco_gt, for_iou_type(dets, iou_type), iou_type)
        for n, metric in enumerate(["AP", "AP50", "AP75", "APs", "APm", "APl"]):
            assert results[metric] == pytest.approx(ref.stats[n] * 100, abs=1e-9)
        kept = coco_eval.load_report(out)[iou_type]
        assert [kept["stats"][n] for n in coco_eval.STAT_NAMES] == list(ref.stats)
        np.testing.assert_array_equal(kept["_precision"], ref.eval["precision"])
        np.testing.assert_array_equal(kept["_recall"], ref.eval["recall"])
        written = json.loads((out / "coco_instances_results.json").read_text())
        assert written == dets  # dataset category ids again, as detectron2 writes them
