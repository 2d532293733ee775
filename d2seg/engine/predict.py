"""Run a trained model on images, folders, globs and videos; write COCO results and pictures.

Frames are read lazily and predicted in batches, so a long video streams with flat memory.
torch and detectron2 are imported only by ``BatchPredictor`` (the PyTorch model): predicting
with an exported model (``d2seg.deploy``) through :func:`predict` imports neither.
"""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from pycocotools import mask as mask_util
from tqdm import tqdm

from d2seg.io.images import IMAGE_SUFFIXES, read_image
from d2seg.errors import D2SegError
from d2seg.io.files import UniqueNames, open_temporary_beside, write_png_atomic

IMAGE_EXTS = set(IMAGE_SUFFIXES)
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}


@dataclass
class Frame:
    image_id: int
    name: str          # file name, or "video.mp4#123" for a video frame
    image: np.ndarray  # BGR uint8
    video: str | None = None
    stem: str = ""     # the input's output stem (see ``output_stems``)
    source: str = ""   # the image file's path as found (a video's is ``video``)


def expand_sources(sources) -> list[Path]:
    """Files from paths, folders (images and videos inside, sorted) and glob patterns."""
    found: list[Path] = []
    for source in sources:
        source = str(source)
        if any(ch in source for ch in "*?["):
            matches = sorted(glob.glob(source, recursive=True))
            if not matches:
                raise D2SegError("the pattern matches no file", file=source)
            found += [Path(m) for m in matches if Path(m).suffix.lower() in IMAGE_EXTS | VIDEO_EXTS]
        elif os.path.isdir(source):
            found += sorted(p for p in Path(source).iterdir() if p.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS)
        elif os.path.isfile(source):
            if Path(source).suffix.lower() not in IMAGE_EXTS | VIDEO_EXTS:
                raise D2SegError("not an image or video file (by its extension)", file=source)
            found.append(Path(source))
        else:
            raise D2SegError("no such file or folder", file=source)
    if not found:
        raise D2SegError("no images or videos found", file=", ".join(map(str, sources)))
    return found


def output_stems(files: list[Path]) -> list[str]:
    """The stem each input's outputs are named by, unique among the inputs: ``rendered/<stem>.png``
    and ``semantic/<stem>.png`` for an image, ``rendered/<stem>.mp4`` and
    ``semantic/<stem>_<frame index>.png`` for a video. It is the file's own stem; when an earlier
    image (or video) of the inputs already has it (``a/x.png`` then ``b/x.png``, or ``x.png``
    beside ``x.jpg``), a numeric suffix is added: ``x_2``, ``x_3``, ... (the first free one, see
    ``d2seg.io.files.UniqueNames``). An image stem that would name a video's frame (``clip_000012``
    beside ``clip.mp4``) gets a suffix too. ``images.json`` records each input's path and its
    outputs' names."""
    videos, images = UniqueNames(), UniqueNames()
    stems = [videos.take(p.stem) if p.suffix.lower() in VIDEO_EXTS else None for p in files]

    def names_a_frame(stem: str) -> bool:
        found = re.fullmatch(r"(.*)_\d{6,}", stem)
        return bool(found) and found.group(1) in videos

    for i, path in enumerate(files):
        if stems[i] is None:
            stem, n = path.stem, 1
            while stem in images or names_a_frame(stem):
                n += 1
                stem = f"{path.stem}_{n}"
            stems[i] = images.take(stem)
    return stems


def iter_frames(files: list[Path]) -> Iterator[Frame]:
    """Images and video frames in order, with consecutive image ids starting at 1."""
    image_id = 0
    for path, stem in zip(files, output_stems(files)):
        if path.suffix.lower() in VIDEO_EXTS:
            capture = cv2.VideoCapture(str(path))
            if not capture.isOpened():
                raise D2SegError("cannot open the video", file=str(path))
            index = 0
            try:
                while True:
                    ok, frame = capture.read()
                    if not ok:
                        break
                    image_id += 1
                    yield Frame(image_id, f"{path.name}#{index}", frame, video=str(path),
                                stem=stem)
                    index += 1
            finally:
                capture.release()
        else:
            # d2seg's reader, as in training: EXIF applied, grey/RGBA/16-bit converted, and a
            # truncated or non-image file is one error line (OpenCV half-decodes or says nothing)
            image = read_image(path, "BGR")
            image_id += 1
            yield Frame(image_id, path.name, image, stem=stem, source=str(path))


# the heads whose class count ``NUM_CLASSES: 0`` leaves to the data, by meta-architecture
_CLASS_COUNT_KEYS = {"GeneralizedRCNN": ("ROI_HEADS",), "RetinaNet": ("RETINANET",),
                     "SemanticSegmentor": ("SEM_SEG_HEAD",),
                     "PanopticFPN": ("ROI_HEADS", "SEM_SEG_HEAD")}


def require_class_counts(cfg) -> None:
    """A D2SegError when a head the model builds still has ``NUM_CLASSES`` 0, the configs' way
    of saying "from the training data" (``prepare_config`` fills it from a dataset)."""
    keys = _CLASS_COUNT_KEYS.get(cfg.MODEL.META_ARCHITECTURE, ("ROI_HEADS", "SEM_SEG_HEAD"))
    for key in keys:
        if key in cfg.MODEL and cfg.MODEL[key].get("NUM_CLASSES", None) == 0:
            named = (f" (this config trains on {cfg.DATASETS.TRAIN[0]})"
                     if cfg.DATASETS.TRAIN else "")
            raise D2SegError("0 means the class count comes from the training data",
                             where=f"MODEL.{key}.NUM_CLASSES",
                             hint="pass --dataset NAME (the training dataset, whose classes the "
                                  f"model has{named}) or set MODEL.{key}.NUM_CLASSES")


class BatchPredictor:
    """A model in eval mode that takes a list of BGR images and resizes them like the test set.

    The model runs under ``torch.no_grad``; ``inference_mode = True`` runs it under
    ``torch.inference_mode`` instead (no measurable gain on the demo Mask R-CNN on CPU, see
    bench/bench_inference.py, and its outputs would be inference tensors, which refuse in-place
    changes outside inference mode)."""

    inference_mode = False

    def __init__(self, cfg, weights: str | None = None):
        from detectron2.data import transforms as T
        from detectron2.modeling import build_model

        import d2seg.modeling  # noqa: F401  (registers d2seg's backbones)
        from d2seg.modeling.checkpoint import D2SegCheckpointer

        require_class_counts(cfg)
        self.cfg = cfg
        self.model = build_model(cfg).eval()
        D2SegCheckpointer(self.model).load(weights or cfg.MODEL.WEIGHTS)
        self.resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        self.rgb = cfg.INPUT.FORMAT == "RGB"

    def __call__(self, images: list[np.ndarray]) -> list[dict]:
        """One output per image. Images whose resized sizes differ run in separate forwards:
        detectron2 pads a batch to its largest image, and the padding would change the outputs
        of models with GroupNorm or global pooling (a DeepLabV3+'s labels agreed with its
        one-image labels on half the pixels), so each image gets what it would get alone."""
        import torch

        inputs = []
        for image in images:
            h, w = image.shape[:2]
            resized = self.resize.get_transform(image).apply_image(image)
            if self.rgb:
                resized = resized[:, :, ::-1]
            tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
            inputs.append({"image": tensor, "height": h, "width": w})
        groups: dict[tuple, list[int]] = {}
        for i, item in enumerate(inputs):
            groups.setdefault(tuple(item["image"].shape), []).append(i)
        outputs: list = [None] * len(inputs)
        with torch.inference_mode() if self.inference_mode else torch.no_grad():
            for indices in groups.values():
                for i, output in zip(indices, self.model([inputs[i] for i in indices])):
                    outputs[i] = output
        return outputs


def instance_arrays(instances) -> dict:
    """``boxes`` (N, 4) XYXY, ``scores``, ``classes`` and ``masks`` (N, H, W; None without masks)
    as numpy arrays, from detectron2 Instances or from an exported model's result dict (which
    has these keys already)."""
    if isinstance(instances, dict):
        masks = instances.get("masks")
        return {"boxes": np.asarray(instances["boxes"]).reshape(-1, 4),
                "scores": np.asarray(instances["scores"]), "classes": np.asarray(instances["classes"]),
                "masks": None if masks is None else np.asarray(masks)}
    instances = instances.to("cpu")
    return {"boxes": instances.pred_boxes.tensor.numpy() if instances.has("pred_boxes")
            else np.zeros((0, 4)),
            "scores": instances.scores.numpy(), "classes": instances.pred_classes.numpy(),
            "masks": instances.pred_masks.numpy() if instances.has("pred_masks") else None}


def instances_to_coco(instances, image_id: int, contiguous_to_category: dict | None) -> list[dict]:
    """COCO results (bbox XYWH, RLE masks, original category ids) from detectron2 Instances or
    an exported model's result dict (``instance_arrays``)."""
    arrays = instance_arrays(instances)
    boxes, masks = arrays["boxes"], arrays["masks"]
    scores, classes = arrays["scores"].tolist(), arrays["classes"].tolist()
    results = []
    for i in range(len(scores)):
        x0, y0, x1, y1 = boxes[i].tolist()
        entry = {"image_id": image_id,
                 "category_id": contiguous_to_category.get(classes[i], classes[i]) if contiguous_to_category else classes[i],
                 "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(scores[i])}
        if masks is not None:
            rle = mask_util.encode(np.asfortranarray(masks[i].astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            entry["segmentation"] = rle
        results.append(entry)
    return results


def _frame_stem(frame: Frame) -> str:
    """File stem for a frame's outputs: its input's output stem (``output_stems``; the image's
    stem when the frame has none), and for a video frame ``<that stem>_<frame index>``."""
    stem = frame.stem or Path(frame.video or frame.name).stem
    if frame.video is None:
        return stem
    return f"{stem}_{int(frame.name.rsplit('#', 1)[1]):06d}"


def _write_png(path: Path, image: np.ndarray) -> None:
    """A PNG written atomically; a failed encode or write is one D2SegError naming the file."""
    try:
        write_png_atomic(path, image)
    except OSError as e:
        raise D2SegError(f"could not write the image ({e.strerror or e})", file=str(path),
                         hint="check that the output folder is writable and has space") from None


def label_map(sem_seg) -> np.ndarray:
    """An (H, W) numpy label map from a model's ``sem_seg``: (C, H, W) logits (PyTorch's, argmax)
    or an exported model's (H, W) labels (``d2seg.deploy``), which are returned as they are."""
    if isinstance(sem_seg, np.ndarray):
        return sem_seg if sem_seg.ndim == 2 else sem_seg.argmax(0)
    return sem_seg.argmax(0).to("cpu").numpy()


def _as_numpy(array) -> np.ndarray:
    return array if isinstance(array, np.ndarray) else array.to("cpu").numpy()


def _write_labels(path: Path, labels: np.ndarray) -> None:
    """A semantic label map as a PNG (uint8 up to 255 classes, else 16-bit), atomically."""
    _write_png(path, labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.uint16))


def _write_panoptic(out: Path, frame: Frame, panoptic_seg, contiguous_to_category) -> dict:
    """A panoptic prediction as ``panoptic/<stem>.png`` (COCO panoptic: id = R + 256 G +
    256^2 B) and its COCO ``segments_info`` (things' ``category_id`` in the dataset's ids when
    known, stuff's the semantic label: 0 is "things", 1.. the stuff classes), for images.json."""
    from d2seg.panoptic.export import coco_segments_info, write_panoptic_png

    pan, segments = panoptic_seg
    ids = _as_numpy(pan)
    (out / "panoptic").mkdir(exist_ok=True)
    path = out / "panoptic" / f"{_frame_stem(frame)}.png"
    try:
        write_panoptic_png(path, ids)
    except OSError as e:
        raise D2SegError(f"could not write the image ({e.strerror or e})", file=str(path),
                         hint="check that the output folder is writable and has space") from None
    return {"panoptic_file_name": str(path.relative_to(out)),
            "segments_info": coco_segments_info(ids, segments, contiguous_to_category)}


def _draw_output(image: np.ndarray, output: dict, score_thresh: float, class_names,
                 stuff_names, stuff_colors) -> np.ndarray:
    """The picture of one prediction (BGR, like ``image``): panoptic segments if the model makes
    them, else instances, else the semantic label map. ``stuff_colors``: RGB, as detectron2's
    metadata has them."""
    from d2seg.visualize.inputs import instances_from_detectron2
    from d2seg.visualize.render import draw_instances, draw_panoptic, draw_semantic

    if "panoptic_seg" in output:
        pan, segments = output["panoptic_seg"]
        info, names, isthing = [], {}, {}
        for seg in segments:
            thing, cid = bool(seg.get("isthing")), int(seg["category_id"])
            key = cid if thing else 1000 + cid  # things and stuff are numbered separately
            source = class_names if thing else stuff_names
            names[key] = source[cid] if source is not None and cid < len(source) else str(cid)
            isthing[key] = thing
            info.append({"id": seg["id"], "category_id": key, "isthing": thing,
                         "score": seg.get("score")})
        return draw_panoptic(image, _as_numpy(pan), info, class_names=names,
                             isthing=isthing)
    if "instances" in output and isinstance(output["instances"], dict):  # an exported model's
        arrays = instance_arrays(output["instances"])
        keep = arrays["scores"] >= score_thresh
        masks = None if arrays["masks"] is None else arrays["masks"][keep]
        return draw_instances(image, masks=masks, boxes=arrays["boxes"][keep].astype(np.float64),
                              classes=arrays["classes"][keep].tolist(),
                              scores=arrays["scores"][keep].astype(float).tolist(),
                              class_names=class_names)
    if "instances" in output:
        keep = output["instances"]
        keep = keep[keep.scores >= score_thresh].to("cpu")
        return draw_instances(image, **instances_from_detectron2(keep).draw_kwargs(),
                              class_names=class_names)
    # the image is BGR (OpenCV) while detectron2's metadata colours are RGB, as d2seg visualize
    # assumes too (ClassSpace)
    colours = (None if stuff_colors is None
               else np.asarray(stuff_colors, np.uint8).reshape(-1, 3)[:, ::-1])
    return draw_semantic(image, label_map(output["sem_seg"]), stuff_names,
                         colours)


def predict(cfg, sources, out_dir, weights: str | None = None, batch_size: int = 4,
            render: bool = True, score_thresh: float = 0.5, class_names=None,
            contiguous_to_category: dict | None = None, progress: bool | None = None,
            stuff_names=None, stuff_colors=None, predictor=None) -> dict:
    """Predict every frame; write ``results.json`` (COCO instances), ``images.json``, a label PNG
    per frame under ``semantic/`` for models with a semantic output, a COCO panoptic PNG per frame
    under ``panoptic/`` (its segments in images.json) for panoptic models, and pictures/videos.

    ``predictor``: a callable from a list of BGR images to one output dict per image, in place of
    the PyTorch model ``BatchPredictor(cfg, weights)`` (``cfg`` and ``weights`` are then unused),
    e.g. an exported model's ``predict_batch`` (``d2seg.deploy.load``)."""

    if not isinstance(batch_size, int) or batch_size < 1:
        raise D2SegError(f"must be at least 1, got {batch_size}", where="--batch-size")
    files = expand_sources(sources)
    out = Path(out_dir)
    (out / "rendered").mkdir(parents=True, exist_ok=True)
    if predictor is None:
        predictor = BatchPredictor(cfg, weights)
    total = _count_frames(files)
    bar = tqdm(total=total, desc="predict", unit="img", disable=(not _isatty()) if progress is None else not progress)
    # results and the image index are written as they come (a long video would otherwise keep
    # every detection in memory) and renamed into place once complete.
    results, images, writers = _JsonListWriter(out / "results.json"), _JsonListWriter(out / "images.json"), {}
    produced = {"tasks": set(), "label_maps": 0, "panoptic_maps": 0}  # what the model's outputs were, for the summary

    def flush(batch: list[Frame]):
        for frame, output in zip(batch, predictor([f.image for f in batch])):
            entry = {"id": frame.image_id, "file_name": frame.name,
                     "height": frame.image.shape[0], "width": frame.image.shape[1]}
            if frame.video is None and frame.source:
                entry["source"] = frame.source
            produced["tasks"].update(k for k in ("instances", "sem_seg", "panoptic_seg") if k in output)
            if "instances" in output:
                results.extend(instances_to_coco(output["instances"], frame.image_id,
                                                 contiguous_to_category))
            if "sem_seg" in output:
                (out / "semantic").mkdir(exist_ok=True)
                label_file = out / "semantic" / f"{_frame_stem(frame)}.png"
                _write_labels(label_file, label_map(output["sem_seg"]))
                produced["label_maps"] += 1
                entry["sem_seg_file_name"] = str(label_file.relative_to(out))
            if "panoptic_seg" in output:
                entry.update(_write_panoptic(out, frame, output["panoptic_seg"],
                                             contiguous_to_category))
                produced["panoptic_maps"] += 1
            if render:
                drawn = _draw_output(frame.image, output, score_thresh, class_names,
                                     stuff_names, stuff_colors)
                entry["rendered_file_name"] = str(_write_rendered(out, frame, drawn, writers)
                                                  .relative_to(out))
            images.append(entry)
            bar.update(1)

    batch: list[Frame] = []
    try:
        for frame in iter_frames(files):
            batch.append(frame)
            if len(batch) == batch_size:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
        results.commit()
        images.commit()
    finally:
        for writer, _ in writers.values():
            writer.release()
        bar.close()
        results.discard()
        images.discard()
    semantic = out / "semantic"
    return {"results": str(out / "results.json"), "images": len(images), "detections": len(results),
            "rendered": str(out / "rendered"), "semantic": str(semantic) if semantic.is_dir() else None,
            "tasks": sorted(produced["tasks"]), "label_maps": produced["label_maps"],
            "panoptic_maps": produced["panoptic_maps"],
            "panoptic": str(out / "panoptic") if produced["panoptic_maps"] else None}


def summary_line(summary: dict) -> str:
    """One line saying what the model produced: detections for an instance (or panoptic)
    model, label maps for a semantic one; never "0 detections" for a model that makes none."""
    parts = [f"{summary['images']} images"]
    tasks = summary.get("tasks") or ["instances"]
    if "instances" in tasks:
        parts.append(f"{summary['detections']} detections -> {summary['results']}")
    if summary.get("label_maps"):  # a semantic model's, or a panoptic model's semantic head's
        parts.append(f"{summary['label_maps']} label maps (PNG, one class index per pixel) in "
                     f"{summary['semantic']}")
    if summary.get("panoptic_maps"):
        parts.append(f"{summary['panoptic_maps']} panoptic maps (COCO panoptic PNG; segments in "
                     f"images.json) in {summary['panoptic']}")
    return ", ".join(parts[:2]) + "".join(f"; {p}" for p in parts[2:]) + \
        f"; pictures in {summary['rendered']}"


def rendered_path(out: Path, frame: Frame) -> Path:
    """Where a frame's picture goes: ``rendered/<stem>.png`` for an image, the video's
    ``rendered/<stem>.mp4`` for a video frame (stems from ``output_stems``)."""
    stem = frame.stem or Path(frame.video or frame.name).stem
    return Path(out) / "rendered" / (stem + (".png" if frame.video is None else ".mp4"))


def _write_rendered(out: Path, frame: Frame, drawn: np.ndarray, writers: dict) -> Path:
    """Write a frame's picture (BGR); returns the file it went to."""
    path = rendered_path(out, frame)
    if frame.video is None:
        _write_png(path, drawn)
        return path
    if frame.video not in writers:
        capture = cv2.VideoCapture(frame.video)
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        capture.release()
        h, w = drawn.shape[:2]
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        if not writer.isOpened():
            raise D2SegError("could not open the video for writing", file=str(path),
                             hint="check that the output folder is writable")
        writers[frame.video] = (writer, path)
    writers[frame.video][0].write(drawn)
    return path


def _count_frames(files: list[Path]) -> int:
    total = 0
    for path in files:
        if path.suffix.lower() in VIDEO_EXTS:
            capture = cv2.VideoCapture(str(path))
            total += int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            capture.release()
        else:
            total += 1
    return total


def _isatty() -> bool:
    import sys

    return sys.stderr.isatty()


class _JsonListWriter:
    """A JSON list written item by item to a new, uniquely named temporary file beside ``path``
    (``d2seg.io.files.open_temporary_beside``: two runs never share one, and a file or symlink
    already at a name is never opened) and renamed to ``path`` by ``commit()``: the same bytes
    as ``json.dumps(list)``, without holding the list. ``discard()`` (after a failure) removes
    the partial file and leaves an earlier ``path`` as it was."""

    def __init__(self, path: Path):
        self.path = path
        self.count, self._committed = 0, False
        self.tmp, self._file = open_temporary_beside(path, "x", encoding="utf-8")
        self._file.write("[")

    def append(self, item) -> None:
        self._file.write((", " if self.count else "") + json.dumps(item))
        self.count += 1

    def extend(self, items) -> None:
        for item in items:
            self.append(item)

    def __len__(self) -> int:
        return self.count

    def commit(self) -> None:
        self._file.write("]")
        self._file.close()
        os.replace(self.tmp, self.path)
        self._committed = True

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        if not self._committed:
            self.tmp.unlink(missing_ok=True)
