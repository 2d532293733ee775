"""Map a torchvision classifier's state dict onto the backbone of a detectron2 model.

Two targets are recognised in the model:

* :class:`~d2seg.modeling.torchvision_backbone.TorchvisionBackbone` keeps torchvision's names
  under ``<module>.body.``, so the mapping is a prefix;
* detectron2's own :class:`~detectron2.modeling.backbone.ResNet` uses Caffe2-era names, so
  torchvision ResNet keys are renamed (``conv1 -> stem.conv1``, ``bn1 -> stem.conv1.norm``,
  ``layerI.J.convK -> res{I+1}.J.convK``, ``layerI.J.bnK -> res{I+1}.J.convK.norm``,
  ``layerI.J.downsample.0/1 -> res{I+1}.J.shortcut(.norm)``, ``fc -> linear``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from torch import nn

from d2seg.errors import D2SegError

_TORCHVISION_BLOCK = re.compile(r"^layer(\d)\.(\d+)\.(conv\d|bn\d|downsample\.[01])\.(\w+)$")
_TORCHVISION_STEM = {"conv1": "stem.conv1", "bn1": "stem.conv1.norm", "fc": "linear"}


def torchvision_resnet_to_detectron2(key: str) -> str | None:
    """detectron2 ResNet name of a torchvision ResNet key (None when it has no counterpart)."""
    module, _, tensor = key.rpartition(".")
    if module in _TORCHVISION_STEM:
        return f"{_TORCHVISION_STEM[module]}.{tensor}"
    match = _TORCHVISION_BLOCK.match(key)
    if match is None:
        return None
    layer, block, part, tensor = match.groups()
    part = {"downsample.0": "shortcut", "downsample.1": "shortcut.norm"}.get(part) or (
        part if part.startswith("conv") else f"conv{part[2:]}.norm")
    return f"res{int(layer) + 1}.{block}.{part}.{tensor}"


@dataclass
class Conversion:
    """A state dict renamed for the model, and what was mapped onto which module."""

    state_dict: dict
    targets: list[str] = field(default_factory=list)  # "backbone.bottom_up (torchvision resnet18)"
    unused: list[str] = field(default_factory=list)   # source keys with no place in the model


def looks_like_torchvision_classifier(state_dict: dict) -> bool:
    keys = set(state_dict)
    resnet = {"conv1.weight", "layer1.0.conv1.weight"} <= keys
    features = any(k.startswith("features.0.") for k in keys) and any(
        k.startswith(("classifier.", "features.1.")) for k in keys)
    return resnet or features


def convert_torchvision_classifier(state_dict: dict, model: nn.Module) -> Conversion:
    """Rename a torchvision classifier state dict for every backbone in ``model`` it fits."""
    from detectron2.modeling.backbone import ResNet

    from d2seg.modeling.torchvision_backbone import TorchvisionBackbone

    model_keys = set(model.state_dict())
    converted, targets, used = {}, [], set()
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, TorchvisionBackbone):
            mapping = {k: f"{prefix}body.{k}" for k in state_dict}
            label = f"{name or 'model'} (torchvision {module.arch})"
        elif isinstance(module, ResNet):
            _check_resnet_stride(module, name)
            mapping = {k: f"{prefix}{new}" for k in state_dict
                       if (new := torchvision_resnet_to_detectron2(k)) is not None}
            label = f"{name or 'model'} (detectron2 ResNet)"
        else:
            continue
        hits = {src: dst for src, dst in mapping.items() if dst in model_keys}
        if hits:
            targets.append(label)
            used.update(hits)
            converted.update({dst: state_dict[src] for src, dst in hits.items()})
    # BatchNorm counters have no place in FrozenBN/GN layers and mean nothing for the weights
    unused = sorted(k for k in set(state_dict) - used if not k.endswith("num_batches_tracked"))
    return Conversion(converted, targets, unused)


def _check_resnet_stride(resnet: nn.Module, name: str) -> None:
    """torchvision's Bottleneck strides in the 3x3 conv; detectron2's default strides in the 1x1."""
    block = getattr(resnet, "res3", None)
    first = block[0] if block is not None and len(block) else None
    conv1 = getattr(first, "conv1", None)
    if conv1 is not None and hasattr(first, "conv3") and tuple(conv1.stride) != (1, 1):
        raise D2SegError("torchvision ResNet weights need the stride in the 3x3 conv, but "
                         f"{name or 'the model'} strides in the 1x1 conv",
                         where="MODEL.RESNETS.STRIDE_IN_1X1",
                         hint="set MODEL.RESNETS.STRIDE_IN_1X1 False")
