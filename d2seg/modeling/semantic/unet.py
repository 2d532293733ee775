"""UNet (Ronneberger et al. 2015) as detectron2 components: an encoder backbone and a decoder head.

``build_unet_backbone`` (``MODEL.BACKBONE.NAME``): stage 0 is two 3x3 convs at full resolution
with ``BASE_CHANNELS`` channels; each of the ``DEPTH`` further stages max-pools by 2 and applies
two 3x3 convs, doubling the width (capped at ``MAX_CHANNELS`` when > 0). Stage k has stride 2**k
and is named ``res{k}`` (detectron2's stage names: res2 is stride 4 here too), so heads written
for ResNets (DeepLabV3+, FCN) also run on it. Every conv is followed by ``MODEL.UNET.NORM``
(GN with gcd(32, C) groups, BN, or "" for none, then a biased conv) and ReLU. Inputs are padded
to a multiple of the coarsest stride; stages deeper than the deepest of ``OUT_FEATURES`` are not built.

``UNetHead`` (``MODEL.SEM_SEG_HEAD.NAME``): starts at the coarsest feature of
``SEM_SEG_HEAD.IN_FEATURES`` (empty: every backbone output) and, finer level by finer level, upsamples (bilinear, or a
transposed conv with ``MODEL.UNET.UPSAMPLE: transpose``), concatenates the skip feature and
applies two 3x3 convs (``SEM_SEG_HEAD.NORM``) to ``MODEL.UNET.DECODER_CHANNELS[i]`` channels
(empty: each level's skip width, the symmetric UNet). A 1x1 conv gives the logits, upsampled
to the input when the finest feature has stride > 1 (e.g. res2..res5 of a MobileNetV2 backbone).
"""

from __future__ import annotations

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, SEM_SEG_HEADS_REGISTRY, Backbone
from torch import nn
from torch.nn import functional as F

from d2seg.errors import D2SegError
from d2seg.modeling.semantic.common import PixelHead, make_norm


def double_conv(in_channels: int, out_channels: int, norm: str) -> nn.Sequential:
    """Two 3x3 convs, each with norm (bias only without one) and ReLU."""
    layers = []
    for c_in in (in_channels, out_channels):
        conv = Conv2d(c_in, out_channels, 3, padding=1, bias=not norm,
                      norm=make_norm(norm, out_channels), activation=F.relu)
        weight_init.c2_msra_fill(conv)
        layers.append(conv)
    return nn.Sequential(*layers)


def unet_widths(depth: int, base_channels: int, max_channels: int = 0) -> list[int]:
    """Channels of stages 0..depth: base * 2**k, capped at max_channels when it is > 0."""
    widths = [base_channels * 2 ** k for k in range(depth + 1)]
    return [min(w, max_channels) for w in widths] if max_channels > 0 else widths


class UNetEncoder(Backbone):
    """The contracting path: stage k at stride 2**k, outputs named res0..res{depth}."""

    def __init__(self, in_channels: int = 3, *, depth: int = 4, base_channels: int = 32,
                 max_channels: int = 0, norm: str = "GN", out_features=None):
        super().__init__()
        if depth < 1:
            raise D2SegError(f"must be >= 1, got {depth}", where="MODEL.UNET.DEPTH")
        if base_channels < 1:
            raise D2SegError(f"must be >= 1, got {base_channels}", where="MODEL.UNET.BASE_CHANNELS")
        widths = unet_widths(depth, base_channels, max_channels)
        names = [f"res{k}" for k in range(depth + 1)]
        out_features = list(out_features) if out_features else names
        unknown = [f for f in out_features if f not in names]
        if unknown:
            raise D2SegError(f"unknown output features {unknown}", where="MODEL.UNET.OUT_FEATURES",
                             hint=f"with DEPTH {depth} choose among {', '.join(names)}")
        last = max(names.index(f) for f in out_features)  # stages past it would never run
        self.depth = last
        self.stages = nn.ModuleList()
        for k, width in enumerate(widths[:last + 1]):
            self.stages.append(double_conv(in_channels if k == 0 else widths[k - 1], width, norm))
        self._out_features = out_features
        self._out_feature_strides = {n: 2 ** k for k, n in enumerate(names) if n in out_features}
        self._out_feature_channels = {n: widths[k] for k, n in enumerate(names) if n in out_features}

    @property
    def size_divisibility(self) -> int:
        return 2 ** self.depth

    def forward(self, x):
        outputs = {}
        for k, stage in enumerate(self.stages):
            if k > 0:
                x = F.max_pool2d(x, 2)
            x = stage(x)
            if f"res{k}" in self._out_features:
                outputs[f"res{k}"] = x
        return outputs


@BACKBONE_REGISTRY.register()
def build_unet_backbone(cfg, input_shape: ShapeSpec) -> UNetEncoder:
    """``MODEL.BACKBONE.NAME: build_unet_backbone``: the encoder described by MODEL.UNET."""
    u = cfg.MODEL.UNET
    return UNetEncoder(input_shape.channels, depth=u.DEPTH, base_channels=u.BASE_CHANNELS,
                       max_channels=u.MAX_CHANNELS, norm=u.NORM, out_features=u.OUT_FEATURES)


class _UpBlock(nn.Module):
    """Upsample to the skip's size, concatenate it, two 3x3 convs."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, ratio: int,
                 mode: str, norm: str):
        super().__init__()
        self.mode = mode
        if mode == "transpose":
            self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=ratio, stride=ratio)
            in_channels = out_channels
        self.convs = double_conv(in_channels + skip_channels, out_channels, norm)

    def forward(self, x, skip):
        if self.mode == "transpose":
            x = self.up(x)
            if x.shape[-2:] != skip.shape[-2:]:  # odd sizes (no size divisibility): align
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        else:
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.convs(torch.cat([x, skip], dim=1))


@SEM_SEG_HEADS_REGISTRY.register()
class UNetHead(PixelHead):
    """The expanding path with skip connections, over any backbone's multi-scale features."""

    @configurable
    def __init__(self, input_shape: dict[str, ShapeSpec], *, num_classes: int,
                 decoder_channels=(), upsample: str = "bilinear", norm: str = "GN",
                 ignore_value: int = 255, loss_weight: float = 1.0):
        super().__init__()
        if len(input_shape) < 2:
            raise D2SegError(f"UNetHead needs at least two features, got {sorted(input_shape)}",
                             where="MODEL.SEM_SEG_HEAD.IN_FEATURES")
        if upsample not in ("bilinear", "transpose"):
            raise D2SegError(f"unknown upsampling {upsample!r}", where="MODEL.UNET.UPSAMPLE",
                             hint="use bilinear or transpose")
        ordered = sorted(input_shape.items(), key=lambda kv: kv[1].stride)  # finest first
        self.in_features = [k for k, _ in ordered]
        strides = [s.stride for _, s in ordered]
        channels = [s.channels for _, s in ordered]
        if len(set(strides)) != len(strides) or any(b % a for a, b in zip(strides, strides[1:])):
            raise D2SegError(f"features need distinct strides, each a multiple of the finer one; "
                             f"got {dict(zip(self.in_features, strides))}",
                             where="MODEL.SEM_SEG_HEAD.IN_FEATURES")
        decoder_channels = list(decoder_channels) or channels[:-1]
        if len(decoder_channels) != len(channels) - 1:
            raise D2SegError(f"needs {len(channels) - 1} values (one per skip level, finest "
                             f"first), got {len(decoder_channels)}", where="MODEL.UNET.DECODER_CHANNELS")
        self.stride = strides[0]
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        # blocks[i] brings level i+1's decoded feature down to level i (finest = 0)
        self.blocks = nn.ModuleList()
        for i in range(len(channels) - 1):
            above = channels[-1] if i == len(channels) - 2 else decoder_channels[i + 1]
            self.blocks.append(_UpBlock(above, channels[i], decoder_channels[i],
                                        strides[i + 1] // strides[i], upsample, norm))
        self.predictor = Conv2d(decoder_channels[0], num_classes, kernel_size=1)
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.zeros_(self.predictor.bias)

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        wanted = list(head.IN_FEATURES) or list(input_shape)
        missing = [f for f in wanted if f not in input_shape]
        if missing:
            raise D2SegError(f"names {missing}, which the backbone does not output "
                             f"(it has {sorted(input_shape)})", where="MODEL.SEM_SEG_HEAD.IN_FEATURES")
        return {
            "input_shape": {k: input_shape[k] for k in wanted},
            "num_classes": head.NUM_CLASSES,
            "decoder_channels": cfg.MODEL.UNET.DECODER_CHANNELS,
            "upsample": cfg.MODEL.UNET.UPSAMPLE,
            "norm": head.NORM,
            "ignore_value": head.IGNORE_VALUE,
            "loss_weight": head.LOSS_WEIGHT,
        }

    def layers(self, features):
        """Logits at the finest feature's stride."""
        x = features[self.in_features[-1]]
        for i in reversed(range(len(self.blocks))):
            x = self.blocks[i](x, features[self.in_features[i]])
        return self.predictor(x)
