"""Exported models: ``d2seg export`` writes a folder (the model file + model.json), ``load``
serves it.

An ONNX export (model.onnx) is served by onnxruntime (or OpenVINO), numpy, Pillow and OpenCV
only: neither torch nor detectron2 is imported. A TorchScript export (model.ts) is served by
torch and torchvision (its nms/roi_align ops), without detectron2. The exporter,
:mod:`d2seg.deploy.export`, needs torch and detectron2.

    from d2seg.deploy import load
    predictor = load("runs/export")      # the backend follows the folder's format
    result = predictor(image_bgr)        # at the image's size; by task:
    # instances: {"boxes", "scores", "classes", "masks"}
    # semantic:  {"sem_seg"} (H, W) class indices
    # panoptic:  {"instances", "sem_seg", "panoptic_seg": (segment id map, segments)}
    results = predictor([image1, image2])  # a list in, a list out (any sizes)
"""

from __future__ import annotations

FORMAT = "d2seg-export"
# the newest model.json layout this d2seg reads. It writes version 1 for ONNX (readable by a
# d2seg from before TorchScript exports) and 2 for TorchScript (refused by such a d2seg, which
# would hand model.ts to onnxruntime)
FORMAT_VERSION = 2
TASKS = ("instances", "semantic", "panoptic")  # what an export folder may serve
# each backend that serves export folders: the distribution providing it, how to install it,
# and the plain pip alternative to the d2seg extra (None: the command names the packages)
BACKEND_PACKAGES = {"onnxruntime": ("onnxruntime", "pip install 'd2seg[deploy]'", "onnxruntime"),
                    "openvino": ("openvino", "pip install 'd2seg[openvino]'", "openvino"),
                    "torchscript": ("torch", "pip install torch torchvision", None)}


def load(folder, threads: int | None = None, *, task: str | None = None,
         backend: str | None = None, min_score: float | None = None):
    """The predictor of an export folder (see :func:`d2seg.deploy.runtime.load`)."""
    from d2seg.deploy.runtime import load as _load

    return _load(folder, threads=threads, task=task, backend=backend, min_score=min_score)


__all__ = ["BACKEND_PACKAGES", "FORMAT", "FORMAT_VERSION", "TASKS", "load"]
