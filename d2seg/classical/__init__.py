"""Classical segmentation that writes what the models write (COCO results, semantic PNGs).

GrabCut from boxes and watershed give COCO instance results with RLE masks; SLIC and
Felzenszwalb superpixels turn a semantic prediction or sparse labels into label maps by
majority vote. ``d2seg eval`` and ``d2seg visualize`` read the outputs unchanged.
"""

from d2seg.classical.coco_io import label_map_to_results, mask_to_result
from d2seg.classical.grabcut import grabcut_box, grabcut_coco
from d2seg.classical.superpixels import (
    METHODS as SUPERPIXEL_METHODS, refine_folder, refine_semantic, superpixel_labels, vote,
)
from d2seg.classical.watershed import (
    foreground_mask, watershed_folder, watershed_instances, watershed_labels,
)

__all__ = [
    "grabcut_box", "grabcut_coco",
    "foreground_mask", "watershed_labels", "watershed_instances", "watershed_folder",
    "SUPERPIXEL_METHODS", "superpixel_labels", "vote", "refine_semantic", "refine_folder",
    "mask_to_result", "label_map_to_results",
]
