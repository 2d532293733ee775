"""A small run folder as ``d2seg train`` + ``d2seg eval`` + ``d2seg analyze`` leave it, built in
seconds: metrics.json rows, config.yaml, report/ from d2seg.evaluation.coco, analysis/."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils


def _rle(box, h, w):
    m = np.zeros((h, w), np.uint8, order="F")
    x, y, bw, bh = box
    m[y:y + bh, x:x + bw] = 1
    r = mask_utils.encode(m)
    r["counts"] = r["counts"].decode("ascii")
    return r


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    from d2seg.analysis import analyze
    from d2seg.evaluation import coco

    root = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(1)
    h, w = 96, 128
    names = ["cat", "dog", "bird"]
    images, anns, dets = [], [], []
    (root / "images").mkdir()
    for i in range(1, 7):
        images.append({"id": i, "file_name": f"im{i}.png", "height": h, "width": w})
        cv2.imwrite(str(root / "images" / f"im{i}.png"),
                    rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        for k in range(3):
            x, y = int(rng.integers(0, w - 30)), int(rng.integers(0, h - 30))
            box = [x, y, 24, 24]
            cat = int(rng.integers(1, 4))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": box,
                         "area": 576, "iscrowd": 0,
                         "segmentation": [[x, y, x + 24, y, x + 24, y + 24, x, y + 24]]})
            if rng.random() < 0.8:
                dx = int(rng.integers(-8, 9))
                pb = [max(0, x + dx), y, 24, 24]
                pc = cat if rng.random() < 0.8 else int(rng.integers(1, 4))
                dets.append({"image_id": i, "category_id": pc, "bbox": pb,
                             "score": float(rng.uniform(0.2, 1)), "segmentation": _rle(pb, h, w)})
        pb = [int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20)), 16, 16]
        dets.append({"image_id": i, "category_id": int(rng.integers(1, 4)), "bbox": pb,
                     "score": float(rng.uniform(0, 0.6)), "segmentation": _rle(pb, h, w)})
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)]}
    (root / "gt.json").write_text(json.dumps(gt))
    res = root / "eval" / "coco_instances_results.json"
    res.parent.mkdir()
    res.write_text(json.dumps(dets))
    rows = []
    for it in range(19, 400, 20):
        rows.append({"iteration": it, "total_loss": 2.5 * math.exp(-it / 150) + 0.3,
                     "loss_cls": math.exp(-it / 100), "loss_mask": 0.7 - it / 1000,
                     "lr": min(0.01, 0.01 * it / 100), "data_time": 0.01})
        if it % 100 == 99:
            rows.append({"iteration": it, "bbox/AP": it / 10, "bbox/AP50": it / 6,
                         "segm/AP": it / 12, "segm/AP50": it / 7, "bbox/APl": float("nan")})
    (root / "metrics.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n{\"iter")
    (root / "config.yaml").write_text("MODEL:\n  META_ARCHITECTURE: GeneralizedRCNN\n"
                                      "SOLVER:\n  BASE_LR: 0.01\n  MAX_ITER: 400\n<script>x</script>\n")
    report = coco.evaluate_coco(str(root / "gt.json"), str(res), ["bbox", "segm"])
    coco.write_report(report, root / "report", gt=str(root / "gt.json"), results=str(res))
    analyze(str(root / "gt.json"), str(res), root / "analysis", images_dir=root / "images",
            worst=3)
    return root


CAMVID_CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence",
                  "Car", "Pedestrian", "Bicyclist"]
CAMVID_IGNORE = 11


def camvid_predictions(shared_data, count: int = 6):
    """(image path, ground-truth path, ground truth, prediction) for the first ``count`` CamVid
    val frames; each prediction is its ground truth shifted right by a different amount (the
    ignored pixels predicted as class 0), so the frames score different mIoUs."""
    folder = shared_data / "camvid_val"
    out = []
    for k, image in enumerate(sorted((folder / "val").glob("*.png"))[:count]):
        gt_path = folder / "valannot" / image.name
        gt = cv2.imread(str(gt_path), cv2.IMREAD_UNCHANGED).astype(np.int64)
        shift = [3, 40, 0, 90, 12, 25][k % 6] + k // 6
        pred = np.roll(gt, shift, axis=1)
        pred[pred == CAMVID_IGNORE] = 0
        out.append((image, gt_path, gt, pred))
    return out


@pytest.fixture
def semantic_run(shared_data, tmp_path):
    """A semantic run folder: d2seg's SemSegReportEvaluator fed 6 CamVid frames and shifted
    ground truth as predictions (a registered dataset, one-hot logits), then report/ written by
    semantic_report.write_report as d2seg train and d2seg eval do. Returns (folder, frames)."""
    import torch
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from d2seg.evaluation import semantic_report
    from d2seg.evaluation.evaluator import SemSegReportEvaluator

    frames = camvid_predictions(shared_data)
    name = "report_test_camvid"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    records = [{"file_name": str(image), "sem_seg_file_name": str(gt_path), "height": gt.shape[0],
                "width": gt.shape[1], "image_id": k}
               for k, (image, gt_path, gt, _) in enumerate(frames)]
    DatasetCatalog.register(name, lambda: records)
    rng = np.random.default_rng(0)
    MetadataCatalog.get(name).set(stuff_classes=CAMVID_CLASSES, ignore_label=CAMVID_IGNORE,
                                  evaluator_type="sem_seg",
                                  stuff_colors=rng.integers(0, 255, (11, 3)).tolist())
    try:
        root = tmp_path / "semantic_run"
        evaluator = SemSegReportEvaluator(name, distributed=False,
                                          output_dir=str(root / "eval" / name), worst=4)
        evaluator.reset()
        for record, (_, _, _, pred) in zip(records, frames):
            logits = torch.nn.functional.one_hot(torch.from_numpy(pred), len(CAMVID_CLASSES))
            evaluator.process([record], [{"sem_seg": logits.permute(2, 0, 1).float()}])
        evaluator.evaluate()
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    source = root / "eval" / name
    report = json.loads((source / semantic_report.REPORT_JSON).read_text())
    semantic_report.write_report(report, root / "report", source_dir=source)
    (root / "config.yaml").write_text("MODEL:\n  META_ARCHITECTURE: SemanticSegmentor\n")
    return root, frames
