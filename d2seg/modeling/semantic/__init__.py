"""Semantic segmentation components for detectron2's ``SemanticSegmentor``, registered on import.

* heads (``MODEL.SEM_SEG_HEAD.NAME``): ``FCNHead``, ``UNetHead``; detectron2's ``SemSegFPNHead``
  and, from ``detectron2.projects.deeplab``, ``DeepLabV3PlusHead`` / ``DeepLabV3Head``;
* backbones (``MODEL.BACKBONE.NAME``): ``build_unet_backbone`` (UNet encoder),
  ``build_torchvision_semseg_backbone`` (a torchvision trunk padded to its stride) and
  ``build_resnet_deeplab_semseg_backbone`` (detectron2's DeepLab ResNet, padded likewise).

Config keys: ``MODEL.FCN_HEAD``, ``MODEL.UNET`` and DeepLab's (``add_deeplab_config``), all
added by ``d2seg.modeling.config.add_modeling_config``. Configs: ``configs/semantic/``.
"""

import detectron2.projects.deeplab  # noqa: F401  (registers DeepLabV3PlusHead, the DeepLab ResNet)

from d2seg.modeling.semantic.backbones import (
    PaddedResNet,
    PaddedTorchvisionBackbone,
    build_resnet_deeplab_semseg_backbone,
    build_torchvision_semseg_backbone,
)
from d2seg.modeling.semantic.fcn_head import FCNHead
from d2seg.modeling.semantic.unet import UNetEncoder, UNetHead, build_unet_backbone, unet_widths

__all__ = ["FCNHead", "PaddedResNet", "PaddedTorchvisionBackbone", "UNetEncoder", "UNetHead",
           "build_resnet_deeplab_semseg_backbone", "build_torchvision_semseg_backbone",
           "build_unet_backbone", "unet_widths"]
