"""Understand a model's mistakes: TIDE-style error breakdown (dAP per error type), per-class
precision/recall/F1, per-image AP and the worst images drawn.

Import-light (numpy, pycocotools; matplotlib and OpenCV only when writing plots/drawings); no
torch or detectron2.
"""

from d2seg.analysis.analyze import analyze
from d2seg.analysis.dataset import dataset_files
from d2seg.analysis.tide import ERROR_TYPES, SPECIAL_TYPES, TideRun, run_tide

__all__ = ["analyze", "dataset_files", "run_tide", "TideRun", "ERROR_TYPES", "SPECIAL_TYPES"]
