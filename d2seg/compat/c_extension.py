"""The API of detectron2's compiled extension ``detectron2._C``, served by PyTorch and numpy.

The ``detectron2/_C.py`` that d2seg's installer writes re-exports this module, so
``detectron2.layers``, ``detectron2.modeling`` and ``detectron2.evaluation`` import in any order
without a C++ build. Importing it also registers the operators detectron2 reaches through
``torch.ops.detectron2.*`` (``nms_rotated`` and friends).
"""

from __future__ import annotations

import torch

from d2seg.compat.torch_ops.cocoeval import (  # noqa: F401  (re-exported)
    COCOevalAccumulate,
    COCOevalEvaluateImages,
    InstanceAnnotation,
)
from d2seg.compat.torch_ops.deform import (  # noqa: F401
    deform_conv_backward_filter,
    deform_conv_backward_input,
    deform_conv_forward,
    modulated_deform_conv_backward,
    modulated_deform_conv_forward,
)
from d2seg.compat.torch_ops.rotated import (  # noqa: F401
    box_iou_rotated,
    nms_rotated,
    roi_align_rotated_backward,
    roi_align_rotated_forward,
)

#: Tells ``d2seg doctor`` (and anyone else) that these are not compiled kernels.
IMPLEMENTATION = "pytorch"
#: Read by the rewritten ``detectron2/layers/deform_conv.py``: these operators work on CPU too.
RUNS_ON_CPU = True


def get_compiler_version() -> str:
    """Read by detectron2's ``collect_env``: there is no compiler involved."""
    return "none (d2seg PyTorch operators)"


def get_cuda_version() -> str:
    """Read by ``collect_env``: the operators run on whatever device torch uses."""
    return "none (d2seg PyTorch operators)"


def has_cuda() -> bool:
    """False: no CUDA kernels were compiled (stops ``collect_env`` probing arch flags)."""
    return False


_SCHEMAS = {
    "nms_rotated": ("nms_rotated(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor", nms_rotated),
    "box_iou_rotated": ("box_iou_rotated(Tensor boxes1, Tensor boxes2) -> Tensor", box_iou_rotated),
    "roi_align_rotated_forward": (
        "roi_align_rotated_forward(Tensor input, Tensor rois, float spatial_scale, "
        "int pooled_height, int pooled_width, int sampling_ratio) -> Tensor",
        roi_align_rotated_forward,
    ),
    "roi_align_rotated_backward": (
        "roi_align_rotated_backward(Tensor grad, Tensor rois, float spatial_scale, "
        "int pooled_height, int pooled_width, int batch_size, int channels, int height, "
        "int width, int sampling_ratio) -> Tensor",
        roi_align_rotated_backward,
    ),
}


def _register_torch_ops() -> torch.library.Library | None:
    """Define ``torch.ops.detectron2.*`` unless something (a compiled build) already did."""
    namespace = torch.ops.detectron2
    missing = [name for name in _SCHEMAS if not _has_op(namespace, name)]
    if not missing:
        return None
    library = torch.library.Library("detectron2", "FRAGMENT")
    for name in missing:
        schema, fn = _SCHEMAS[name]
        library.define(schema)
        library.impl(name, fn, "CompositeExplicitAutograd")
    return library


def _has_op(namespace, name: str) -> bool:
    try:
        getattr(namespace, name)
    except (AttributeError, RuntimeError):
        return False
    return True


_LIBRARY = _register_torch_ops()  # kept referenced: the registration lives as long as it does
