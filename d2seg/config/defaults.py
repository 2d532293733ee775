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
    # A loss (or RPN proposals) that becomes NaN/Inf: "stop" ends training with one error line;
    # "recover" reloads the last good periodic checkpoint of this run (before any: the weights
    # training started from), multiplies the learning rate by RECOVER_LR_FACTOR, says so in one
    # warning line and goes on, at most RECOVER_MAX_TIMES times (then it stops as "stop" does).
    # Single-process training only (several processes: "stop").
    cfg.D2SEG.ON_DIVERGENCE = "stop"
    cfg.D2SEG.RECOVER_LR_FACTOR = 0.5
    cfg.D2SEG.RECOVER_MAX_TIMES = 3
    # Early stopping: stop training when D2SEG.BEST_METRIC has not improved by more than
    # MIN_DELTA (on the value of the last evaluation that did improve) for PATIENCE evaluations
    # in a row (0: off). model_best.pth is kept, model_final.pth is written at the stop, and the
    # counters travel in checkpoints, so --resume stops where an uninterrupted run would.
    cfg.D2SEG.EARLY_STOP = CN()
    cfg.D2SEG.EARLY_STOP.PATIENCE = 0
    cfg.D2SEG.EARLY_STOP.MIN_DELTA = 0.0
    # Validation loss: every VAL_LOSS_PERIOD iterations (0: off) and at the end, the training
    # losses on DATASETS.TEST[0] (its first VAL_LOSS_MAX_IMAGES images; 0: all), logged as
    # val_total_loss and val_<loss> (metrics.json, TensorBoard). D2SEG.BEST_METRIC may name
    # one (with D2SEG.BEST_MODE min). See d2seg.engine.hooks.ValidationLoss.
    cfg.TEST.VAL_LOSS_PERIOD = 0
    cfg.TEST.VAL_LOSS_MAX_IMAGES = 0
    # At the end of training: report/ (metrics, PR curves, confusion), analysis/ (error
    # breakdown, worst images) and report.html from the last evaluation (d2seg.engine.run_report).
    cfg.D2SEG.RUN_REPORT = True
    # MODEL.DEVICE may be "auto": CUDA when available, else CPU (resolved by prepare_config).
    add_modeling_config(cfg)
    return cfg
