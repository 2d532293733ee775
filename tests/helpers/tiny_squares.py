"""The tiny data set and model the engine tests train on: 64x80 images with one green square
each (COCO JSON with RLE masks, plus a d2seg manifest), and a tiny Mask R-CNN with a
MobileNet-V3-small FPN body (9 MB checkpoints, a few seconds an iteration on one CPU thread).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_util

H, W = 64, 80


def write_squares_dataset(root: Path, name: str, splits=("train",), *, texture: bool = False
                          ) -> dict[str, list]:
    """Splits under ``root/<split>/`` with ``root/<split>.json`` and the manifest
    ``root/<name>.yaml`` (datasets ``<name>_<split>``): ``splits`` names them (two images each)
    or maps each name to its number of images. Returns, per split, each image as (BGR image,
    mask, xywh box), for tests that build model inputs by hand. ``texture``: a random red
    channel, so that batch statistics are not degenerate."""
    rng = np.random.default_rng(0)
    items: dict[str, list] = {}
    manifest = f"name: {name}\nkind: coco_instances\nsplits:\n"
    counts = dict(splits) if isinstance(splits, dict) else {split: 2 for split in splits}
    for split, count in counts.items():
        (root / split).mkdir(parents=True)
        images, anns, items[split] = [], [], []
        for i in range(count):
            img = np.full((H, W, 3), 30, np.uint8)
            if texture:
                img[:, :, 2] = rng.integers(0, 60, (H, W), dtype=np.uint8)
            mask = np.zeros((H, W), np.uint8)
            cx, cy = int(rng.integers(20, 60)), int(rng.integers(20, 44))
            cv2.rectangle(mask, (cx - 10, cy - 10), (cx + 10, cy + 10), 1, -1)
            img[mask > 0] = (0, 200, 0)
            rle = mask_util.encode(np.asfortranarray(mask))
            rle["counts"] = rle["counts"].decode()
            x, y, w, h = cv2.boundingRect(mask)
            anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                         "bbox": [x, y, w, h], "area": int(mask.sum()), "segmentation": rle})
            cv2.imwrite(str(root / split / f"{i}.png"), img)
            images.append({"id": i + 1, "file_name": f"{i}.png", "height": H, "width": W})
            items[split].append((img, mask, (x, y, w, h)))
        (root / f"{split}.json").write_text(json.dumps(
            {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "square"}]}))
        manifest += f"  {split}:\n    images: {split}\n    annotations: {split}.json\n"
    (root / f"{name}.yaml").write_text(manifest)
    return items


def tiny_config(train: str, test: str | None = None, norm: str = "GN"):
    """The tiny Mask R-CNN for dataset ``train`` (and ``test``); test images are not resized
    (64 is their short side). Tests set the solver keys they are about."""
    from d2seg.config import add_d2seg_config
    from d2seg.runners.diagnostics import tiny_mask_rcnn_cfg

    cfg = add_d2seg_config(tiny_mask_rcnn_cfg("cpu", H))
    cfg.MODEL.BACKBONE.NAME = "build_torchvision_fpn_backbone"
    cfg.MODEL.TORCHVISION.ARCH = "mobilenet_v3_small"
    cfg.MODEL.TORCHVISION.NORM = norm
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 64
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 32
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 1
    cfg.DATASETS.TRAIN = (train,)
    cfg.DATASETS.TEST = (test,) if test else ()
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.STEPS = ()
    cfg.TEST.EVAL_PERIOD = 0
    return cfg


def validation_run_config(name: str, norm: str = "GN"):
    """The tiny model trained on ``<name>_train`` with ``<name>_test`` for validation: 3
    iterations from the first (no warm-up), a checkpoint after each, and none of the extras a
    test does not look at (best metric, progress bar, run report)."""
    cfg = tiny_config(f"{name}_train", f"{name}_test", norm)
    cfg.SOLVER.WARMUP_ITERS = 0
    cfg.SOLVER.MAX_ITER = 3
    cfg.SOLVER.CHECKPOINT_PERIOD = 1
    cfg.D2SEG.BEST_METRIC = ""
    cfg.D2SEG.PROGRESS_BAR = False
    cfg.D2SEG.RUN_REPORT = False
    return cfg
