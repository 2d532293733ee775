"""Exported models: ``d2seg export`` writes a folder (model.onnx + model.json), ``load`` serves it.

``load`` and the predictor it returns use onnxruntime, numpy, Pillow and OpenCV only: neither
torch nor detectron2 is imported (the exporter, :mod:`d2seg.deploy.export`, needs both).

    from d2seg.deploy import load
    predictor = load("runs/export")
    result = predictor(image_bgr)   # {"boxes", "scores", "classes", "masks"} at the image's size
"""

from __future__ import annotations

FORMAT = "d2seg-export"
FORMAT_VERSION = 1  # the newest model.json layout this d2seg reads (and the one it writes)
TASKS = ("instances",)  # what an export folder may serve today (Mask R-CNN)


def load(folder, threads: int | None = None):
    """The predictor of an export folder (see :class:`d2seg.deploy.runtime.OnnxInstancePredictor`)."""
    from d2seg.deploy.runtime import load as _load

    return _load(folder, threads=threads)


__all__ = ["FORMAT", "FORMAT_VERSION", "TASKS", "load"]
