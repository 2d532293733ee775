"""Config keys of d2seg's modeling components, added in one place (detectron2's add_*_config)."""

from __future__ import annotations

from detectron2.config import CfgNode as CN

#: Normalisations the torchvision backbones accept in ``MODEL.TORCHVISION.NORM``.
TORCHVISION_NORMS = ("FrozenBN", "BN", "SyncBN", "GN")


def add_modeling_config(cfg) -> None:
    """Add ``MODEL.TORCHVISION``: which torchvision classifier to use as a backbone, and how;
    and the semantic segmentation keys (:func:`add_semantic_config`).

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
    add_semantic_config(cfg)


def add_semantic_config(cfg) -> None:
    """Keys of the semantic segmentation components (d2seg.modeling.semantic).

    DeepLab's (``detectron2.projects.deeplab.add_deeplab_config``): ``SOLVER.POLY_LR_POWER``,
    ``SOLVER.POLY_LR_CONSTANT_ENDING`` (``SOLVER.LR_SCHEDULER_NAME: WarmupPolyLR``),
    ``MODEL.SEM_SEG_HEAD.{LOSS_TYPE, PROJECT_FEATURES, PROJECT_CHANNELS, ASPP_CHANNELS,
    ASPP_DILATIONS, ASPP_DROPOUT, USE_DEPTHWISE_SEPARABLE_CONV}``, ``MODEL.RESNETS.{RES4_DILATION,
    RES5_MULTI_GRID, STEM_TYPE}`` and ``INPUT.CROP.SINGLE_CATEGORY_MAX_AREA``. They are only read
    by DeepLab's own components, so adding them changes no other model; added once (another
    project's config function may have added them already).

    ``MODEL.FCN_HEAD`` (``FCNHead``, with ``SEM_SEG_HEAD.IN_FEATURES``/``CONVS_DIM``/``NORM``):
    ``NUM_CONVS`` 3x3 convs of dilation ``DILATION`` (kernel ``KERNEL_SIZE``), then ``DROPOUT``.

    ``MODEL.UNET``: encoder (``build_unet_backbone``) ``DEPTH`` poolings, ``BASE_CHANNELS`` at
    full resolution doubling per stage up to ``MAX_CHANNELS`` (0: no cap), ``NORM`` (GN, BN, ""),
    ``OUT_FEATURES`` (``res0``..``res{DEPTH}``, empty: all); decoder (``UNetHead``, with
    ``SEM_SEG_HEAD.IN_FEATURES``/``NORM``) ``DECODER_CHANNELS`` per skip level, finest first
    (empty: the skips' widths) and ``UPSAMPLE`` (``bilinear`` or ``transpose``).
    """
    if "POLY_LR_POWER" not in cfg.SOLVER:
        from detectron2.projects.deeplab import add_deeplab_config

        add_deeplab_config(cfg)
    cfg.MODEL.FCN_HEAD = CN()
    cfg.MODEL.FCN_HEAD.NUM_CONVS = 2
    cfg.MODEL.FCN_HEAD.KERNEL_SIZE = 3
    cfg.MODEL.FCN_HEAD.DILATION = 1
    cfg.MODEL.FCN_HEAD.DROPOUT = 0.1
    cfg.MODEL.UNET = CN()
    cfg.MODEL.UNET.DEPTH = 4
    cfg.MODEL.UNET.BASE_CHANNELS = 32
    cfg.MODEL.UNET.MAX_CHANNELS = 0
    cfg.MODEL.UNET.NORM = "GN"
    cfg.MODEL.UNET.OUT_FEATURES = []
    cfg.MODEL.UNET.DECODER_CHANNELS = []
    cfg.MODEL.UNET.UPSAMPLE = "bilinear"
