"""d2seg: instance, semantic and panoptic segmentation on your own data, built on detectron2.

Kept import-light: ``python -m d2seg.compat.installer`` must run before detectron2 or torch
are installed, so heavy modules are imported where they are used.
"""

__version__ = "0.1.0"
