"""d2seg.evaluation.coco: pycocotools-exact numbers, per-class AP, confusion matrix, CLI output."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from d2seg.cli.main import main
from d2seg.evaluation import coco as coco_eval


def _pycocotools(gt, dets, iou_type, cat_ids=None):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt))
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), iou_type)  # loadRes mutates
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate(); ev.accumulate(); ev.summarize()
    return ev.stats


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_twelve_numbers_equal_pycocotools_and_reference(shared_data, iou_type):
    root = shared_data / "coco_val2014_100"
    gt = root / "annotations" / "instances_val2014_100.json"
    res = root / "results" / f"instances_val2014_fake{iou_type}100_results.json"
    reference = json.loads((root / "reference_stats_pycocotools.json").read_text())[iou_type]
    report = coco_eval.evaluate_coco(gt, str(res), [iou_type])[iou_type]
    ours = [report["stats"][n] for n in coco_eval.STAT_NAMES]
    assert ours == reference
    dets = json.loads(res.read_text())
    if iou_type == "segm":
        for d in dets:
            d.pop("bbox", None)
    assert ours == list(_pycocotools(gt, dets, iou_type))

    # per-class AP equals pycocotools restricted to that one category
    coco_gt = COCO(str(gt))
    for cat_id in coco_gt.getCatIds()[:6]:
        name = coco_gt.cats[cat_id]["name"]
        expected = _pycocotools(gt, dets, iou_type, cat_ids=[cat_id])[0]
        assert report["per_class"][name] == pytest.approx(expected, abs=1e-12)


def _tiny_gt(tmp_path):
    gt = {
        "images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.png"}],
        "categories": [{"id": 5, "name": "cat"}, {"id": 9, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 5, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 9, "bbox": [50, 50, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 9, "bbox": [0, 60, 10, 10], "area": 100, "iscrowd": 0},
        ],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return path


def test_confusion_matrix_hand_checked(tmp_path):
    gt = _tiny_gt(tmp_path)
    results = [
        {"image_id": 1, "category_id": 5, "bbox": [0, 0, 20, 20], "score": 0.9},    # cat -> cat
        {"image_id": 1, "category_id": 5, "bbox": [50, 50, 20, 19], "score": 0.8},  # dog box called cat
        {"image_id": 1, "category_id": 9, "bbox": [80, 0, 10, 10], "score": 0.7},   # dog on background
        {"image_id": 1, "category_id": 9, "bbox": [0, 60, 10, 10], "score": 0.3},   # below score threshold
    ]
    matrix, names = coco_eval.confusion_matrix(str(gt), results, "bbox")
    assert names == ["cat", "dog", "background"]
    expected = np.array([[1, 0, 0],   # true cat: predicted cat
                         [1, 0, 1],   # true dog: once as cat, once missed (score 0.3 dropped)
                         [0, 1, 0]])  # background predicted as dog
    np.testing.assert_array_equal(matrix, expected)


def test_cli_writes_report_and_plots(tmp_path, capsys):
    gt = _tiny_gt(tmp_path)
    res = tmp_path / "res.json"
    res.write_text(json.dumps([{"image_id": 1, "category_id": 5, "bbox": [0, 0, 20, 20], "score": 0.9}]))
    out = tmp_path / "out"
    assert main(["eval", "--results", str(res), "--gt", str(gt), "--iou-types", "bbox", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    expected = _pycocotools(gt, json.loads(res.read_text()), "bbox")
    assert [metrics["bbox"]["stats"][n] for n in coco_eval.STAT_NAMES] == list(expected)
    assert (out / "pr_curves_bbox.png").stat().st_size > 0
    assert (out / "confusion_bbox.png").stat().st_size > 0
    assert "| bbox |" in (out / "metrics.md").read_text()


@pytest.mark.parametrize("content, reason", [
    ("{not json", "not valid JSON"),
    ('{"a": 1}', "must be a JSON list"),
    ('[{"image_id": 1, "bbox": [0, 0, 1, 1]}]', "detection 0: no 'category_id', 'score'"),
])
def test_cli_bad_results_one_line(tmp_path, capsys, content, reason):
    gt = _tiny_gt(tmp_path)
    res = tmp_path / "res.json"
    res.write_text(content)
    assert main(["eval", "--results", str(res), "--gt", str(gt), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and reason in err and err.startswith("error:")


def test_evaluate_leaves_callers_results_untouched(tmp_path):
    """evaluate_coco copies each detection shallowly (memory on large sets): loadRes and COCOeval
    add keys to the copies only, the caller's list and its nested boxes and RLEs stay as given."""
    from pycocotools import mask as mask_util

    def rle(y0, y1, x0, x1):
        m = np.zeros((40, 50), np.uint8)
        m[y0:y1, x0:x1] = 1
        r = mask_util.encode(np.asfortranarray(m))
        r["counts"] = r["counts"].decode()
        return r

    gt = {"images": [{"id": 1, "width": 50, "height": 40, "file_name": "a.png"}],
          "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 10], "area": 200,
                           "iscrowd": 0, "segmentation": rle(5, 15, 5, 25)}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    results = [{"image_id": 1, "category_id": 1, "bbox": [6, 5, 20, 10], "score": 0.9,
                "segmentation": rle(5, 15, 6, 26)},
               {"image_id": 1, "category_id": 1, "bbox": [30, 20, 10, 10], "score": 0.4,
                "segmentation": rle(20, 30, 30, 40)}]
    before = copy.deepcopy(results)
    first = coco_eval.evaluate_coco(str(path), results)
    assert results == before
    second = coco_eval.evaluate_coco(str(path), results)
    for iou_type in ("bbox", "segm"):
        assert first[iou_type]["stats"] == second[iou_type]["stats"]
        expected = copy.deepcopy(before)
        if iou_type == "segm":
            for d in expected:
                d.pop("bbox")
        assert [first[iou_type]["stats"][n] for n in coco_eval.STAT_NAMES] == list(_pycocotools(path, expected, iou_type))
