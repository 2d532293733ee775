"""``d2seg analyze``: outputs, per-class P/R/F1, per-image AP, worst images, CLI errors."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from d2seg.analysis import analyze
from d2seg.analysis.metrics import prf
from d2seg.cli.main import main

A = (10, 10, 20, 20)
B = (50, 20, 30, 30)
SHIFTED = (22, 10, 20, 20)
EMPTY = (70, 45, 15, 15)


def test_prf_best_threshold_and_given_threshold():
    # scores 0.9 TP, 0.8 FP, 0.7 TP, 0.6 FP; 3 objects
    r = prf([0.9, 0.8, 0.7, 0.6], [True, False, True, False], 3, score_threshold=0.85)
    assert r["best_f1"] == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))  # at 0.7: P 2/3 R 2/3
    assert r["best_threshold"] == 0.7
    assert (r["precision"], r["recall"]) == (1.0, pytest.approx(1 / 3))
    assert r["f1"] == pytest.approx(0.5)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 0, 2)
    empty = prf([], [], 0, 0.5)
    assert empty["best_f1"] is None and empty["precision"] is None


def _scene(tmp_path, scenes):
    objects = [(1, 1, A), (1, 2, B), (2, 1, A), (2, 1, B), (3, 2, B)]
    dets = [(1, 1, 0.9, A), (1, 2, 0.8, B),                        # image 1: perfect
            (2, 1, 0.9, SHIFTED), (2, 3, 0.95, EMPTY),             # image 2: loc + bkg, B missed
            (3, 2, 0.7, B), (3, 2, 0.6, B)]                        # image 3: duplicate
    gt = scenes.make_gt(objects)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for im in gt["images"]:
        cv2.imwrite(str(images / im["file_name"]),
                    rng.integers(0, 255, (im["height"], im["width"], 3), dtype=np.uint8))
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(scenes.make_results(dets)))
    return gt_path, res_path, images


def test_analyze_writes_everything(tmp_path, scenes):
    gt, res, images = _scene(tmp_path, scenes)
    out = tmp_path / "analysis"
    report = analyze(str(gt), str(res), out, images_dir=images, worst=2, score_threshold=0.5)
    for name in ("analysis.json", "analysis.md", "errors_bbox.png", "errors_segm.png",
                 "pr_f1_bbox.png", "pr_f1_segm.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "analysis.json").read_text())["worst_iou_type"] == "segm"
    segm = report["iou_types"]["segm"]
    assert segm["counts"] == {"classification": 0, "localization": 1, "both": 0, "duplicate": 1,
                              "background": 1, "missed": 1}
    per_image = {r["image_id"]: r for r in segm["per_image"]}
    assert per_image[1]["ap50"] == pytest.approx(100.0)
    assert per_image[2]["ap50"] < per_image[3]["ap50"] <= 100.0
    # the worst image first, drawn as GT | prediction (twice the width of the enlarged image)
    worst = report["worst"]
    assert [w["image_id"] for w in worst] == [2, 3]
    drawing = cv2.imread(str(out / worst[0]["png"]))
    assert drawing.shape[1] > 2 * 96 and drawing.shape[0] > 64
    rows = {r["name"]: r for r in segm["per_class"]}
    assert rows["class1"]["num_objects"] == 3 and rows["class1"]["tp"] == 1
    assert rows["class1"]["recall"] == pytest.approx(1 / 3)
    assert rows["class3"]["num_objects"] == 0 and rows["class3"]["precision"] == 0.0
    assert "| class1 |" in (out / "analysis.md").read_text()


def test_cli_analyze_with_gt_and_images(tmp_path, scenes, capsys):
    gt, res, images = _scene(tmp_path, scenes)
    out = tmp_path / "out"
    rc = main(["analyze", "--results", str(res), "--gt", str(gt), "--images", str(images),
               "--out", str(out), "--worst", "1", "--iou-types", "bbox"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "bbox: AP50" in text and "1 worst images" in text
    assert len(list((out / "worst").glob("*.png"))) == 1
    assert not (out / "errors_segm.png").exists()


def test_cli_analyze_errors(tmp_path, scenes, capsys):
    gt, res, _ = _scene(tmp_path, scenes)
    assert main(["analyze", "--results", str(res), "--out", str(tmp_path / "o")]) == 2
    assert "no ground truth" in capsys.readouterr().err
    boxes_only = tmp_path / "boxes.json"
    boxes_only.write_text(json.dumps([{k: v for k, v in d.items() if k != "segmentation"}
                                      for d in json.loads(res.read_text())]))
    assert main(["analyze", "--results", str(boxes_only), "--gt", str(gt), "--out",
                 str(tmp_path / "o"), "--iou-types", "segm"]) == 2
    assert "--iou-types bbox" in capsys.readouterr().err
    # without --iou-types: what the results have (boxes only here)
    assert main(["analyze", "--results", str(boxes_only), "--gt", str(gt), "--out",
                 str(tmp_path / "o2")]) == 0
    assert "segm" not in json.loads((tmp_path / "o2" / "analysis.json").read_text())["iou_types"]


def test_cli_analyze_by_registered_dataset_name_equals_by_files(tmp_path, scenes, monkeypatch):
    """--dataset NAME finds the manifest's JSON and images (torch-free catalog) and gives the
    same analysis as --gt/--images on those files."""
    gt, res, images = _scene(tmp_path, scenes)
    folder = tmp_path / "manifests"
    folder.mkdir()
    (folder / "mine.yaml").write_text(
        f"name: mine\nkind: coco_instances\nsplits:\n  val: {{images: {images}, annotations: {gt}}}\n")
    monkeypatch.setenv("D2SEG_DATASETS", str(folder))
    assert main(["analyze", "--results", str(res), "--dataset", "mine_val",
                 "--out", str(tmp_path / "by_name"), "--no-plots"]) == 0
    assert main(["analyze", "--results", str(res), "--gt", str(gt), "--images", str(images),
                 "--out", str(tmp_path / "by_files"), "--no-plots"]) == 0
    by_name = json.loads((tmp_path / "by_name" / "analysis.json").read_text())
    by_files = json.loads((tmp_path / "by_files" / "analysis.json").read_text())
    assert by_name["iou_types"] == by_files["iou_types"]
    assert by_name["iou_types"]["segm"]["counts"]["localization"] == 1


def test_eval_analyze_writes_the_analysis_and_a_report(tmp_path, scenes, monkeypatch):
    """``d2seg eval --results R --dataset D --analyze`` writes OUT/analysis equal to ``d2seg
    analyze`` on the same files (worst images drawn from the dataset's images), and
    OUT/report.html with pycocotools' segm AP and the error breakdown."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, res, images = _scene(tmp_path, scenes)
    folder = tmp_path / "manifests"
    folder.mkdir()
    (folder / "mine.yaml").write_text(
        f"name: mine\nkind: coco_instances\nsplits:\n  val: {{images: {images}, annotations: {gt}}}\n")
    monkeypatch.setenv("D2SEG_DATASETS", str(folder))
    out = tmp_path / "eval"
    assert main(["eval", "--results", str(res), "--dataset", "mine_val", "--out", str(out),
                 "--analyze"]) == 0
    assert main(["analyze", "--results", str(res), "--gt", str(gt), "--images", str(images),
                 "--out", str(tmp_path / "by_analyze")]) == 0
    ours = json.loads((out / "analysis" / "analysis.json").read_text())
    reference = json.loads((tmp_path / "by_analyze" / "analysis.json").read_text())
    assert ours["iou_types"] == reference["iou_types"]
    assert [w["image_id"] for w in ours["worst"]] == [w["image_id"] for w in reference["worst"]]
    assert ours["worst"] and all((out / "analysis" / w["png"]).is_file() for w in ours["worst"])

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt))
        ev = COCOeval(coco_gt, coco_gt.loadRes(str(res)), "segm")
        ev.evaluate(); ev.accumulate(); ev.summarize()
    page = (out / "report.html").read_text()
    assert f">{100 * ev.stats[0]:.1f}<" in page
    assert 'id="errors"' in page and 'id="metrics"' in page
