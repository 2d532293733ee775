"""d2seg.compat.torch_ops.cocoeval: detectron2's fast COCOeval entry points in numpy.

The reference is pycocotools' own ``COCOeval`` (evaluate / accumulate / summarize).  The module
under test is driven exactly as ``detectron2.evaluation.fast_eval_api.COCOeval_opt.evaluate``
drives ``detectron2._C`` (same preparation, same argument layout), on a separate copy of the
ground truth and results, and its precision / recall / scores arrays and the 12 summary stats must
equal pycocotools' bit for bit.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from d2seg.compat.torch_ops import cocoeval as fast

COCO100 = "coco_val2014_100"


# --------------------------------------------------------------------------------------- harness
def _coco(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = copy.deepcopy(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _make_eval(gt: dict, dt: list, iou_type: str, params: dict, cls=COCOeval) -> COCOeval:
    """A fresh ``cls`` on private copies of the ground truth and results (pycocotools mutates them)."""
    coco_gt = _coco(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(copy.deepcopy(dt)) if dt else COCO()
    ev = cls(coco_gt, coco_dt, iou_type)
    for name, value in params.items():
        setattr(ev.params, name, value)
    return ev


def run_pycocotools(gt, dt, iou_type="bbox", **params) -> COCOeval:
    ev = _make_eval(gt, dt, iou_type, params)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def run_fast(gt, dt, iou_type="bbox", **params) -> COCOeval:
    """COCOeval_opt.evaluate/accumulate, with d2seg's functions in place of ``detectron2._C``."""
    ev = _make_eval(gt, dt, iou_type, params)
    p = ev.params
    p.imgIds = list(np.unique(p.imgIds))
    if p.useCats:
        p.catIds = list(np.unique(p.catIds))
    p.maxDets = sorted(p.maxDets)
    with contextlib.redirect_stdout(io.StringIO()):
        ev._prepare()
    cat_ids = p.catIds if p.useCats else [-1]
    ev.ious = {(i, c): ev.computeIoU(i, c) for i in p.imgIds for c in cat_ids}

    def convert(instances, is_det=False):
        return [
            fast.InstanceAnnotation(
                int(o["id"]),
                o["score"] if is_det else o.get("score", 0.0),
                o["area"],
                bool(o.get("iscrowd", 0)),
                bool(o.get("ignore", 0)),
            )
            for o in instances
        ]

    gts = [[convert(ev._gts[i, c]) for c in p.catIds] for i in p.imgIds]
    dts = [[convert(ev._dts[i, c], is_det=True) for c in p.catIds] for i in p.imgIds]
    ious = [[ev.ious[i, c] for c in cat_ids] for i in p.imgIds]
    if not p.useCats:
        gts = [[[o for c in i for o in c]] for i in gts]
        dts = [[[o for c in i for o in c]] for i in dts]
    evaluations = fast.COCOevalEvaluateImages(p.areaRng, p.maxDets[-1], p.iouThrs, ious, gts, dts)
    params_eval = copy.deepcopy(p)

    ev.eval = fast.COCOevalAccumulate(params_eval, evaluations)
    counts = ev.eval["counts"]
    ev.eval["recall"] = np.array(ev.eval["recall"]).reshape(counts[:1] + counts[2:])
    ev.eval["precision"] = np.array(ev.eval["precision"]).reshape(counts)
    ev.eval["scores"] = np.array(ev.eval["scores"]).reshape(counts)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.summarize()
    return ev


def assert_same(ref: COCOeval, got: COCOeval) -> None:
    assert got.eval["counts"] == ref.eval["counts"]
    for key in ("precision", "recall", "scores"):
        np.testing.assert_array_equal(got.eval[key], ref.eval[key], err_msg=key)
    np.testing.assert_array_equal(got.stats, ref.stats)


def compare(gt, dt, iou_type="bbox", **params) -> COCOeval:
    ref = run_pycocotools(gt, dt, iou_type, **params)
    got = run_fast(gt, dt, iou_type, **params)
    assert_same(ref, got)
    return ref


# ------------------------------------------------------------------------ shared COCO val subset
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_coco_val2014_100(shared_data, iou_type):
    root = shared_data / COCO100
    if not root.is_dir():
        pytest.skip(f"needs {root}")
    gt = json.loads((root / "annotations" / "instances_val2014_100.json").read_text())
    dt = json.loads((root / "results" / f"instances_val2014_fake{iou_type}100_results.json").read_text())
    reference = json.loads((root / "reference_stats_pycocotools.json").read_text())[iou_type]
    ref = compare(gt, dt, iou_type)
    np.testing.assert_array_equal(ref.stats, np.array(reference))
    # useCats=0 on real data too (crowd regions of other categories, many detections per image)
    compare(gt, dt, iou_type, useCats=0)


# ------------------------------------------------------------------------------------ synthetic
def _random_box(rng, width, height):
    w = float(rng.choice([rng.uniform(2, 30), rng.uniform(30, 100), rng.uniform(100, 400)]))
    h = float(w * rng.uniform(0.5, 2.0))
    x = float(rng.uniform(0, max(1.0, width - w)))
    y = float(rng.uniform(0, max(1.0, height - h)))
    return [round(x, 2), round(y, 2), round(w, 2), round(h, 2)]


def synthetic(seed, num_images=12, num_cats=4, crowd_p=0.1, first_gt_id=1, score_levels=None, max_dt_per_img=30):
    """Random GT/DT: crowd boxes, duplicate GTs (IoU ties), empty images, score ties, jittered DTs."""
    rng = np.random.default_rng(seed)
    width, height = 640, 480
    images = [{"id": i + 1, "width": width, "height": height} for i in range(num_images)]
    categories = [{"id": c, "name": f"c{c}"} for c in range(1, num_cats + 1)]
    anns, results = [], []
    ann_id = first_gt_id
    for img in images:
        kind = rng.integers(0, 6)  # 0: no gts, 1: no dts, else both
        gts_here = [] if kind == 0 else range(int(rng.integers(1, 10)))
        boxes = []
        for _ in gts_here:
            cat = int(rng.integers(1, num_cats + 1))
            if boxes and rng.random() < 0.15:  # exact duplicate of an earlier gt -> IoU ties
                box, cat = boxes[int(rng.integers(len(boxes)))]
                box = list(box)
            else:
                box = _random_box(rng, width, height)
            crowd = int(rng.random() < crowd_p)
            anns.append(
                {
                    "id": ann_id,
                    "image_id": img["id"],
                    "category_id": cat,
                    "bbox": box,
                    "area": box[2] * box[3] * float(rng.uniform(0.6, 1.0)),
                    "iscrowd": crowd,
                }
            )
            boxes.append((box, cat))
            ann_id += 1
        if kind == 1:
            continue
        for _ in range(int(rng.integers(0, max_dt_per_img))):
            if boxes and rng.random() < 0.7:
                box, cat = boxes[int(rng.integers(len(boxes)))]
                j = rng.normal(0, 0.08, 4) * np.array([box[2], box[3], box[2], box[3]])
                box = [box[0] + j[0], box[1] + j[1], max(1.0, box[2] + j[2]), max(1.0, box[3] + j[3])]
                if rng.random() < 0.2:
                    cat = int(rng.integers(1, num_cats + 1))
            else:
                box, cat = _random_box(rng, width, height), int(rng.integers(1, num_cats + 1))
            score = float(rng.choice(score_levels)) if score_levels is not None else float(rng.random())
            results.append(
                {"image_id": img["id"], "category_id": cat, "bbox": [round(v, 2) for v in box], "score": score}
            )
    gt = {"images": images, "annotations": anns, "categories": categories}
    return gt, results


@pytest.mark.parametrize("seed", range(6))
def test_synthetic_bbox(seed):
    gt, dt = synthetic(seed, score_levels=None if seed % 2 else [0.1, 0.5, 0.5, 0.9])
    compare(gt, dt)
    compare(gt, dt, useCats=0)


def test_synthetic_crowd_heavy_and_ties():
    gt, dt = synthetic(11, crowd_p=0.5, score_levels=[0.3, 0.7])
    compare(gt, dt)
    compare(gt, dt, useCats=0)


def test_synthetic_custom_params():
    """Small maxDets (truncation inside images and across), image / category subsets."""
    gt, dt = synthetic(21, num_images=15, max_dt_per_img=60, score_levels=[0.2, 0.4, 0.6, 0.8])
    compare(gt, dt, maxDets=[1, 5, 10])
    compare(gt, dt, maxDets=[10, 2, 4], useCats=0)
    compare(gt, dt, imgIds=[9, 3, 4, 3, 12, 15], catIds=[3, 1])


def test_synthetic_many_detections_per_image():
    """More than maxDets[-1] detections in one image: computeIoU's cut must line up with ours."""
    gt, dt = synthetic(31, num_images=4, num_cats=2, max_dt_per_img=260, score_levels=[0.25, 0.5, 0.75])
    compare(gt, dt)
    compare(gt, dt, useCats=0)


def test_synthetic_zero_ids():
    """Annotation id 0 reads as 'unmatched' in pycocotools (matches are stored by id)."""
    gt, dt = synthetic(41, first_gt_id=0)
    compare(gt, dt)


def test_synthetic_no_detections_for_some_categories():
    gt, dt = synthetic(51, num_cats=6)
    dt = [d for d in dt if d["category_id"] not in (2, 5)]
    compare(gt, dt)


def test_synthetic_segm():
    rng = np.random.default_rng(61)
    images = [{"id": i + 1, "width": 80, "height": 60} for i in range(6)]
    gt = {"images": images, "annotations": [], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    dt = []
    ann_id = 1
    for img in images[1:]:
        for _ in range(int(rng.integers(1, 5))):
            x, y = float(rng.uniform(0, 50)), float(rng.uniform(0, 30))
            w, h = float(rng.uniform(4, 30)), float(rng.uniform(4, 30))
            poly = [x, y, x + w, y, x + w, y + h, x, y + h]
            cat = int(rng.integers(1, 3))
            gt["annotations"].append(
                {"id": ann_id, "image_id": img["id"], "category_id": cat, "segmentation": [poly],
                 "area": w * h, "bbox": [x, y, w, h], "iscrowd": int(rng.random() < 0.2)}
            )
            ann_id += 1
            for _ in range(int(rng.integers(0, 4))):
                m = np.zeros((60, 80), dtype=np.uint8, order="F")
                dx, dy = rng.integers(-3, 4, 2)
                m[max(0, int(y) + dy): int(y + h) + dy, max(0, int(x) + dx): int(x + w) + dx] = 1
                rle = mask_utils.encode(np.asfortranarray(m))
                rle["counts"] = rle["counts"].decode("ascii")
                dt.append({"image_id": img["id"], "category_id": cat, "segmentation": rle,
                           "score": float(rng.choice([0.3, 0.6, 0.9]))})
    compare(gt, dt, "segm")
    compare(gt, dt, "segm", useCats=0)


def test_iou_tie_goes_to_later_gt():
    """Equal IoU with two ground truths: pycocotools keeps the later one, which decides det 2's fate."""
    gt = {
        "images": [{"id": 1, "width": 100, "height": 100}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 10], "area": 200, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [10, 0, 20, 10], "area": 200, "iscrowd": 0},
        ],
    }
    dt = [  # det 1: IoU 0.6 with both; det 2: IoU 1 with gt 2, 1/3 with gt 1
        {"image_id": 1, "category_id": 1, "bbox": [5, 0, 20, 10], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [10, 0, 20, 10], "score": 0.8},
    ]
    ref = compare(gt, dt)
    assert ref.eval["recall"][0, 0, 0, -1] == 0.5  # det 1 took gt 2, det 2 is a false positive


def test_instance_annotation_fields():
    a = fast.InstanceAnnotation(7, 0.5, 12.0, True, False)
    assert (a.id, a.score, a.area, a.is_crowd, a.ignore) == (7, 0.5, 12.0, True, False)


# ------------------------------------------------------------------- detectron2's own caller
def test_detectron2_cocoeval_opt_matches_pycocotools():
    fast_eval_api = pytest.importorskip("detectron2.evaluation.fast_eval_api")
    for seed, params in ((71, {}), (72, {"useCats": 0}), (73, {"maxDets": [1, 5, 10]})):
        gt, dt = synthetic(seed, crowd_p=0.2, score_levels=[0.2, 0.5, 0.8])
        ref = run_pycocotools(gt, dt, **params)
        ev = _make_eval(gt, dt, "bbox", params, cls=fast_eval_api.COCOeval_opt)
        with contextlib.redirect_stdout(io.StringIO()):
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        assert_same(ref, ev)
