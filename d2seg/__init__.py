"""d2seg: instance, semantic and panoptic segmentation on your own data, built on detectron2.

The public API is re-exported here lazily: ``python -m d2seg.compat.installer`` must run before
detectron2 or torch are installed, so nothing heavy is imported until a name is used.

    import d2seg
    d2seg.register_datasets()                      # every manifest in datasets/ and $D2SEG_DATASETS
    cfg = d2seg.load_config("configs/instance/mask_rcnn_MNV2_FPN_cpu_quick.yaml")
    report = d2seg.evaluate_coco("gt.json", "results.json")
    panoptic, segments = d2seg.combine_panoptic(instances, semantic)
    picture = d2seg.draw_instances(image_bgr, masks, boxes, classes, scores, class_names)
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "D2SegError": "d2seg.errors",
    "register_datasets": "d2seg.data.register",
    "find_manifest": "d2seg.data.manifest",
    "load_manifest": "d2seg.data.manifest",
    "get_cfg": "d2seg.config",
    "load_config": "d2seg.config",
    "add_d2seg_config": "d2seg.config",
    "Trainer": "d2seg.engine.trainer",
    "prepare_config": "d2seg.config.prepare",
    "BatchPredictor": "d2seg.engine.predict",
    "predict": "d2seg.engine.predict",
    "evaluate_coco": "d2seg.evaluation.coco",
    "pq_compute_folders": "d2seg.evaluation.panoptic_quality",
    "semantic_metrics": "d2seg.evaluation.semantic_metrics",
    "combine_panoptic": "d2seg.panoptic",
    "export_coco_panoptic": "d2seg.panoptic.export",
    "draw_instances": "d2seg.visualize",
    "draw_panoptic": "d2seg.visualize",
    "draw_semantic": "d2seg.visualize",
    "side_by_side": "d2seg.visualize",
    "merge_coco": "d2seg.data.merge",
    "suggest": "d2seg.label.suggest",
    "rank_pool": "d2seg.label.next",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'd2seg' has no attribute {name!r}")
