"""torchvision classification models as detectron2 backbones (with or without an FPN).

The torchvision model is kept whole under ``body`` (classifier removed), so its parameter
names stay torchvision's: ImageNet checkpoints load with a prefix and nothing else. Its layers
are grouped into stages by output stride and exposed under detectron2's ResNet names:

    stem  stride 2 (MobileNet/EfficientNet) or 4 (ResNet), never an output
    res2  stride 4      res3  stride 8      res4  stride 16      res5  stride 32

ResNet-like models (``conv1, bn1, layer1..layer4``) are split at their layers; models with a
``features`` sequence (MobileNet V2/V3, EfficientNet) are split where the stride changes,
found by running a small probe image through the blocks once at build time.
"""

from __future__ import annotations

import difflib
import logging
import math

import torch
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool, LastLevelP6P7
from torch import nn

from d2seg.errors import D2SegError
from d2seg.modeling.config import TORCHVISION_NORMS

logger = logging.getLogger(__name__)

STAGE_NAMES = ("stem", "res2", "res3", "res4", "res5")
_RESNET_STAGES = {"stem": ("conv1", "bn1", "relu", "maxpool"), "res2": ("layer1",),
                  "res3": ("layer2",), "res4": ("layer3",), "res5": ("layer4",)}


def classification_models() -> list[str]:
    """Names of torchvision's classification models (the ones ``ARCH`` may name)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _build_torchvision_model(arch: str) -> nn.Module:
    import torchvision

    names = classification_models()
    if arch not in names:
        close = difflib.get_close_matches(arch, names, n=3)
        raise D2SegError(f"unknown torchvision model {arch!r}", where="MODEL.TORCHVISION.ARCH",
                         hint=f"did you mean {' or '.join(close)}?" if close else
                         "see torchvision.models.list_models()")
    # weights=None: pretrained weights come through MODEL.WEIGHTS, never from the network
    return torchvision.models.get_model(arch, weights=None)


def _group_norm_like(bn: nn.modules.batchnorm._BatchNorm) -> nn.GroupNorm:
    channels = bn.num_features
    return nn.GroupNorm(math.gcd(32, channels), channels, eps=bn.eps)


def _replace_batchnorms(module: nn.Module, make) -> nn.Module:
    """Swap every BatchNorm in ``module`` for ``make(bn)``; returns the (possibly new) root."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return make(module)
    for name, child in module.named_children():
        new = _replace_batchnorms(child, make)
        if new is not child:
            setattr(module, name, new)
    return module


def apply_norm(module: nn.Module, norm: str) -> nn.Module:
    """Turn the BatchNorms a torchvision model is built with into the requested norm.

    Converted after building so each layer keeps the eps its architecture was trained with
    (MobileNetV3 and EfficientNet use 1e-3).
    """
    if norm not in TORCHVISION_NORMS:
        raise D2SegError(f"unknown norm {norm!r}", where="MODEL.TORCHVISION.NORM",
                         hint=f"use one of {', '.join(TORCHVISION_NORMS)}")
    if norm == "FrozenBN":
        return FrozenBatchNorm2d.convert_frozen_batchnorm(module)
    if norm == "SyncBN":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if norm == "GN":
        return _replace_batchnorms(module, _group_norm_like)
    return module


def _features_stages(body: nn.Module) -> dict[str, tuple[str, ...]]:
    """Group ``body.features`` blocks by the stride of their output, probed with one image."""
    stages: dict[str, list[str]] = {name: [] for name in STAGE_NAMES}
    was_training = body.training
    body.eval()
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        for index, block in enumerate(body.features):
            x = block(x)
            stride = 64 // x.shape[-1]
            level = int(math.log2(stride))
            if 2 ** level != stride or level > 5:
                raise D2SegError(f"block features.{index} has output stride {stride}",
                                 where="MODEL.TORCHVISION.ARCH",
                                 hint="only models whose strides are 2, 4, 8, 16, 32 are supported")
            stages["stem" if level <= 1 else f"res{level}"].append(f"features.{index}")
    body.train(was_training)
    return {name: tuple(blocks) for name, blocks in stages.items()}


class TorchvisionBackbone(Backbone):
    """A torchvision classifier's convolutional trunk, returning the requested stages."""

    def __init__(self, arch: str, out_features=("res2", "res3", "res4", "res5"),
                 norm: str = "FrozenBN", freeze_at: int = 0):
        super().__init__()
        body = _build_torchvision_model(arch)
        if all(hasattr(body, f"layer{i}") for i in range(1, 5)):
            stages = dict(_RESNET_STAGES)
            body.fc = nn.Identity()
        elif isinstance(getattr(body, "features", None), nn.Sequential):
            stages = _features_stages(body)
            body.classifier = nn.Identity()
        else:
            raise D2SegError(f"torchvision model {arch!r} has neither layer1..layer4 nor a "
                             "'features' sequence", where="MODEL.TORCHVISION.ARCH",
                             hint="use a ResNet, ResNeXt, MobileNet or EfficientNet")
        unknown = [f for f in out_features if f not in STAGE_NAMES[1:]]
        if unknown or not out_features:
            raise D2SegError(f"unknown output features {unknown or list(out_features)}",
                             where="MODEL.TORCHVISION.OUT_FEATURES",
                             hint="choose among res2, res3, res4, res5")
        self.arch = arch
        self.body = apply_norm(body, norm)
        self._stages = stages
        self._out_features = list(out_features)
        self._freeze(freeze_at)
        self._out_feature_strides, self._out_feature_channels = self._probe_shapes()

    def _stage_modules(self, stage: str):
        return [self.body.get_submodule(path) for path in self._stages[stage]]

    def _freeze(self, freeze_at: int) -> None:
        """Freeze the stem (freeze_at >= 1) and res2..res{freeze_at}, as detectron2's ResNet does."""
        for stage in STAGE_NAMES[:max(freeze_at, 0)]:
            for path in self._stages[stage]:
                module = self.body.get_submodule(path)
                for p in module.parameters():
                    p.requires_grad_(False)
                frozen = FrozenBatchNorm2d.convert_frozen_batchnorm(module)
                if frozen is not module:
                    parent, _, attr = path.rpartition(".")
                    setattr(self.body.get_submodule(parent) if parent else self.body, attr, frozen)

    def _probe_shapes(self):
        was_training = self.training
        self.eval()
        with torch.no_grad():
            feats = self._run(torch.zeros(1, 3, 64, 64), STAGE_NAMES[1:])
        self.train(was_training)
        strides = {k: 64 // v.shape[-1] for k, v in feats.items()}
        channels = {k: v.shape[1] for k, v in feats.items()}
        for name, stride in strides.items():
            if stride != 2 ** int(name[-1]):
                raise D2SegError(f"{self.arch}: stage {name} has stride {stride}, expected "
                                 f"{2 ** int(name[-1])}", where="MODEL.TORCHVISION.ARCH")
        return strides, channels

    def _run(self, x, wanted):
        outputs = {}
        last = max(STAGE_NAMES.index(w) for w in wanted)
        for stage in STAGE_NAMES[:last + 1]:
            for module in self._stage_modules(stage):
                x = module(x)
            if stage in wanted:
                outputs[stage] = x
        return outputs

    def forward(self, x):
        return self._run(x, self._out_features)


def _check_input(input_shape: ShapeSpec) -> None:
    if input_shape.channels != 3:
        raise D2SegError(f"torchvision backbones take 3-channel images, got {input_shape.channels}",
                         where="MODEL.PIXEL_MEAN", hint="give 3 values in MODEL.PIXEL_MEAN/STD")


def torchvision_trunk(cfg, input_shape: ShapeSpec, cls=None) -> TorchvisionBackbone:
    """The MODEL.TORCHVISION stages as ``cls`` (a TorchvisionBackbone or subclass), checked."""
    _check_input(input_shape)
    tv = cfg.MODEL.TORCHVISION
    if tv.NORM == "FrozenBN" and not cfg.MODEL.WEIGHTS:
        logger.warning("MODEL.TORCHVISION.NORM is FrozenBN but MODEL.WEIGHTS is empty: nothing "
                       "will normalise activations when training from scratch; use GN or BN")
    return (cls or TorchvisionBackbone)(tv.ARCH, tv.OUT_FEATURES, tv.NORM,
                                        cfg.MODEL.BACKBONE.FREEZE_AT)


@BACKBONE_REGISTRY.register()
def build_torchvision_backbone(cfg, input_shape: ShapeSpec) -> TorchvisionBackbone:
    """``MODEL.BACKBONE.NAME: build_torchvision_backbone``: the stages in MODEL.TORCHVISION."""
    return torchvision_trunk(cfg, input_shape)


def _fpn(cfg, bottom_up: TorchvisionBackbone, top_block) -> FPN:
    # empty MODEL.FPN.IN_FEATURES (detectron2's default) means every backbone output
    in_features = list(cfg.MODEL.FPN.IN_FEATURES) or list(bottom_up.output_shape())
    missing = [f for f in in_features if f not in bottom_up.output_shape()]
    if missing:
        raise D2SegError(f"MODEL.FPN.IN_FEATURES names {missing}, which the backbone does not "
                         "output", where="MODEL.TORCHVISION.OUT_FEATURES",
                         hint=f"add {missing} to MODEL.TORCHVISION.OUT_FEATURES")
    return FPN(bottom_up=bottom_up, in_features=in_features,
               out_channels=cfg.MODEL.FPN.OUT_CHANNELS, norm=cfg.MODEL.FPN.NORM,
               top_block=top_block, fuse_type=cfg.MODEL.FPN.FUSE_TYPE)


@BACKBONE_REGISTRY.register()
def build_torchvision_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """detectron2's FPN (P2-P6, P6 by max-pooling) over a torchvision backbone: Mask R-CNN."""
    return _fpn(cfg, build_torchvision_backbone(cfg, input_shape), LastLevelMaxPool())


@BACKBONE_REGISTRY.register()
def build_torchvision_retinanet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """detectron2's FPN with P6/P7 from the stride-32 stage, as RetinaNet uses it."""
    bottom_up = build_torchvision_backbone(cfg, input_shape)
    top_in = (list(cfg.MODEL.FPN.IN_FEATURES) or list(bottom_up.output_shape()))[-1]
    in_channels = bottom_up.output_shape()[top_in].channels if top_in in bottom_up.output_shape() else 0
    return _fpn(cfg, bottom_up, LastLevelP6P7(in_channels, cfg.MODEL.FPN.OUT_CHANNELS, top_in))
