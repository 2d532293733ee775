"""The keys d2seg adds to detectron2's config, in one place (detectron2's add_*_config convention)."""

from __future__ import annotations

from detectron2.config import CfgNode as CN

from d2seg.modeling.config import add_modeling_config


def add_d2seg_config(cfg: CN) -> CN:
    """Add d2seg's keys (and those of the components it registers) to a detectron2 config."""
    cfg.D2SEG = CN()
    # Metric that decides which checkpoint is kept as model_best.pth ("" disables).
    cfg.D2SEG.BEST_METRIC = "segm/AP"
    cfg.D2SEG.BEST_MODE = "max"
    # Show a progress bar with ETA and losses during training (off when not a terminal).
    cfg.D2SEG.PROGRESS_BAR = True
    # Derive MODEL.*.NUM_CLASSES and INPUT.MASK_FORMAT from the training data.
    cfg.D2SEG.CLASSES_FROM_DATA = True
    # Mixed precision: "auto" turns SOLVER.AMP on when training on a GPU.
    cfg.D2SEG.AMP = "auto"
    # MODEL.DEVICE may be "auto": CUDA when available, else CPU (resolved by prepare_config).
    add_modeling_config(cfg)
    return cfg
