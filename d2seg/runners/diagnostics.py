"""What ``d2seg doctor`` reports: versions, device, which operators serve detectron2, a self-check.

Kept apart from the CLI so tests and users can call it; every check returns data, never prints.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
import time
from dataclasses import dataclass

from d2seg.deploy import BACKEND_PACKAGES

PACKAGES = {
    "torch": "torch",
    "torchvision": "torchvision",
    "detectron2": "detectron2",
    "numpy": "numpy",
    "Pillow": "Pillow",
    "OpenCV": "opencv-python-headless",
    "pycocotools": "pycocotools",
    "fvcore": "fvcore",
}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    seconds: float = 0.0


def versions() -> dict[str, str]:
    """Installed versions of what d2seg depends on ("missing" where absent)."""
    found = {"python": platform.python_version()}
    for label, dist in PACKAGES.items():
        try:
            found[label] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            if label == "OpenCV":  # any of the opencv-python wheels will do
                try:
                    found[label] = importlib.import_module("cv2").__version__
                    continue
                except ImportError:
                    pass
            found[label] = "missing"
    return found


def deploy_backends() -> dict[str, str]:
    """Each export backend's installed version, or how to install it (read from the
    distributions' metadata: no backend is imported)."""
    found = {}
    for backend, (dist, install, _) in BACKEND_PACKAGES.items():
        try:
            found[backend] = f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            found[backend] = f"not installed ({install})"
    return found


def lock_status() -> str:
    """Whether this environment has the versions d2seg's suite last passed with (the lock)."""
    from d2seg.compat import lock

    if not lock.LOCK_FILE.is_file():
        return "no lock file shipped with this d2seg"
    problems = lock.differences(lock.read_lock(), lock.installed_versions())
    if not problems:
        return f"as tested (all {len(lock.read_lock())} pins of the lock)"
    return (f"{len(problems)} differ from the tested lock, e.g. {problems[0]} "
            "(list: python -m d2seg.compat.lock check)")


def device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"CUDA {torch.version.cuda}: {torch.cuda.get_device_name(0)}"
    return f"CPU ({torch.get_num_threads()} threads)"


def png_decoder() -> str:
    """Which decoder reads panoptic PNGs (Wuffs from the optional pywuffs, or OpenCV)."""
    from d2seg.io.panoptic_png import decoder_name

    return decoder_name()


def detectron2_ops() -> str:
    """Which implementation serves ``detectron2._C``: compiled C++/CUDA, or d2seg's PyTorch."""
    try:
        ext = importlib.import_module("detectron2._C")
    except ImportError as e:
        return f"missing ({e})"
    if getattr(ext, "IMPLEMENTATION", None) == "pytorch":
        return "PyTorch (d2seg.compat, no compiled extension)"
    return f"compiled ({ext.__file__})"


def _timed(name: str, fn) -> Check:
    start = time.perf_counter()
    try:
        detail = fn()
        ok = True
    except Exception as e:  # a self-check reports every failure instead of stopping
        detail, ok = f"{type(e).__name__}: {e}", False
    return Check(name, ok, detail, time.perf_counter() - start)


def _check_imports() -> str:
    for module in ("detectron2.layers", "detectron2.modeling", "detectron2.evaluation",
                   "detectron2.data", "detectron2.engine", "detectron2.model_zoo"):
        importlib.import_module(module)
    return "detectron2.layers, modeling, evaluation, data, engine, model_zoo"


def _check_ops() -> str:
    import torch
    from detectron2.layers import nms_rotated
    from detectron2.layers.rotated_boxes import pairwise_iou_rotated

    boxes = torch.tensor([[10.0, 10, 8, 4, 30], [10.0, 10, 8, 4, 30], [40.0, 40, 6, 6, -45]])
    iou = pairwise_iou_rotated(boxes, boxes)
    if not torch.allclose(iou.diagonal(), torch.ones(3), atol=1e-4) or iou[0, 2] != 0:
        raise RuntimeError(f"rotated IoU is wrong: {iou.tolist()}")
    keep = nms_rotated(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    if keep.tolist() != [0, 2]:
        raise RuntimeError(f"nms_rotated kept {keep.tolist()}, expected [0, 2]")
    return "rotated IoU and NMS agree with hand-checked values"


def tiny_mask_rcnn_cfg(device_name: str = "cpu", size: int = 160):
    """A from-scratch GroupNorm ResNet-18 FPN Mask R-CNN config, small enough for a CPU."""
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = device_name
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.NORM = "GN"
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.FPN.NORM = "GN"
    cfg.MODEL.FPN.OUT_CHANNELS = 64
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 64
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 256
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 2
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 64
    cfg.INPUT.MIN_SIZE_TRAIN = (size,)
    cfg.INPUT.MAX_SIZE_TRAIN = size * 2
    cfg.INPUT.MIN_SIZE_TEST = size
    cfg.INPUT.MAX_SIZE_TEST = size * 2
    cfg.INPUT.MASK_FORMAT = "bitmask"
    return cfg


def _check_mask_rcnn() -> str:
    import numpy as np
    import torch
    from detectron2.modeling import build_model
    from detectron2.structures import BitMasks, Boxes, Instances
    from detectron2.utils.events import EventStorage

    torch.manual_seed(0)
    cfg = tiny_mask_rcnn_cfg("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(cfg)
    image = np.zeros((160, 200, 3), np.uint8)
    image[40:100, 50:130] = (30, 200, 90)
    tensor = torch.as_tensor(image.transpose(2, 0, 1).copy())
    mask = torch.zeros(1, 160, 200, dtype=torch.bool)
    mask[0, 40:100, 50:130] = True
    gt = Instances((160, 200), gt_boxes=Boxes(torch.tensor([[50.0, 40, 130, 100]])),
                   gt_classes=torch.tensor([1]), gt_masks=BitMasks(mask))
    model.train()
    with EventStorage():
        losses = model([{"image": tensor, "instances": gt}])
    total = sum(losses.values())
    if not torch.isfinite(total):
        raise RuntimeError(f"training losses are not finite: {losses}")
    total.backward()
    total = total.detach()
    model.eval()
    with torch.no_grad():
        out = model([{"image": tensor, "height": 160, "width": 200}])[0]["instances"]
    if not out.has("pred_masks") and len(out) > 0:
        raise RuntimeError("inference returned instances without masks")
    return f"built Mask R-CNN, one training step (loss {total.item():.2f}) and inference on {cfg.MODEL.DEVICE}"


def self_check() -> list[Check]:
    """Imports, operators, and a Mask R-CNN forward pass; stops at the first failing stage."""
    checks = []
    for name, fn in (("imports", _check_imports), ("operators", _check_ops),
                     ("Mask R-CNN", _check_mask_rcnn)):
        checks.append(_timed(name, fn))
        if not checks[-1].ok:
            break
    return checks
