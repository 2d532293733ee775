"""detectron2 v0.6, installed by d2seg with PyTorch ops, trains, checkpoints, resumes, evaluates.

A tiny from-scratch GroupNorm Mask R-CNN on generated shapes: the foundation every later
feature stands on. References: pycocotools for COCO AP, the saved checkpoint for resume.
"""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from d2seg.runners.diagnostics import tiny_mask_rcnn_cfg


def _make_shapes(root, n=6, size=(96, 128), seed=0):
    """Squares and discs on a dark background, as a COCO instances JSON with RLE masks."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(n):
        img = np.full((*size, 3), 30, np.uint8)
        for k in range(2):
            mask = np.zeros(size, np.uint8)
            cx, cy = int(rng.integers(20, size[1] - 20)), int(rng.integers(20, size[0] - 20))
            if k == 0:
                cv2.rectangle(mask, (cx - 12, cy - 12), (cx + 12, cy + 12), 1, -1)
                colour, cat = (0, 200, 0), 3
            else:
                cv2.circle(mask, (cx, cy), 12, 1, -1)
                colour, cat = (0, 0, 220), 11
            img[mask > 0] = colour
            rle = mask_util.encode(np.asfortranarray(mask))
            rle["counts"] = rle["counts"].decode()
            x, y, w, h = cv2.boundingRect(mask)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat, "iscrowd": 0,
                         "bbox": [x, y, w, h], "area": int(mask.sum()), "segmentation": rle})
        cv2.imwrite(str(root / f"{i}.png"), img)
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": size[0], "width": size[1]})
    cats = [{"id": 3, "name": "square"}, {"id": 11, "name": "disc"}]
    path = root / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


@pytest.fixture(scope="module")
def shapes_dataset(tmp_path_factory):
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import register_coco_instances

    root = tmp_path_factory.mktemp("shapes")
    ann = _make_shapes(root)
    name = f"d2seg_test_shapes_{os.getpid()}"
    if name not in DatasetCatalog.list():
        register_coco_instances(name, {}, str(ann), str(root))
    return name, ann


def _cfg(dataset, out, max_iter):
    cfg = tiny_mask_rcnn_cfg("cpu", 96)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2
    cfg.DATASETS.TRAIN = (dataset,)
    cfg.DATASETS.TEST = (dataset,)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.STEPS = ()
    cfg.SOLVER.MAX_ITER = max_iter
    cfg.SOLVER.CHECKPOINT_PERIOD = 2
    cfg.SEED = 1
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # keep every detection so AP is computed on real output
    cfg.OUTPUT_DIR = str(out)
    return cfg


@pytest.mark.slow
def test_train_checkpoint_resume_and_evaluate(shapes_dataset, tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import build_detection_test_loader
    from detectron2.engine import DefaultTrainer
    from detectron2.evaluation import COCOEvaluator, inference_on_dataset

    dataset, ann = shapes_dataset
    cfg = _cfg(dataset, tmp_path, max_iter=4)
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    metrics = [json.loads(line) for line in open(tmp_path / "metrics.json")]
    assert [m["iteration"] for m in metrics if "total_loss" in m][-1] == 3
    assert all(np.isfinite(m["total_loss"]) for m in metrics if "total_loss" in m)
    assert (tmp_path / "model_final.pth").is_file()
    assert (tmp_path / "last_checkpoint").read_text().strip() == "model_final.pth"

    saved = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=True)
    cfg.defrost()
    cfg.SOLVER.MAX_ITER = 6
    resumed = DefaultTrainer(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == saved["iteration"] + 1 == 4
    for key, value in resumed.model.state_dict().items():
        assert torch.equal(value, saved["model"][key]), key
    resumed.train()
    assert json.loads((tmp_path / "metrics.json").read_text().splitlines()[-1])["iteration"] == 5

    # COCO evaluation through detectron2 (fast path = d2seg's stand-in) vs pycocotools directly
    model = resumed.model
    evaluator = COCOEvaluator(dataset, output_dir=str(tmp_path / "eval"), use_fast_impl=True)
    results = inference_on_dataset(model, build_detection_test_loader(cfg, dataset), evaluator)
    predictions = json.loads((tmp_path / "eval" / "coco_instances_results.json").read_text())
    gt = COCO(str(ann))
    for iou_type in ("bbox", "segm"):
        if not predictions:
            assert all(np.isnan(v) or v == 0 for v in results[iou_type].values())
            continue
        dets = [dict(p) for p in predictions]
        if iou_type == "segm":
            for d in dets:
                d.pop("bbox", None)  # detectron2 evaluates masks without their boxes
        ref = COCOeval(gt, gt.loadRes(dets), iou_type)
        ref.evaluate(); ref.accumulate(); ref.summarize()
        expected = 100 * ref.stats[0] if ref.stats[0] >= 0 else float("nan")
        assert results[iou_type]["AP"] == pytest.approx(expected, nan_ok=True)

    # the checkpoint written by training loads back into a fresh model
    fresh = DefaultTrainer.build_model(cfg)
    DetectionCheckpointer(fresh).load(str(tmp_path / "model_final.pth"))
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key
