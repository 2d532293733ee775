"""``d2seg label suggest`` end to end on the demo val images with a briefly trained Mask R-CNN
(MobileNetV2-FPN from ImageNet, 40 iterations on demo_instances_train).

Checked: with polygon tolerance 0 every suggested annotation's polygons rasterise (pycocotools)
to exactly its detection's mask with holes filled (COCO polygons have no holes), and ``d2seg
eval`` gives the suggested dataset, read as results with its kept scores, the same 12 segm
numbers as the model's own ``d2seg predict`` results at the same score threshold with holes
filled; detections with an empty mask (no polygon) are left out of both and counted. The output
passes ``d2seg data check`` with no errors. With the default tolerance (1 px) the polygons have
fewer points and segm AP stays within 1.5 points of the exact polygons'. The labelme output
reads back through ``d2seg data convert labelme`` to the same polygons, boxes, areas and class
names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from scipy import ndimage as ndi

from d2seg.cli.main import main

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "instance" / "mask_rcnn_MNV2_FPN_cpu_quick.yaml"
THRESH = 0.3

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """config.yaml and model_final.pth of a 40-iteration run on demo_instances_train."""
    import torch

    from d2seg.engine.run import _remove_run_handlers, setup, train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("trained")
    try:
        cfg = setup(str(CONFIG), ["MODEL.DEVICE", "cpu", "DATASETS.TEST", "()",
                                  "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2",
                                  "SOLVER.MAX_ITER", "40", "SOLVER.WARMUP_ITERS", "10",
                                  "SOLVER.BASE_LR", "0.005", "SOLVER.STEPS", "()",
                                  "SOLVER.CHECKPOINT_PERIOD", "1000", "TEST.EVAL_PERIOD", "0",
                                  "D2SEG.PROGRESS_BAR", "False", "D2SEG.RUN_REPORT", "False",
                                  "D2SEG.BEST_METRIC", ""],
                    output_dir=str(out))
        train(cfg)
    finally:
        torch.set_num_threads(threads)
        _remove_run_handlers()
    return out / "config.yaml", out / "model_final.pth"


@pytest.fixture(scope="module")
def demo_val():
    from d2seg.data.demo import ensure_demo

    return ensure_demo() / "val"


def _segm_ap(gt: Path, results: list, out: Path) -> dict:
    """The 12 segm stats ``d2seg eval`` reports for ``results`` against ``gt``."""
    out.mkdir()
    res = out / "results.json"
    res.write_text(json.dumps(results))
    assert main(["eval", "--gt", str(gt), "--results", str(res), "--iou-types", "segm",
                 "--out", str(out / "eval"), "--no-plots"]) == 0
    return json.loads((out / "eval" / "metrics.json").read_text())["segm"]["stats"]


def _as_results(coco: dict, ids_by_name: dict) -> list[dict]:
    """The suggested annotations as COCO results: polygons -> RLE, the kept score."""
    names = {im["id"]: im["file_name"] for im in coco["images"]}
    sizes = {im["id"]: (im["height"], im["width"]) for im in coco["images"]}
    out = []
    for a in coco["annotations"]:
        rle = mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], *sizes[a["image_id"]]))
        rle["counts"] = rle["counts"].decode("ascii")
        out.append({"image_id": ids_by_name[names[a["image_id"]]], "category_id": a["category_id"],
                    "bbox": a["bbox"], "score": a["score"], "segmentation": rle})
    return out


def test_suggest_checks_scores_and_round_trips(trained, demo_val, tmp_path, capsys):
    cfg, weights = trained
    gt = demo_val / "instances.json"
    ids_by_name = {im["file_name"]: im["id"] for im in json.loads(gt.read_text())["images"]}

    # the model's own results, as d2seg predict writes them, kept at >= THRESH
    assert main(["predict", str(demo_val / "images"), "--config-file", str(cfg), "--weights",
                 str(weights), "--dataset", "demo_instances_train", "--out",
                 str(tmp_path / "pred"), "--no-render"]) == 0
    images = {im["id"]: im["file_name"] for im in
              json.loads((tmp_path / "pred" / "images.json").read_text())}
    own = [dict(r, image_id=ids_by_name[images[r["image_id"]]])
           for r in json.loads((tmp_path / "pred" / "results.json").read_text())
           if r["score"] >= THRESH]
    # a detection whose mask is empty cannot be an annotation (suggest counts and drops it);
    # in results it is a sure false positive. The comparison is with the others.
    empty = [r for r in own if mask_utils.area(r["segmentation"]) == 0]
    own = [r for r in own if mask_utils.area(r["segmentation"]) > 0]
    assert len(own) > 20

    # tolerance 0: the polygons are the masks (holes filled), so segm AP is the same number
    exact = tmp_path / "exact"
    assert main(["label", "suggest", str(demo_val / "images"), "--config-file", str(cfg),
                 "--weights", str(weights), "--out", str(exact), "--tolerance", "0",
                 "--score-thresh", str(THRESH), "--quiet"]) == 0
    assert f"{len(empty)} with an empty mask" in capsys.readouterr().out if empty else True
    coco = json.loads((exact / "instances.json").read_text())
    assert len(coco["images"]) == len(ids_by_name) and len(coco["annotations"]) == len(own)
    assert sorted(a["score"] for a in coco["annotations"]) == \
        pytest.approx(sorted(r["score"] for r in own), abs=1e-6)
    # each polygon set rasterises to its mask with holes filled (a COCO polygon has no holes)
    filled = []
    for a, r in zip(sorted(coco["annotations"], key=lambda a: (ids_by_name[
            coco["images"][a["image_id"] - 1]["file_name"]], -a["score"])),
            sorted(own, key=lambda r: (r["image_id"], -r["score"]))):
        mask = mask_utils.decode(r["segmentation"]).astype(bool)
        h, w = mask.shape
        drawn = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], h, w)))
        assert np.array_equal(drawn.astype(bool), ndi.binary_fill_holes(mask))
        rle = mask_utils.encode(np.asfortranarray(ndi.binary_fill_holes(mask).astype(np.uint8)))
        filled.append(dict(r, segmentation=dict(rle, counts=rle["counts"].decode("ascii"))))
    # so d2seg eval gives the model's own results (holes filled) exactly the same 12 numbers
    m_own = _segm_ap(gt, own, tmp_path / "own")
    m_filled = _segm_ap(gt, filled, tmp_path / "filled")
    m_exact = _segm_ap(gt, _as_results(coco, ids_by_name), tmp_path / "exact_eval")
    assert m_own["AP"] > 0.01  # the model found something: the comparison is not 0 == 0
    assert m_exact == pytest.approx(m_filled, abs=1e-12)
    holes = sum(1 for r, f in zip(own, filled) if r["segmentation"] != f["segmentation"])
    print(f"segm AP: own results {m_own['AP']:.4f}, holes filled {m_filled['AP']:.4f} "
          f"({holes} masks with holes), suggested polygons {m_exact['AP']:.4f}")

    # the output is a dataset d2seg data check accepts (images without suggestions only warn)
    capsys.readouterr()
    assert main(["data", "check", str(exact / "instances.json"), "--images",
                 str(demo_val / "images")]) == 0
    assert ": ok: 0 errors" in capsys.readouterr().out

    # default tolerance (1 px) and labelme files: simplified polygons, AP within 1.5 points of
    # the exact polygons'
    simple = tmp_path / "simple"
    assert main(["label", "suggest", str(demo_val / "images"), "--config-file", str(cfg),
                 "--weights", str(weights), "--out", str(simple), "--format", "labelme",
                 "--score-thresh", str(THRESH), "--quiet"]) == 0
    coco = json.loads((simple / "instances.json").read_text())
    m_simple = _segm_ap(gt, _as_results(coco, ids_by_name), tmp_path / "simple_eval")
    print(f"segm AP with tolerance 1: {m_simple['AP']:.4f}")
    assert abs(m_simple["AP"] - m_exact["AP"]) <= 0.015
    n_points = lambda c: sum(len(p) for a in c["annotations"] for p in a["segmentation"])  # noqa: E731
    assert n_points(coco) < n_points(json.loads((exact / "instances.json").read_text()))

    # labelme files read back by d2seg's converter give the same polygons, boxes and areas
    doc = json.loads(next((simple / "labelme").glob("*.json")).read_text())
    assert {"version", "flags", "shapes", "imagePath", "imageData", "imageHeight",
            "imageWidth"} <= set(doc) and doc["imageData"] is None
    assert main(["data", "convert", "labelme", str(simple / "labelme"),
                 str(tmp_path / "back.json"),
                 "--labels", ",".join(c["name"] for c in coco["categories"])]) == 0
    back = json.loads((tmp_path / "back.json").read_text())
    by_stem = lambda c: {Path(im["file_name"]).stem: im["id"] for im in c["images"]}  # noqa: E731
    ours_ids, back_ids = by_stem(coco), by_stem(back)
    assert set(ours_ids) == set(back_ids)
    ours_names = {c["id"]: c["name"] for c in coco["categories"]}
    back_names = {c["id"]: c["name"] for c in back["categories"]}
    for stem in ours_ids:
        ours = sorted(((ours_names[a["category_id"]], a["segmentation"], a["bbox"], a["area"])
                       for a in coco["annotations"] if a["image_id"] == ours_ids[stem]),
                      key=lambda t: json.dumps(t[1]))
        theirs = sorted(((back_names[a["category_id"]], a["segmentation"], a["bbox"], a["area"])
                         for a in back["annotations"] if a["image_id"] == back_ids[stem]),
                        key=lambda t: json.dumps(t[1]))
        assert ours == theirs
    # the same class names (the converter numbers them 1..K in --labels order)
    assert [c["name"] for c in back["categories"]] == [c["name"] for c in coco["categories"]]
