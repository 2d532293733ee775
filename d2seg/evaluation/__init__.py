"""Metrics: COCO AP (pycocotools-exact), panoptic quality, semantic segmentation metrics, plots."""
