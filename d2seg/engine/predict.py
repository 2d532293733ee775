"""Run a trained model on images, folders, globs and videos; write COCO results and pictures.

Frames are read lazily and predicted in batches, so a long video streams with flat memory.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_util
from tqdm import tqdm

from d2seg.data.images import read_image
from d2seg.errors import D2SegError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}


@dataclass
class Frame:
    image_id: int
    name: str          # file name, or "video.mp4#123" for a video frame
    image: np.ndarray  # BGR uint8
    video: str | None = None


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


def iter_frames(files: list[Path]) -> Iterator[Frame]:
    """Images and video frames in order, with consecutive image ids starting at 1."""
    image_id = 0
    for path in files:
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
                    yield Frame(image_id, f"{path.name}#{index}", frame, video=str(path))
                    index += 1
            finally:
                capture.release()
        else:
            # d2seg's reader, as in training: EXIF applied, grey/RGBA/16-bit converted, and a
            # truncated or non-image file is one error line (OpenCV half-decodes or says nothing)
            image = read_image(path, "BGR")
            image_id += 1
            yield Frame(image_id, path.name, image)


class BatchPredictor:
    """A model in eval mode that takes a list of BGR images and resizes them like the test set."""

    def __init__(self, cfg, weights: str | None = None):
        from detectron2.data import transforms as T
        from detectron2.modeling import build_model

        import d2seg.modeling  # noqa: F401  (registers d2seg's backbones)
        from d2seg.modeling.checkpoint import D2SegCheckpointer

        self.cfg = cfg
        self.model = build_model(cfg).eval()
        D2SegCheckpointer(self.model).load(weights or cfg.MODEL.WEIGHTS)
        self.resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        self.rgb = cfg.INPUT.FORMAT == "RGB"

    @torch.no_grad()
    def __call__(self, images: list[np.ndarray]) -> list[dict]:
        inputs = []
        for image in images:
            h, w = image.shape[:2]
            resized = self.resize.get_transform(image).apply_image(image)
            if self.rgb:
                resized = resized[:, :, ::-1]
            tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
            inputs.append({"image": tensor, "height": h, "width": w})
        return self.model(inputs)


def instances_to_coco(instances, image_id: int, contiguous_to_category: dict | None) -> list[dict]:
    """COCO results (bbox XYWH, RLE masks, original category ids) from detectron2 Instances."""
    instances = instances.to("cpu")
    boxes = instances.pred_boxes.tensor.numpy() if instances.has("pred_boxes") else np.zeros((0, 4))
    scores = instances.scores.tolist()
    classes = instances.pred_classes.tolist()
    masks = instances.pred_masks.numpy() if instances.has("pred_masks") else None
    results = []
    for i in range(len(instances)):
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
    """File stem for a frame's outputs: the image's stem, or ``<video stem>_<frame index>``."""
    if frame.video is None:
        return Path(frame.name).stem
    return f"{Path(frame.video).stem}_{int(frame.name.rsplit('#', 1)[1]):06d}"


def _write_labels(path: Path, labels: np.ndarray) -> None:
    """A semantic label map as a PNG (uint8 up to 255 classes, else 16-bit), atomically."""
    from d2seg.files import write_png_atomic

    write_png_atomic(path, labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.uint16))


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
        return draw_panoptic(image, pan.to("cpu").numpy(), info, class_names=names,
                             isthing=isthing)
    if "instances" in output:
        keep = output["instances"]
        keep = keep[keep.scores >= score_thresh].to("cpu")
        return draw_instances(image, **instances_from_detectron2(keep).draw_kwargs(),
                              class_names=class_names)
    # the image is BGR (OpenCV) while detectron2's metadata colours are RGB, as d2seg visualize
    # assumes too (ClassSpace)
    colours = (None if stuff_colors is None
               else np.asarray(stuff_colors, np.uint8).reshape(-1, 3)[:, ::-1])
    return draw_semantic(image, output["sem_seg"].argmax(0).to("cpu").numpy(), stuff_names,
                         colours)


def predict(cfg, sources, out_dir, weights: str | None = None, batch_size: int = 4,
            render: bool = True, score_thresh: float = 0.5, class_names=None,
            contiguous_to_category: dict | None = None, progress: bool | None = None,
            stuff_names=None, stuff_colors=None) -> dict:
    """Predict every frame; write ``results.json`` (COCO instances), ``images.json``, a label PNG
    per frame under ``semantic/`` for models with a semantic output, and pictures/videos."""

    if not isinstance(batch_size, int) or batch_size < 1:
        raise D2SegError(f"must be at least 1, got {batch_size}", where="--batch-size")
    files = expand_sources(sources)
    out = Path(out_dir)
    (out / "rendered").mkdir(parents=True, exist_ok=True)
    predictor = BatchPredictor(cfg, weights)
    total = _count_frames(files)
    bar = tqdm(total=total, desc="predict", unit="img", disable=(not _isatty()) if progress is None else not progress)
    # results and the image index are written as they come (a long video would otherwise keep
    # every detection in memory) and renamed into place once complete.
    results, images, writers = _JsonListWriter(out / "results.json"), _JsonListWriter(out / "images.json"), {}

    def flush(batch: list[Frame]):
        for frame, output in zip(batch, predictor([f.image for f in batch])):
            entry = {"id": frame.image_id, "file_name": frame.name,
                     "height": frame.image.shape[0], "width": frame.image.shape[1]}
            if "instances" in output:
                results.extend(instances_to_coco(output["instances"], frame.image_id,
                                                 contiguous_to_category))
            if "sem_seg" in output:
                (out / "semantic").mkdir(exist_ok=True)
                label_file = out / "semantic" / f"{_frame_stem(frame)}.png"
                _write_labels(label_file, output["sem_seg"].argmax(0).to("cpu").numpy())
                entry["sem_seg_file_name"] = str(label_file.relative_to(out))
            images.append(entry)
            if render:
                drawn = _draw_output(frame.image, output, score_thresh, class_names,
                                     stuff_names, stuff_colors)
                _write_rendered(out, frame, drawn, writers)
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
            "rendered": str(out / "rendered"), "semantic": str(semantic) if semantic.is_dir() else None}


def _write_rendered(out: Path, frame: Frame, drawn: np.ndarray, writers: dict) -> None:
    if frame.video is None:
        cv2.imwrite(str(out / "rendered" / (Path(frame.name).stem + ".png")), drawn)
        return
    if frame.video not in writers:
        capture = cv2.VideoCapture(frame.video)
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        capture.release()
        path = out / "rendered" / (Path(frame.video).stem + ".mp4")
        h, w = drawn.shape[:2]
        writers[frame.video] = (cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h)), path)
    writers[frame.video][0].write(drawn)


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
    """A JSON list written item by item to ``path.tmp`` and renamed to ``path`` by ``commit()``:
    the same bytes as ``json.dumps(list)``, without holding the list. ``discard()`` (after a
    failure) removes the partial file and leaves an earlier ``path`` as it was."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = path.with_suffix(path.suffix + ".tmp")
        self.count = 0
        self._file = open(self.tmp, "w")
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

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        if self.tmp.exists():
            self.tmp.unlink()
