"""Training and evaluation loops: detectron2's DefaultTrainer with d2seg's data-driven choices.

``Trainer`` is imported on first use, so the torch-free parts of the package
(``d2seg.engine.predict`` serving an exported model) start without detectron2. The config made
ready for a dataset (``prepare_config``) lives in :mod:`d2seg.config.prepare`.
"""

from __future__ import annotations

import importlib

__all__ = ["Trainer"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("d2seg.engine.trainer"), name)
    raise AttributeError(f"module 'd2seg.engine' has no attribute {name!r}")
