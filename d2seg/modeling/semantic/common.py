"""Pieces the semantic heads share: norms for any width, upsampling to the input, the loss.

Every head here follows detectron2's ``SemanticSegmentor`` contract: ``forward(features,
targets)`` returns ``(None, {"loss_sem_seg": ...})`` in training and ``(logits, {})`` in
inference, with logits of shape (N, K, H, W) at the size of the padded input batch.
"""

from __future__ import annotations

import math

import torch
from detectron2.layers import get_norm
from torch import nn
from torch.nn import functional as F


def make_norm(norm: str, channels: int) -> nn.Module | None:
    """detectron2's ``get_norm``, except GN uses gcd(32, C) groups so narrow layers work too."""
    if norm == "GN":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    return get_norm(norm, channels)


def upsample_logits(logits: torch.Tensor, stride: int, size=None) -> torch.Tensor:
    """Logits at ``stride`` -> input resolution (bilinear), cropped to ``size`` when given.

    Scaling by the stride (rather than resizing to ``size``) keeps output pixel i on the input
    pixel the features were computed for; training and inference therefore see the same
    geometry even when an image is not a multiple of the stride (the extra rows are cropped).
    """
    if stride != 1:
        logits = F.interpolate(logits, scale_factor=stride, mode="bilinear", align_corners=False)
    if size is not None:
        h, w = size
        if logits.shape[-2] < h or logits.shape[-1] < w:  # only when features were floored
            logits = F.interpolate(logits, size=(max(h, logits.shape[-2]), max(w, logits.shape[-1])),
                                   mode="bilinear", align_corners=False)
        logits = logits[..., :h, :w]
    return logits


def sem_seg_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_value: int,
                 loss_weight: float = 1.0) -> dict:
    """Pixel-mean cross entropy over labelled pixels; 0 (with a graph) when none is labelled."""
    logits = logits.float()  # half-precision cross entropy is unstable under AMP
    if not (targets != ignore_value).any():
        return {"loss_sem_seg": logits.sum() * 0.0}
    loss = F.cross_entropy(logits, targets, reduction="mean", ignore_index=ignore_value)
    return {"loss_sem_seg": loss * loss_weight}


class PixelHead(nn.Module):
    """A head whose ``layers(features)`` give logits at ``self.stride``; this adds the
    SemanticSegmentor contract (loss against targets in training, input-size logits otherwise).
    Subclasses set ``stride``, ``ignore_value`` and ``loss_weight``."""

    def layers(self, features):
        raise NotImplementedError

    def forward(self, features, targets=None):
        logits = self.layers(features)
        if self.training:
            logits = upsample_logits(logits, self.stride, targets.shape[-2:])
            return None, sem_seg_loss(logits, targets, self.ignore_value, self.loss_weight)
        return upsample_logits(logits, self.stride), {}
