"""Serve an export folder with onnxruntime: resize, run the graph, paste masks; no torch.

The graph (``d2seg.deploy.export``) takes the resized image (CHW uint8, in the model's channel
order) and returns the detections at that size: boxes, classes, scores and each detection's
28x28 mask probabilities. What detectron2 does after its model -- scale the boxes back to the
image, clip them, drop empty ones and paste each mask into its box (bilinear, ``>= 0.5``) -- is
done here with numpy and OpenCV, so the result has the image's size like ``d2seg predict``'s.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from d2seg.deploy import FORMAT, FORMAT_VERSION, TASKS
from d2seg.errors import D2SegError
from d2seg.io.json import read_json

OUTPUTS = ("boxes", "classes", "mask_probs", "scores")


def resized_shape(h: int, w: int, min_size: int, max_size: int) -> tuple[int, int]:
    """(new_h, new_w): the short side scaled to ``min_size`` unless the long side would pass
    ``max_size``, then the long side to ``max_size`` (detectron2's ResizeShortestEdge rule, with
    its rounding to the nearest pixel); ``min_size`` 0 keeps the size."""
    if min_size <= 0:
        return h, w
    # the same float operations in the same order as detectron2, for the same rounding
    scale = min_size * 1.0 / min(h, w)
    new_h, new_w = (min_size * 1.0, scale * w) if h < w else (scale * h, min_size * 1.0)
    if max(new_h, new_w) > max_size:
        shrink = max_size * 1.0 / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    return int(new_h + 0.5), int(new_w + 0.5)


def resize_image(image: np.ndarray, new_h: int, new_w: int) -> np.ndarray:
    """The uint8 image resized with Pillow's bilinear filter (what detectron2's test-time
    ResizeTransform uses for uint8 images), so the graph sees the same pixels."""
    if image.shape[:2] == (new_h, new_w):
        return image
    return np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))


def _interpolation_matrix(coords: np.ndarray, size: int) -> np.ndarray:
    """(len(coords), size) weights of bilinear sampling at ``coords`` (cell centres at 0..size-1),
    with zero beyond the grid: row k holds 1-f at floor(c_k) and f at floor(c_k)+1."""
    low = np.floor(coords)
    frac = coords - low
    low = low.astype(np.int64)
    weights = np.zeros((len(coords), size + 2))  # one column either side for outside cells
    rows = np.arange(len(coords))
    weights[rows, np.clip(low, -1, size) + 1] += 1.0 - frac
    weights[rows, np.clip(low + 1, -1, size) + 1] += frac
    return weights[:, 1:-1]


def paste_mask(probs: np.ndarray, box: np.ndarray, h: int, w: int,
               threshold: float = 0.5) -> np.ndarray:
    """A (h, w) bool mask: ``probs`` (m x m) stretched over ``box`` (x0, y0, x1, y1), sampled
    bilinearly at pixel centres (zero outside the grid), then ``>= threshold``.

    Only the pixels from floor(x0)-1 to ceil(x1)+1 (and likewise in y) are sampled: beyond them
    no sample reaches a grid cell. The sampling is separable, so the region is
    ``rows @ probs @ cols.T`` with the bilinear weight matrices of its rows and columns."""
    out = np.zeros((h, w), bool)
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        return out
    left, top = max(math.floor(x0) - 1, 0), max(math.floor(y0) - 1, 0)
    right, bottom = min(math.ceil(x1) + 1, w), min(math.ceil(y1) + 1, h)
    if right <= left or bottom <= top:
        return out
    mh, mw = probs.shape
    # pixel centre p + 0.5 in the box, as a position on the grid whose cell centres are 0..m-1
    xs = (np.arange(left, right) + 0.5 - x0) * (mw / (x1 - x0)) - 0.5
    ys = (np.arange(top, bottom) + 0.5 - y0) * (mh / (y1 - y0)) - 0.5
    region = _interpolation_matrix(ys, mh) @ probs.astype(np.float64) @ \
        _interpolation_matrix(xs, mw).T
    out[top:bottom, left:right] = region >= threshold
    return out


class OnnxInstancePredictor:
    """An exported Mask R-CNN: ``predictor(image_bgr)`` returns ``boxes`` (N, 4) XYXY float32,
    ``scores`` (N,) float32, ``classes`` (N,) int64 (indices into ``class_names``) and ``masks``
    (N, H, W) bool at the image's size, best score first."""

    def __init__(self, folder: Path, meta: dict, session):
        self.folder, self.meta, self.session = folder, meta, session
        inp = meta["input"]
        self.rgb = inp["channel_order"] == "RGB"
        self.min_size, self.max_size = int(inp["min_size_test"]), int(inp["max_size_test"])
        self.input_name = inp["name"]
        self.mask_threshold = float(meta.get("mask_threshold", 0.5))
        classes = meta.get("classes") or {}
        self.class_names = classes.get("names")
        self.category_ids = classes.get("category_ids")
        self.score_thresh = meta.get("score_thresh")

    @property
    def contiguous_to_category(self) -> dict | None:
        """Class index -> the dataset's category id (what COCO results use), when exported with
        a dataset."""
        return dict(enumerate(self.category_ids)) if self.category_ids else None

    def __call__(self, image_bgr: np.ndarray) -> dict:
        image = np.asarray(image_bgr)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise D2SegError(f"expected a BGR uint8 image (H, W, 3), got {image.dtype} "
                             f"{image.shape}")
        h, w = image.shape[:2]
        new_h, new_w = resized_shape(h, w, self.min_size, self.max_size)
        resized = resize_image(image, new_h, new_w)
        if self.rgb:
            resized = resized[:, :, ::-1]
        chw = np.ascontiguousarray(resized.transpose(2, 0, 1))
        boxes, classes, mask_probs, scores = self.session.run(list(OUTPUTS),
                                                              {self.input_name: chw})
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
        # back to the image: scale, clip to it, drop boxes left empty (detectron2's
        # detector_postprocess, in float32 like its tensors)
        boxes[:, 0::2] *= np.float32(w / new_w)
        boxes[:, 1::2] *= np.float32(h / new_h)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        keep = (boxes[:, 2] - boxes[:, 0] > 0) & (boxes[:, 3] - boxes[:, 1] > 0)
        boxes, scores = boxes[keep], np.asarray(scores, np.float32)[keep]
        classes, mask_probs = np.asarray(classes, np.int64)[keep], mask_probs[keep]
        masks = np.zeros((len(boxes), h, w), bool)
        for i in range(len(boxes)):
            masks[i] = paste_mask(mask_probs[i, 0], boxes[i], h, w, self.mask_threshold)
        return {"boxes": boxes, "scores": scores, "classes": classes, "masks": masks}

    def predict_batch(self, images: list[np.ndarray]) -> list[dict]:
        """``d2seg predict``'s interface: one ``{"instances": result}`` per image."""
        return [{"instances": self(image)} for image in images]


def read_model_json(folder: Path) -> dict:
    """model.json of an export folder, checked: ours, a format this d2seg reads, a task it serves."""
    path = folder / "model.json"
    if not path.is_file():
        raise D2SegError("no model.json: not a d2seg export folder", file=str(path),
                         hint="make one with d2seg export --config-file CFG --weights W "
                              "--format onnx --out DIR")
    meta = read_json(path, "model.json")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise D2SegError(f"not a d2seg export description (no \"format\": \"{FORMAT}\")",
                         file=str(path))
    version = meta.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise D2SegError(f"format_version {version!r} is not a positive integer", file=str(path))
    if version > FORMAT_VERSION:
        raise D2SegError(f"written by a newer d2seg (format version {version}; this d2seg reads "
                         f"up to {FORMAT_VERSION})", file=str(path),
                         hint="upgrade d2seg, or export the model again with this version")
    if meta.get("task") not in TASKS:
        raise D2SegError(f"the model's task is {meta.get('task')!r}; this d2seg serves "
                         f"{', '.join(TASKS)} exports", file=str(path))
    return meta


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise D2SegError("onnxruntime is not installed (exported models run on it)",
                         hint="pip install onnxruntime") from None
    return onnxruntime


def load(folder, threads: int | None = None) -> OnnxInstancePredictor:
    """The predictor of an export folder. ``threads``: onnxruntime's intra-op threads (its
    default, one per core, when None). Every problem with the folder is one D2SegError naming the
    file: no folder, no model.json, another task or a newer format, a model file that onnxruntime
    cannot load; onnxruntime missing names the package."""
    folder = Path(folder)
    if not folder.is_dir():
        raise D2SegError("no such folder (an export folder from d2seg export)", file=str(folder))
    meta = read_model_json(folder)
    ort = _import_onnxruntime()
    model_file = folder / str(meta.get("model_file", "model.onnx"))
    if not model_file.is_file():
        raise D2SegError("model file not found", file=str(model_file),
                         hint=f"model.json names it; export again into {folder}")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    options.log_severity_level = 3  # onnxruntime's warnings are about the graph, not the user
    try:
        session = ort.InferenceSession(os.fspath(model_file), options,
                                       providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise D2SegError(f"onnxruntime cannot load it as an ONNX model ({reason[:200]})",
                         file=str(model_file), hint="export the model again") from None
    names = {o.name for o in session.get_outputs()}
    missing = [n for n in OUTPUTS if n not in names]
    if missing or meta["input"]["name"] not in {i.name for i in session.get_inputs()}:
        raise D2SegError(f"the ONNX graph lacks the input/outputs model.json describes "
                         f"(missing {', '.join(missing) or meta['input']['name']})",
                         file=str(model_file), hint="export the model again")
    return OnnxInstancePredictor(folder, meta, session)
