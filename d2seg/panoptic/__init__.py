"""Panoptic outputs: combine instance and semantic predictions, export COCO panoptic, read it.

``combine`` turns any pair of instance and semantic predictions into a panoptic map with the
published heuristic (identical to detectron2's Panoptic FPN inference); ``export`` writes the
result as COCO panoptic PNGs + JSON that panopticapi and detectron2 read (``d2seg.io.panoptic_png``
reads such PNGs back). The names below load ``combine`` (and torch) on first use only, so that PQ
evaluation and the PNG reader start without torch.
"""

import importlib

__all__ = ["InstancePredictions", "PanopticPrediction", "combine_panoptic",
           "instances_from_coco_results", "semantic_labels"]


def __getattr__(name):
    if name in __all__:
        return getattr(importlib.import_module("d2seg.panoptic.combine"), name)
    raise AttributeError(f"module 'd2seg.panoptic' has no attribute {name!r}")
