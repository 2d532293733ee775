"""The training mapper honours ``INPUT.CROP.SINGLE_CATEGORY_MAX_AREA`` (DeepLab's key, which
detectron2's own mapper leaves unread): crops of a label map whose halves are two classes keep
each class at most that share of the crop, checked pixel by pixel on the mapped output."""

from __future__ import annotations

import random

import cv2
import numpy as np
import torch
from detectron2.data import transforms as T

CROP, AREA, IGNORE = 32, 0.9, 255


def _cfg(area: float):
    from d2seg.config import load_config

    cfg = load_config("configs/semantic/fcn_R18_GN_scratch.yaml",
                      ["INPUT.CROP.ENABLED", "True", "INPUT.CROP.TYPE", "absolute",
                       "INPUT.CROP.SIZE", f"({CROP}, {CROP})",
                       "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA", str(area),
                       "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64",
                       "INPUT.RANDOM_FLIP", "none", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3"])
    return cfg


def test_the_crop_is_detectron2s_category_area_constraint_when_below_one():
    from d2seg.data.mappers import D2SegDatasetMapper

    kinds = [type(a) for a in D2SegDatasetMapper(_cfg(AREA), is_train=True).augmentations.augs]
    assert T.RandomCrop_CategoryAreaConstraint in kinds and T.RandomCrop not in kinds
    constrained = next(a for a in D2SegDatasetMapper(_cfg(AREA), is_train=True).augmentations.augs
                       if isinstance(a, T.RandomCrop_CategoryAreaConstraint))
    assert (constrained.single_category_max_area, constrained.ignored_category) == (AREA, IGNORE)
    plain = [type(a) for a in D2SegDatasetMapper(_cfg(1.0), is_train=True).augmentations.augs]
    assert T.RandomCrop in plain and T.RandomCrop_CategoryAreaConstraint not in plain
    test_time = [type(a) for a in D2SegDatasetMapper(_cfg(AREA), is_train=False).augmentations.augs]
    assert T.RandomCrop_CategoryAreaConstraint not in test_time


def test_mapped_crops_keep_each_class_under_the_share(tmp_path):
    from d2seg.data.mappers import D2SegDatasetMapper

    image = np.full((64, 64, 3), 90, np.uint8)
    labels = np.zeros((64, 64), np.uint8)
    labels[:, 32:] = 1  # left half class 0, right half class 1
    cv2.imwrite(str(tmp_path / "im.png"), image)
    cv2.imwrite(str(tmp_path / "lab.png"), labels)
    record = {"file_name": str(tmp_path / "im.png"), "sem_seg_file_name": str(tmp_path / "lab.png"),
              "height": 64, "width": 64, "image_id": 0}
    mapper = D2SegDatasetMapper(_cfg(AREA), is_train=True)
    shares = []
    for seed in range(30):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        out = mapper(dict(record))["sem_seg"].numpy()
        assert out.shape == (64, 64)  # detectron2 crops first, then resizes to MIN_SIZE_TRAIN
        counts = np.bincount(out[out != IGNORE].ravel(), minlength=2)
        shares.append(counts.max() / counts.sum())
    assert max(shares) <= AREA, shares
    assert min(shares) < 0.7  # the crops move: not one fixed window
