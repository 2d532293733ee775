"""Panoptic outputs: combine instance and semantic predictions, export COCO panoptic.

``combine`` turns any pair of instance and semantic predictions into a panoptic map with the
published heuristic (identical to detectron2's Panoptic FPN inference); ``export`` writes the
result as COCO panoptic PNGs + JSON that panopticapi and detectron2 read.
"""

from d2seg.panoptic.combine import (
    InstancePredictions,
    PanopticPrediction,
    combine_panoptic,
    instances_from_coco_results,
    semantic_labels,
)

__all__ = ["InstancePredictions", "PanopticPrediction", "combine_panoptic",
           "instances_from_coco_results", "semantic_labels"]
