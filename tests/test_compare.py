"""``d2seg compare``: each row's metric equals an independent computation on the predictions
it saved (brute-force confusion matrix for mIoU, pycocotools for mask AP)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from d2seg.cli.main import main

REPO = Path(__file__).resolve().parents[1]


def _write_spec(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _brute_force_miou(pairs, num_classes: int, ignore: int) -> float:
    ious = []
    for c in range(num_classes):
        inter = union = 0
        for gt, pred in pairs:
            valid = gt != ignore
            inter += int(np.sum((gt == c) & (pred == c) & valid))
            union += int(np.sum(((gt == c) | (pred == c)) & valid))
        if union:
            ious.append(inter / union)
    return 100 * float(np.mean(ious))


def test_semantic_comparison_matches_brute_force(tmp_path, capsys):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    spec = _write_spec(tmp_path / "spec.yaml", """
dataset: demo_semseg_val
images: 3
montage_images: 2
methods:
  - name: SLIC from 5% of the labels
    superpixels: slic
    sparse: 0.05
  - name: Felzenszwalb refining SLIC
    superpixels: felzenszwalb
    refine: SLIC from 5% of the labels
""")
    out = tmp_path / "out"
    assert main(["compare", str(spec), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "compare.json").read_text())
    assert summary["images"] == 3 and [r["method"] for r in summary["rows"]] == [
        "SLIC from 5% of the labels", "Felzenszwalb refining SLIC"]

    records = sorted(DatasetCatalog.get("demo_semseg_val"), key=lambda r: r["file_name"])[:3]
    meta = MetadataCatalog.get("demo_semseg_val")
    for row in summary["rows"]:
        pairs = []
        for record in records:
            gt = np.asarray(Image.open(record["sem_seg_file_name"]))
            pred = np.asarray(Image.open(Path(row["predictions"]) / Path(record["sem_seg_file_name"]).name))
            assert pred.shape == gt.shape
            pairs.append((gt, pred))
        expected = _brute_force_miou(pairs, len(meta.stuff_classes), meta.ignore_label)
        assert row["mIoU"] == pytest.approx(expected, abs=1e-9)
        assert f"{row['mIoU']:.1f}" in printed
    # sparse labels voted over superpixels recover most of the image: far above chance
    assert summary["rows"][0]["mIoU"] > 100 / len(meta.stuff_classes)
    montage = np.asarray(Image.open(out / "montage.png"))
    first = np.asarray(Image.open(records[0]["file_name"]))
    assert montage.shape[0] >= 3 * first.shape[0]  # ground truth + 2 methods, one row each


def test_instance_comparison_matches_pycocotools(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from detectron2.data import MetadataCatalog

    spec = _write_spec(tmp_path / "spec.yaml", f"""
dataset: demo_instances_val
images: 4
methods:
  - name: untrained Mask R-CNN
    model: {REPO / 'configs/instance/mask_rcnn_R18_GN_FPN_cpu_quick.yaml'}
    weights: ""
    overrides: [MODEL.ROI_HEADS.SCORE_THRESH_TEST, 0.0]
  - name: GrabCut from ground-truth boxes
    grabcut: {{iters: 3}}
    boxes: ground_truth
""")
    out = tmp_path / "out"
    assert main(["compare", str(spec), "--out", str(out)]) == 0
    summary = json.loads((out / "compare.json").read_text())
    gt = COCO(MetadataCatalog.get("demo_instances_val").json_file)
    ids = sorted(gt.getImgIds())[:4]
    for row in summary["rows"]:
        results = json.loads(Path(row["predictions"]).read_text())
        assert {r["image_id"] for r in results} <= set(ids)
        if not results:
            assert row["segm_AP"] == 0
            continue
        for r in results:
            r.pop("bbox", None)  # masks are scored without boxes, as detectron2 does
        ev = COCOeval(gt, gt.loadRes(results), "segm")
        ev.params.imgIds = ids
        ev.evaluate(), ev.accumulate(), ev.summarize()
        assert row["segm_AP"] == pytest.approx(100 * ev.stats[0], abs=1e-9)
    grabcut = summary["rows"][1]
    assert grabcut["segm_AP"] > 50  # the shapes are easy to cut from their true boxes


@pytest.mark.parametrize("text, message", [
    ("dataset: demo_semseg_vall\nmethods: [{name: a, superpixels: slic, sparse: 0.1}]",
     "dataset 'demo_semseg_vall' is not registered; did you mean demo_semseg_val"),
    ("dataset: demo_semseg_val\nmethods: [{name: a, superpixels: slic, refine: b}, "
     "{name: b, superpixels: slic, sparse: 0.1}]", "not a method listed before it"),
    ("dataset: demo_semseg_val\nmethods: [{name: a, grabcut: {}}]",
     "'grabcut' does not apply to a semantic dataset"),
    ("dataset: demo_semseg_val\nmethods: [{name: a, slic: 1}]", "give exactly one of"),
    ("dataset: demo_semseg_val\nmethods: []", "needs 'dataset' and a non-empty 'methods'"),
])
def test_bad_comparisons_end_in_one_line(tmp_path, capsys, text, message):
    spec = _write_spec(tmp_path / "bad.yaml", text)
    assert main(["compare", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err


def test_class_agnostic_comparison_matches_pycocotools(tmp_path):
    """Watershed finds objects, not classes: with class_agnostic every mask is scored as one
    class, which pycocotools reproduces on a copy of the ground truth with merged categories."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from detectron2.data import MetadataCatalog

    spec = _write_spec(tmp_path / "spec.yaml", """
dataset: demo_instances_val
images: 3
class_agnostic: true
methods:
  - name: watershed
    watershed: {min_area: 20}
  - name: GrabCut
    grabcut: {iters: 2}
    boxes: ground_truth
""")
    out = tmp_path / "out"
    assert main(["compare", str(spec), "--out", str(out)]) == 0
    summary = json.loads((out / "compare.json").read_text())
    assert summary["class_agnostic"] is True
    data = json.loads(Path(MetadataCatalog.get("demo_instances_val").json_file).read_text())
    data["categories"] = [{"id": 1, "name": "object"}]
    for a in data["annotations"]:
        a["category_id"] = 1
    (tmp_path / "merged.json").write_text(json.dumps(data))
    gt = COCO(str(tmp_path / "merged.json"))
    ids = sorted(gt.getImgIds())[:3]
    for row in summary["rows"]:
        results = [dict(r, category_id=1) for r in json.loads(Path(row["predictions"]).read_text())]
        for r in results:
            r.pop("bbox", None)
        ev = COCOeval(gt, gt.loadRes(results), "segm")
        ev.params.imgIds = ids
        ev.evaluate(), ev.accumulate(), ev.summarize()
        assert row["segm_AP"] == pytest.approx(100 * ev.stats[0], abs=1e-9), row["method"]
