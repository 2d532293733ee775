"""Serve an export folder: resize, run the graph, post-process. An ONNX export runs on
onnxruntime (or OpenVINO) without torch; a TorchScript export on torch and torchvision's ops,
without detectron2.

The graph (``d2seg.deploy.export``) takes the resized image (CHW uint8, in the model's channel
order) and returns what the model computes at that size. What detectron2 does after its model
is done here with numpy and OpenCV, so results have the image's size like ``d2seg predict``'s:

* detections (Mask R-CNN, Panoptic FPN's instances): scale the boxes back to the image, clip
  them, drop empty ones and paste each mask into its box (bilinear, ``>= 0.5``);
* semantic logits (semantic models, Panoptic FPN's stuff head): crop the padding, resize to the
  image (bilinear, as ``sem_seg_postprocess``), argmax;
* Panoptic FPN: instances and semantic labels combined by ``d2seg.panoptic.combine_numpy``
  (detectron2's heuristic and thresholds, from model.json).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from d2seg.deploy import BACKEND_PACKAGES, FORMAT, FORMAT_VERSION, TASKS
from d2seg.errors import D2SegError
from d2seg.io.json import read_json

OUTPUTS = ("boxes", "classes", "mask_probs", "scores")  # a detector's graph outputs
SEMANTIC_OUTPUTS = ("sem_seg_logits",)
TASK_OUTPUTS = {"instances": OUTPUTS, "semantic": SEMANTIC_OUTPUTS,
                "panoptic": OUTPUTS + SEMANTIC_OUTPUTS}
BACKENDS = tuple(BACKEND_PACKAGES)  # onnxruntime, openvino, torchscript
# which backends serve each model format (model.json's "model_format"; the first is the default)
FORMAT_BACKENDS = {"onnx": ("onnxruntime", "openvino"), "torchscript": ("torchscript",)}


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


def resize_logits(logits: np.ndarray, h: int, w: int) -> np.ndarray:
    """(K, h, w) float32: (K, h0, w0) logits resized bilinearly (half-pixel centres, no
    antialiasing: ``F.interpolate(..., mode="bilinear", align_corners=False)``'s sampling)."""
    logits = np.asarray(logits, np.float32)
    if logits.shape[1:] == (h, w):
        return logits
    chunks = []  # OpenCV resizes at most 512 channels at once
    for k in range(0, logits.shape[0], 512):
        part = cv2.resize(np.ascontiguousarray(logits[k:k + 512].transpose(1, 2, 0)), (w, h),
                          interpolation=cv2.INTER_LINEAR)
        chunks.append(part.reshape(h, w, -1).transpose(2, 0, 1))
    return np.concatenate(chunks, 0)


def semantic_labels(logits: np.ndarray, resized: tuple[int, int],
                    image: tuple[int, int]) -> np.ndarray:
    """(H, W) int64 class indices: padded logits cropped to the ``resized`` size, resized to the
    ``image`` size, argmax (``sem_seg_postprocess`` then ``argmax(0)``)."""
    logits = np.asarray(logits)[:, :resized[0], :resized[1]]
    return resize_logits(logits, *image).argmax(0)


class OnnxPredictor:
    """An exported model. ``predictor(image_bgr)`` returns one result dict (its keys depend on
    the task, see the subclasses); ``predictor([image, ...])`` a list of them, one per image
    (any sizes; each image runs through the graph on its own)."""

    task = ""
    backend = "onnxruntime"  # set by ``load``

    def __init__(self, folder: Path, meta: dict, session):
        self.folder, self.meta, self.session = folder, meta, session
        inp = meta["input"]
        self.rgb = inp["channel_order"] == "RGB"
        self.min_size, self.max_size = int(inp["min_size_test"]), int(inp["max_size_test"])
        self.input_name = inp["name"]
        classes = meta.get("classes") or {}
        self.class_names = classes.get("names")
        self.category_ids = classes.get("category_ids")
        stuff = meta.get("semantic_classes") or {}
        self.stuff_names = stuff.get("names")
        self.stuff_colors = stuff.get("colors_rgb") if stuff.get("names") else None

    @property
    def contiguous_to_category(self) -> dict | None:
        """Class index -> the dataset's category id (what COCO results use), when exported with
        a dataset."""
        return dict(enumerate(self.category_ids)) if self.category_ids else None

    def _run(self, image_bgr: np.ndarray, names) -> tuple[dict, tuple[int, int], tuple[int, int]]:
        """The graph's outputs by name for one image, its (h, w) and the resized (h, w)."""
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
        values = self.session.run(list(names), {self.input_name: chw})
        return dict(zip(names, values)), (h, w), (new_h, new_w)

    def predict_one(self, image_bgr: np.ndarray) -> dict:
        raise NotImplementedError

    def __call__(self, images):
        if isinstance(images, (list, tuple)):
            return [self.predict_one(image) for image in images]
        return self.predict_one(images)

    def predict_batch(self, images: list[np.ndarray]) -> list[dict]:
        """``d2seg predict``'s interface: one output dict per image, with the keys of the
        PyTorch model's (``instances``, ``sem_seg``, ``panoptic_seg``), as numpy arrays."""
        return [self.predict_one(image) for image in images]


def _detections(out: dict, image: tuple[int, int], resized: tuple[int, int],
                mask_threshold: float, min_score: float | None = None) -> dict:
    """boxes/scores/classes/masks at the image's size from the graph's detections, keeping
    those scoring above ``min_score`` when given."""
    (h, w), (new_h, new_w) = image, resized
    boxes = np.asarray(out["boxes"], np.float32).reshape(-1, 4).copy()
    # back to the image: scale, clip to it, drop boxes left empty (detectron2's
    # detector_postprocess, in float32 like its tensors)
    boxes[:, 0::2] *= np.float32(w / new_w)
    boxes[:, 1::2] *= np.float32(h / new_h)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    keep = (boxes[:, 2] - boxes[:, 0] > 0) & (boxes[:, 3] - boxes[:, 1] > 0)
    scores = np.asarray(out["scores"], np.float32).reshape(-1)
    if min_score is not None:
        keep &= scores > min_score  # detectron2's test: above the threshold
    boxes, scores = boxes[keep], scores[keep]
    classes = np.asarray(out["classes"], np.int64).reshape(-1)[keep]
    mask_probs = np.asarray(out["mask_probs"])[keep]
    masks = np.zeros((len(boxes), h, w), bool)
    for i in range(len(boxes)):
        masks[i] = paste_mask(mask_probs[i, 0], boxes[i], h, w, mask_threshold)
    return {"boxes": boxes, "scores": scores, "classes": classes, "masks": masks}


class OnnxInstancePredictor(OnnxPredictor):
    """An exported Mask R-CNN: ``predictor(image_bgr)`` returns ``boxes`` (N, 4) XYXY float32,
    ``scores`` (N,) float32, ``classes`` (N,) int64 (indices into ``class_names``) and ``masks``
    (N, H, W) bool at the image's size, best score first.

    ``score_thresh`` is the export's threshold (the graph keeps detections scoring above it);
    ``min_score`` (None: that one) drops more at serve time. Raising the threshold after the
    graph gives what a graph exported with the higher threshold gives: per-class NMS lets a box
    suppress only lower-scoring ones, and the top-k keeps the best, so the detections above it
    are the same either way."""

    task = "instances"

    def __init__(self, folder: Path, meta: dict, session):
        super().__init__(folder, meta, session)
        self.mask_threshold = float(meta.get("mask_threshold", 0.5))
        self.score_thresh = meta.get("score_thresh")
        self.min_score: float | None = None

    def set_min_score(self, min_score: float | None) -> None:
        """Keep only detections scoring above ``min_score`` (None: all the graph returns). It
        cannot go below the export's own threshold: those detections are not in the graph's
        output."""
        if min_score is not None and self.score_thresh is not None \
                and float(min_score) < float(self.score_thresh):
            raise D2SegError(f"the model was exported with score threshold {self.score_thresh}: "
                             f"it keeps no detections scoring {min_score}",
                             file=str(self.folder / "model.json"),
                             hint=f"use --min-score {self.score_thresh} or more, or export again "
                                  f"with d2seg export --min-score {min_score}")
        self.min_score = None if min_score is None else float(min_score)

    def predict_one(self, image_bgr: np.ndarray) -> dict:
        out, image, resized = self._run(image_bgr, OUTPUTS)
        return _detections(out, image, resized, self.mask_threshold, self.min_score)

    def predict_batch(self, images: list[np.ndarray]) -> list[dict]:
        return [{"instances": self.predict_one(image)} for image in images]


class OnnxSemanticPredictor(OnnxPredictor):
    """An exported semantic model: ``predictor(image_bgr)`` returns ``{"sem_seg": labels}``,
    an (H, W) int64 map of class indices (into ``stuff_names``) at the image's size."""

    task = "semantic"

    def predict_one(self, image_bgr: np.ndarray) -> dict:
        out, image, resized = self._run(image_bgr, SEMANTIC_OUTPUTS)
        return {"sem_seg": semantic_labels(out["sem_seg_logits"], resized, image)}


class OnnxPanopticPredictor(OnnxInstancePredictor):
    """An exported Panoptic FPN: ``predictor(image_bgr)`` returns ``instances`` (the Mask R-CNN
    result dict), ``sem_seg`` (the (H, W) int64 label map of the semantic head: 0 for things,
    then the stuff classes) and ``panoptic_seg``: (an (H, W) int32 segment id map, 0 = void,
    and one dict per segment: ``id``, ``isthing``, ``category_id`` -- a thing class index, or the
    semantic label for stuff --, ``score``/``instance_id`` for things, ``area`` for stuff),
    combined like detectron2's Panoptic FPN with the thresholds of model.json."""

    task = "panoptic"

    def __init__(self, folder: Path, meta: dict, session):
        super().__init__(folder, meta, session)
        self.combine = meta.get("panoptic_combine") or {}

    def predict_one(self, image_bgr: np.ndarray) -> dict:
        from d2seg.panoptic.combine_numpy import combine_panoptic_numpy

        out, image, resized = self._run(image_bgr, TASK_OUTPUTS["panoptic"])
        instances = _detections(out, image, resized, self.mask_threshold, self.min_score)
        labels = semantic_labels(out["sem_seg_logits"], resized, image)
        # always combined, as detectron2's PanopticFPN.inference does (whatever COMBINE.ENABLED)
        panoptic = combine_panoptic_numpy(
            instances["scores"], instances["classes"], instances["masks"], labels,
            score_threshold=float(self.combine.get("score_threshold", 0.5)),
            overlap_threshold=float(self.combine.get("overlap_threshold", 0.5)),
            stuff_area_threshold=float(self.combine.get("stuff_area_threshold", 4096)),
            skip_semantic_labels=(0,))
        return {"instances": instances, "sem_seg": labels, "panoptic_seg": panoptic}

    def predict_batch(self, images: list[np.ndarray]) -> list[dict]:
        return [self.predict_one(image) for image in images]


PREDICTORS = {"instances": OnnxInstancePredictor, "semantic": OnnxSemanticPredictor,
              "panoptic": OnnxPanopticPredictor}


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
        import d2seg

        writer = (meta.get("versions") or {}).get("d2seg")
        raise D2SegError(f"written by a newer d2seg ({writer or 'unknown version'}, format "
                         f"version {version}; this d2seg {d2seg.__version__} reads up to "
                         f"{FORMAT_VERSION})", file=str(path),
                         hint="pip install -U d2seg, or export the model again with this d2seg")
    if meta.get("task") not in TASKS:
        raise D2SegError(f"the model's task is {meta.get('task')!r}; this d2seg serves "
                         f"{', '.join(TASKS)} exports", file=str(path))
    fmt = meta.setdefault("model_format", "onnx")  # folders written before it was recorded
    if not isinstance(fmt, str) or fmt not in FORMAT_BACKENDS:
        raise D2SegError(f"the model's format is {fmt!r}; this d2seg serves "
                         f"{', '.join(FORMAT_BACKENDS)} exports", file=str(path))
    return meta


def _install_hint(backend: str) -> str:
    _, install, plain = BACKEND_PACKAGES[backend]
    return f"{install} (or: pip install {plain})" if plain else install


def _import_backend(backend: str):
    if backend not in BACKENDS:
        raise D2SegError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}",
                         where="--backend")
    try:
        if backend == "openvino":
            import openvino as module
        elif backend == "torchscript":
            import torch as module
            import torchvision  # noqa: F401  (registers the torchvision::nms/roi_align ops)
        else:
            import onnxruntime as module
    except ImportError as e:
        package = backend if backend != "torchscript" else (e.name or "torch")
        raise D2SegError(f"{package} is not installed (the {backend} backend runs exported "
                         "models on it)", hint=_install_hint(backend)) from None
    return module


def _short_reason(e: Exception) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]


def _onnxruntime_session(ort, model_file: Path, threads: int | None):
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    options.log_severity_level = 3  # onnxruntime's warnings are about the graph, not the user
    try:
        session = ort.InferenceSession(os.fspath(model_file), options,
                                       providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
        raise D2SegError(f"onnxruntime cannot load it as an ONNX model ({_short_reason(e)})",
                         file=str(model_file), hint="export the model again") from None
    return session, [o.name for o in session.get_outputs()], [i.name for i in session.get_inputs()]


class OpenVinoSession:
    """An OpenVINO compiled model (CPU) behind onnxruntime's ``run(names, feeds)``."""

    def __init__(self, compiled):
        self.compiled = compiled
        self.request = compiled.create_infer_request()

    def run(self, names, feeds: dict) -> list[np.ndarray]:
        results = self.request.infer(feeds)
        return [np.asarray(results[self.compiled.output(n)]) for n in names]


def _openvino_session(ov, model_file: Path, threads: int | None):
    core = ov.Core()
    try:
        model = core.read_model(os.fspath(model_file))
        # f32: on CPUs with bf16 units OpenVINO would otherwise compute in bf16 (labels then
        # differ from PyTorch's on a third of the pixels of the demo models)
        config = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        compiled = core.compile_model(model, "CPU", config)
    except Exception as e:  # OpenVINO raises RuntimeError subclasses with long reports
        raise D2SegError(f"OpenVINO cannot load it as an ONNX model ({_short_reason(e)})",
                         file=str(model_file), hint="export the model again") from None
    # a port has several names (the graph's and OpenVINO's own); any of them finds it
    outputs = [n for o in compiled.outputs for n in o.get_names()]
    inputs = [n for i in compiled.inputs for n in i.get_names()]
    return OpenVinoSession(compiled), outputs, inputs


class TorchScriptSession:
    """A traced TorchScript module behind onnxruntime's ``run(names, feeds)``: its outputs are a
    tuple, named by model.json's ``output_names``."""

    def __init__(self, module, output_names: list[str]):
        self.module, self.output_names = module, list(output_names)

    def run(self, names, feeds: dict) -> list[np.ndarray]:
        import warnings

        import torch

        (image,) = feeds.values()
        with warnings.catch_warnings(), torch.inference_mode():
            # detectron2's anchor grid calls torch.meshgrid without indexing= (warned once)
            warnings.filterwarnings("ignore", message="torch.meshgrid")
            values = self.module(torch.from_numpy(np.ascontiguousarray(image)))
        if len(values) != len(self.output_names):
            raise D2SegError(f"the model returns {len(values)} outputs, model.json names "
                             f"{len(self.output_names)}", hint="export the model again")
        outputs = dict(zip(self.output_names, values))
        return [outputs[n].numpy() for n in names]


def _torchscript_session(torch, model_file: Path, threads: int | None, meta: dict):
    """model.ts loaded on the CPU, then ``torch.jit.optimize_for_inference`` (frozen weights,
    oneDNN convolutions): on the demo Mask R-CNN the same answers (scores within 1e-6, the same
    masks), at 960x800 ~25% faster with ~20% less peak memory, at 160 px no change. The file
    itself stays the portable trace."""
    import warnings

    outputs = meta.get("output_names")
    if not isinstance(outputs, list):
        raise D2SegError("no output_names (the TorchScript outputs' names, in order)",
                         file=str(model_file.parent / "model.json"),
                         hint="export the model again")
    if threads:
        torch.set_num_threads(int(threads))  # torch's intra-op threads are the process's
    with warnings.catch_warnings():
        # torch.jit's own deprecation notes: nothing a user of the export can act on
        warnings.filterwarnings("ignore", message=".*is deprecated", category=FutureWarning)
        try:
            module = torch.jit.load(os.fspath(model_file), map_location="cpu").eval()
        except Exception as e:  # torch raises RuntimeError/ValueError/pickle errors
            raise D2SegError(f"torch cannot load it as a TorchScript model "
                             f"({_short_reason(e)})", file=str(model_file),
                             hint="export the model again") from None
        try:
            module = torch.jit.optimize_for_inference(module)
        except Exception:  # a speed-up only: the loaded trace gives the same answers
            pass
    return TorchScriptSession(module, outputs), outputs, [meta["input"]["name"]]


def _choose_backend(meta: dict, backend: str | None, folder: Path) -> str:
    """The backend for this export: the caller's, checked against model.json's format, or the
    format's default."""
    fmt = meta["model_format"]
    fits = FORMAT_BACKENDS[fmt]
    if backend is None:
        return fits[0]
    if backend in BACKENDS and backend not in fits:
        raise D2SegError(f"this is a {fmt} export (\"model_format\": \"{fmt}\"); the "
                         f"{backend} backend cannot serve it",
                         file=str(folder / "model.json"),
                         hint=f"use backend {' or '.join(fits)} (d2seg predict --backend "
                              f"{fits[0]}), or leave the backend to the folder")
    return backend


def load(folder, threads: int | None = None, *, task: str | None = None,
         backend: str | None = None, min_score: float | None = None) -> OnnxPredictor:
    """The predictor of an export folder: ``OnnxInstancePredictor``, ``OnnxSemanticPredictor`` or
    ``OnnxPanopticPredictor`` by the task model.json names. ``task``: the task the caller
    expects (an export of another task is an error). ``threads``: the backend's intra-op threads
    (its default when None; for torchscript, torch's threads for the whole process).
    ``backend``: ``onnxruntime`` or ``openvino`` for an ONNX export, ``torchscript`` for a
    TorchScript one; None (default) takes the folder's (onnxruntime for ONNX). Every
    problem with the folder is one D2SegError naming the file: no folder, no model.json, another
    task or a newer format, a backend that cannot serve the folder's format, no model file or
    one the backend cannot load; a backend that is not installed names its package and the
    install command. ``min_score``: keep only detections scoring above it (a detector's; at
    least the export's threshold, see ``set_min_score``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise D2SegError("no such folder (an export folder from d2seg export)", file=str(folder))
    meta = read_model_json(folder)
    if task is not None and meta["task"] != task:
        raise D2SegError(f"this export is a {meta['task']} model, not a {task} one",
                         file=str(folder / "model.json"),
                         hint=f"ask for task {meta['task']!r} (d2seg predict --task) or none, or "
                              f"export a {task} model")
    backend = _choose_backend(meta, backend, folder)
    module = _import_backend(backend)
    model_file = folder / str(meta.get("model_file", "model.onnx"))
    if not model_file.is_file():
        raise D2SegError("model file not found", file=str(model_file),
                         hint=f"model.json names it; export again into {folder}")
    if backend == "torchscript":
        session, output_names, input_names = _torchscript_session(module, model_file, threads,
                                                                  meta)
    else:
        make = _openvino_session if backend == "openvino" else _onnxruntime_session
        session, output_names, input_names = make(module, model_file, threads)
    missing = [n for n in TASK_OUTPUTS[meta["task"]] if n not in output_names]
    if missing or meta["input"]["name"] not in input_names:
        raise D2SegError(f"the {meta['model_format']} model lacks the input/outputs "
                         f"model.json describes "
                         f"(missing {', '.join(missing) or meta['input']['name']})",
                         file=str(model_file), hint="export the model again")
    predictor = PREDICTORS[meta["task"]](folder, meta, session)
    predictor.backend = backend
    if min_score is not None:
        if not isinstance(predictor, OnnxInstancePredictor):
            raise D2SegError("a semantic model has no detection scores to threshold",
                             file=str(folder / "model.json"), hint="drop --min-score")
        predictor.set_min_score(min_score)
    return predictor
