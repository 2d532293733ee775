"""Config keys of d2seg's modeling components, added in one place (detectron2's add_*_config)."""

from __future__ import annotations

from detectron2.config import CfgNode as CN

#: Normalisations the torchvision backbones accept in ``MODEL.TORCHVISION.NORM``.
TORCHVISION_NORMS = ("FrozenBN", "BN", "SyncBN", "GN")


def add_modeling_config(cfg) -> None:
    """Add ``MODEL.TORCHVISION``: which torchvision classifier to use as a backbone, and how.

    ``MODEL.TORCHVISION.ARCH``: a torchvision classification model name (``mobilenet_v2``,
    ``mobilenet_v3_large``, ``resnet18``, ``resnet34``, ``resnet50`` ...).
    ``MODEL.TORCHVISION.OUT_FEATURES``: stages to expose, ``res2``..``res5`` at strides 4..32
    (detectron2's ResNet names, so FPN/ROI-head configs work unchanged).
    ``MODEL.TORCHVISION.NORM``: ``FrozenBN`` (fine-tuning from ImageNet, the detectron2 default),
    ``BN``, ``SyncBN`` (multi-GPU) or ``GN`` (from scratch, small batches; groups = gcd(32, C)).
    How many stages are frozen comes from detectron2's own ``MODEL.BACKBONE.FREEZE_AT``.
    """
    cfg.MODEL.TORCHVISION = CN()
    cfg.MODEL.TORCHVISION.ARCH = "mobilenet_v2"
    cfg.MODEL.TORCHVISION.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.TORCHVISION.NORM = "FrozenBN"
