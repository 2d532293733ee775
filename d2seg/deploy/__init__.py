"""Exported models: ``d2seg export`` writes a folder (model.onnx + model.json), ``load`` serves it.

``load`` and the predictor it returns use onnxruntime (or OpenVINO), numpy, Pillow and OpenCV
only: neither torch nor detectron2 is imported (the exporter, :mod:`d2seg.deploy.export`, needs
both).

    from d2seg.deploy import load
    predictor = load("runs/export")
    result = predictor(image_bgr)        # at the image's size; by task:
    # instances: {"boxes", "scores", "classes", "masks"}
    # semantic:  {"sem_seg"} (H, W) class indices
    # panoptic:  {"instances", "sem_seg", "panoptic_seg": (segment id map, segments)}
    results = predictor([image1, image2])  # a list in, a list out (any sizes)
"""

from __future__ import annotations

FORMAT = "d2seg-export"
FORMAT_VERSION = 1  # the newest model.json layout this d2seg reads (and the one it writes)
TASKS = ("instances", "semantic", "panoptic")  # what an export folder may serve


def load(folder, threads: int | None = None, *, task: str | None = None,
         backend: str = "onnxruntime", min_score: float | None = None):
    """The predictor of an export folder (see :func:`d2seg.deploy.runtime.load`)."""
    from d2seg.deploy.runtime import load as _load

    return _load(folder, threads=threads, task=task, backend=backend, min_score=min_score)


__all__ = ["FORMAT", "FORMAT_VERSION", "TASKS", "load"]
