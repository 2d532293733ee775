"""``FCNHead``: the fully convolutional head (FCN, Long et al. 2015) for ``SemanticSegmentor``.

A few 3x3 convs (norm + ReLU) on one backbone feature, dropout, a 1x1 classifier, and bilinear
upsampling of the logits back to the input. Config::

    MODEL.SEM_SEG_HEAD.NAME: "FCNHead"
    MODEL.SEM_SEG_HEAD.IN_FEATURES: ["res5"]   # exactly one backbone output
    MODEL.SEM_SEG_HEAD.CONVS_DIM / NORM / NUM_CLASSES / IGNORE_VALUE / LOSS_WEIGHT
    MODEL.FCN_HEAD.NUM_CONVS, KERNEL_SIZE, DILATION, DROPOUT   (d2seg.modeling.config)
"""

from __future__ import annotations

import fvcore.nn.weight_init as weight_init
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn
from torch.nn import functional as F

from d2seg.errors import D2SegError
from d2seg.modeling.semantic.common import PixelHead, make_norm


@SEM_SEG_HEADS_REGISTRY.register()
class FCNHead(PixelHead):
    """Convs on one feature map, a classifier, logits upsampled to the input size."""

    @configurable
    def __init__(self, input_shape: dict[str, ShapeSpec], *, num_classes: int, conv_dims: int,
                 num_convs: int = 2, kernel_size: int = 3, dilation: int = 1,
                 dropout: float = 0.1, norm: str = "GN", ignore_value: int = 255,
                 loss_weight: float = 1.0):
        super().__init__()
        if len(input_shape) != 1:
            raise D2SegError(f"FCNHead takes exactly one feature, got {sorted(input_shape)}",
                             where="MODEL.SEM_SEG_HEAD.IN_FEATURES", hint='e.g. ["res5"]')
        if num_classes < 1:
            raise D2SegError(f"needs at least one class, got {num_classes}",
                             where="MODEL.SEM_SEG_HEAD.NUM_CLASSES")
        if kernel_size % 2 == 0:
            raise D2SegError(f"must be odd, got {kernel_size}", where="MODEL.FCN_HEAD.KERNEL_SIZE")
        (self.in_feature, shape), = input_shape.items()
        self.stride = shape.stride
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        convs, channels = [], shape.channels
        for _ in range(num_convs):
            conv = Conv2d(channels, conv_dims, kernel_size, padding=dilation * (kernel_size // 2),
                          dilation=dilation, bias=not norm, norm=make_norm(norm, conv_dims),
                          activation=F.relu)
            weight_init.c2_msra_fill(conv)
            convs.append(conv)
            channels = conv_dims
        self.convs = nn.Sequential(*convs)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.predictor = Conv2d(channels, num_classes, kernel_size=1)
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.zeros_(self.predictor.bias)

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        missing = [f for f in head.IN_FEATURES if f not in input_shape]
        if missing:
            raise D2SegError(f"names {missing}, which the backbone does not output "
                             f"(it has {sorted(input_shape)})", where="MODEL.SEM_SEG_HEAD.IN_FEATURES")
        return {
            "input_shape": {k: input_shape[k] for k in head.IN_FEATURES},
            "num_classes": head.NUM_CLASSES,
            "conv_dims": head.CONVS_DIM,
            "num_convs": cfg.MODEL.FCN_HEAD.NUM_CONVS,
            "kernel_size": cfg.MODEL.FCN_HEAD.KERNEL_SIZE,
            "dilation": cfg.MODEL.FCN_HEAD.DILATION,
            "dropout": cfg.MODEL.FCN_HEAD.DROPOUT,
            "norm": head.NORM,
            "ignore_value": head.IGNORE_VALUE,
            "loss_weight": head.LOSS_WEIGHT,
        }

    def layers(self, features):
        """Logits at the feature's stride."""
        return self.predictor(self.dropout(self.convs(features[self.in_feature])))
