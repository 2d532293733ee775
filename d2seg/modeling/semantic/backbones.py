"""Backbones for dense prediction that pad their input to their coarsest stride.

detectron2's ``SemanticSegmentor`` pads a batch to ``backbone.size_divisibility``. A plain
torchvision trunk and detectron2's (DeepLab) ResNet declare 0, so an image of 170 rows gives
stride-32 features of 6 rows, and heads that upsample by a fixed factor (DeepLabV3+, Semantic
FPN's) no longer line up with the targets. DeepLab's own recipe avoids this with fixed-size
crops, which ties training and test sizes to ``INPUT.CROP.SIZE``; padding frees both.

* ``build_torchvision_semseg_backbone``: ``build_torchvision_backbone`` (same ``MODEL.TORCHVISION``
  keys, same parameter names, so ``imagenet:<arch>`` weights load unchanged), padded;
* ``build_resnet_deeplab_semseg_backbone``: detectron2's ``build_resnet_deeplab_backbone``
  (``MODEL.RESNETS`` with DeepLab's stem, dilation and multi-grid keys), padded.
"""

from __future__ import annotations

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import ResNet

from d2seg.modeling.torchvision_backbone import TorchvisionBackbone, torchvision_trunk


class _PaddedToStride:
    """Mixin: inputs are padded to a multiple of the largest output stride."""

    @property
    def size_divisibility(self) -> int:
        return max(self._out_feature_strides.values())


class PaddedTorchvisionBackbone(_PaddedToStride, TorchvisionBackbone):
    """A TorchvisionBackbone whose inputs are padded to a multiple of its largest stride."""


class PaddedResNet(_PaddedToStride, ResNet):
    """detectron2's ResNet (adds no state) whose inputs are padded to its largest stride."""


@BACKBONE_REGISTRY.register()
def build_torchvision_semseg_backbone(cfg, input_shape: ShapeSpec) -> PaddedTorchvisionBackbone:
    """``MODEL.BACKBONE.NAME: build_torchvision_semseg_backbone``: the MODEL.TORCHVISION stages."""
    return torchvision_trunk(cfg, input_shape, PaddedTorchvisionBackbone)


@BACKBONE_REGISTRY.register()
def build_resnet_deeplab_semseg_backbone(cfg, input_shape: ShapeSpec) -> PaddedResNet:
    """``MODEL.BACKBONE.NAME: build_resnet_deeplab_semseg_backbone``: DeepLab's ResNet, padded."""
    from detectron2.projects.deeplab import build_resnet_deeplab_backbone

    backbone = build_resnet_deeplab_backbone(cfg, input_shape)
    backbone.__class__ = PaddedResNet  # only the size_divisibility property differs
    return backbone
