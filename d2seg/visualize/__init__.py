"""The fast OpenCV renderer: instances, panoptic and semantic maps, layouts, whole folders and
registered datasets (``visualize_dataset``: ground truth beside a results JSON, or beside a
model given by ``d2seg.runners.visualize``).

Import-light: OpenCV and pycocotools load with this package; torch and detectron2 are only
touched when their objects are passed in.
"""

from d2seg.visualize.colours import class_colors, instance_shade
from d2seg.visualize.datasets import visualize_dataset
from d2seg.visualize.files import visualize_coco, visualize_panoptic
from d2seg.visualize.inputs import (
    InstanceSet, annotations_from_coco, instances_from_coco_results, instances_from_detectron2,
    panoptic_from_detectron2,
)
from d2seg.visualize.render import (
    draw_instances, draw_panoptic, draw_semantic, montage, side_by_side,
)

__all__ = [
    "class_colors", "instance_shade", "draw_instances", "draw_panoptic", "draw_semantic",
    "side_by_side", "montage", "InstanceSet", "annotations_from_coco",
    "instances_from_coco_results", "instances_from_detectron2", "panoptic_from_detectron2",
    "visualize_coco",
    "visualize_panoptic",
    "visualize_dataset",
]
