"""d2seg's model components, registered into detectron2's registries on import.

``import d2seg.modeling`` registers the torchvision backbones (``build_torchvision_backbone``,
``build_torchvision_fpn_backbone``, ``build_torchvision_retinanet_fpn_backbone``) and the
semantic segmentation components of :mod:`d2seg.modeling.semantic` (FCN, UNet, DeepLab);
``add_modeling_config`` adds their keys; ``D2SegCheckpointer`` loads ``MODEL.WEIGHTS`` safely.
"""

from d2seg.modeling import semantic  # noqa: F401  (registers the semantic heads/backbones)
from d2seg.modeling import torchvision_backbone  # noqa: F401  (registers the backbones)
from d2seg.modeling.checkpoint import D2SegCheckpointer, LoadReport
from d2seg.modeling.config import add_modeling_config
from d2seg.modeling.safe_load import load_pickle_safely, load_torch_safely
from d2seg.modeling.torchvision_backbone import (
    TorchvisionBackbone,
    build_torchvision_backbone,
    build_torchvision_fpn_backbone,
    build_torchvision_retinanet_fpn_backbone,
)
from d2seg.modeling.weights import resolve_named_weights

__all__ = [
    "D2SegCheckpointer", "LoadReport", "TorchvisionBackbone", "add_modeling_config",
    "build_torchvision_backbone", "build_torchvision_fpn_backbone",
    "build_torchvision_retinanet_fpn_backbone", "load_pickle_safely", "load_torch_safely",
    "resolve_named_weights",
]
