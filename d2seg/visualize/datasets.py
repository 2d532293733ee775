"""Draw a registered dataset: its ground truth beside predictions from a results JSON or a model.

The library side of ``d2seg visualize --dataset NAME``. The dataset is read through detectron2's
``DatasetCatalog`` (so any registered dataset works, d2seg manifests included) and drawn in the
form its records have:

- instances (``annotations``): masks, boxes and class names;
- panoptic (``pan_seg_file_name`` + ``segments_info``, the standard form): the panoptic map;
- semantic (``sem_seg_file_name`` only): the label map.

Predictions come from a COCO results JSON (dataset category and image ids, as COCOEvaluator and
``d2seg predict --dataset`` write them), a COCO panoptic prediction JSON and its PNG folder,
detectron2's ``sem_seg_predictions.json``, or a model run on the dataset's images. Classes are
matched by name, so a model trained on ``X_separated`` draws in the colours of ``X``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from tqdm import tqdm

from d2seg.errors import D2SegError
from d2seg.io.json import read_json_or_parsed
from d2seg.io.labels import read_label_png
from d2seg.io.rle import to_rle
from d2seg.io.files import write_png_atomic
from d2seg.io.panoptic_png import read_panoptic_png
from d2seg.visualize.colours import class_colors
from d2seg.visualize.files import load_panoptic_json, panoptic_dir
from d2seg.visualize.inputs import (
    InstanceSet, annotations_to_instances, group_by_image,
    results_to_instances,
)
from d2seg.visualize.render import draw_instances, draw_panoptic, draw_semantic, side_by_side

KINDS = ("instances", "panoptic", "semantic")


# ---------------------------------------------------------------------------------------------
# the dataset


def lookup_dataset(name: str, *, register: bool = True):
    """``(records, metadata)`` of a registered dataset; a one-line error naming the nearest ones."""
    from detectron2.data import DatasetCatalog

    from d2seg.data.register import registered_metadata

    if register:
        from d2seg.data.register import register_datasets

        register_datasets()
    meta = registered_metadata(name, where="--dataset")
    return DatasetCatalog.get(name), meta


def dataset_kind(records) -> str | None:
    """What the records' ground truth is: instances, panoptic, semantic (None: images only)."""
    for r in records:
        if "pan_seg_file_name" in r:
            return "panoptic"
        if "annotations" in r:
            return "instances"
        if "sem_seg_file_name" in r:
            return "semantic"
    return None


class ClassSpace:
    """One list of class names (and colours, isthing) every panel of a dataset is drawn with.

    Starts from the dataset's classes; predictions are mapped into it by class name, and a name
    the dataset lacks is appended, so it still gets its own colour and label.
    """

    def __init__(self, names, colors_rgb=None, things=()):
        self.names = [str(n) for n in names]
        colours = class_colors(len(self.names))
        if colors_rgb is not None and len(colors_rgb) == len(self.names):
            colours = np.asarray(colors_rgb, np.uint8).reshape(-1, 3)[:, ::-1]  # RGB -> BGR
        self._colours = [c for c in colours]
        self.isthing = [i in set(things) for i in range(len(self.names))]
        self._index = {n: i for i, n in enumerate(self.names)}

    @classmethod
    def for_dataset(cls, meta, kind: str | None) -> "ClassSpace":
        things = meta.get("thing_classes", None)
        stuff = meta.get("stuff_classes", None)
        if kind in ("panoptic", "semantic") and stuff:
            thing_ids = set((meta.get("thing_dataset_id_to_contiguous_id", None) or {}).values())
            return cls(stuff, meta.get("stuff_colors", None),
                       thing_ids if kind == "panoptic" else ())
        if things:
            return cls(things, meta.get("thing_colors", None), range(len(things)))
        return cls(stuff or [], meta.get("stuff_colors", None))

    def index(self, name, isthing: bool = False) -> int:
        name = str(name)
        if name not in self._index:
            self._index[name] = len(self.names)
            self.names.append(name)
            palette = class_colors(len(self.names) + 8)
            self._colours.append(palette[len(self.names) - 1])
            self.isthing.append(isthing)
        return self._index[name]

    def table(self, names) -> np.ndarray:
        """Indices into this space of ``names`` (a model's or a file's classes, in order)."""
        return np.array([self.index(n) for n in names], np.int64)

    @property
    def colors(self) -> np.ndarray:
        return np.asarray(self._colours, np.uint8).reshape(-1, 3)

    def style(self) -> dict:
        return {"class_names": list(self.names), "colors": self.colors}


def dataset_id_names(meta) -> dict:
    """Dataset category id -> class name, from the metadata's id maps (things win)."""
    out = {}
    for key, names in (("stuff_dataset_id_to_contiguous_id", "stuff_classes"),
                       ("thing_dataset_id_to_contiguous_id", "thing_classes")):
        mapping, classes = meta.get(key, None), meta.get(names, None)
        if mapping and classes:
            out.update({int(k): classes[v] for k, v in mapping.items() if 0 <= v < len(classes)})
    return out


# ---------------------------------------------------------------------------------------------
# ground truth of one record


def _read_image(path) -> np.ndarray:
    """The BGR image as training reads it: a missing, empty, corrupt or oversized file is one
    D2SegError line naming it."""
    from d2seg.visualize.files import read_image

    return read_image(path, missing_hint="check the dataset's images folder (its manifest's "
                                         "'images:')")


def _record_annotations(record) -> list[dict]:
    """detectron2 record annotations as COCO annotations (XYWH boxes; masks unchanged)."""
    from detectron2.structures import BoxMode

    anns = []
    for a in record.get("annotations", []):
        ann = {"category_id": a["category_id"], "iscrowd": a.get("iscrowd", 0)}
        if a.get("segmentation"):
            ann["segmentation"] = a["segmentation"]
        if "bbox" in a:
            mode = a.get("bbox_mode", BoxMode.XYWH_ABS)
            ann["bbox"] = list(BoxMode.convert(list(a["bbox"]), mode, BoxMode.XYWH_ABS))
        anns.append(ann)
    return anns


def draw_ground_truth(image, record, kind: str, space: ClassSpace, *, alpha: float = 0.5,
                      ignore_label: int = 255) -> tuple[np.ndarray, str]:
    """One record's ground truth drawn on its image, and the panel's title."""
    h, w = image.shape[:2]
    if kind == "instances":
        truth = annotations_to_instances(_record_annotations(record), h, w)
        return (draw_instances(image, **truth.draw_kwargs(), **space.style(), alpha=alpha),
                f"ground truth ({len(truth)})")
    if kind == "panoptic":
        pan = read_panoptic_png(record["pan_seg_file_name"])
        _check_size(pan, image, record["pan_seg_file_name"])
        segments = record.get("segments_info", [])
        return (draw_panoptic(image, pan, segments, space.names, space.isthing, space.colors,
                              alpha), f"ground truth ({len(segments)} segments)")
    labels = read_label_png(record["sem_seg_file_name"])
    _check_size(labels, image, record["sem_seg_file_name"])
    return (draw_semantic(image, labels, space.names, space.colors, ignore_label, alpha),
            "ground truth")


def _check_size(region_map: np.ndarray, image: np.ndarray, path) -> None:
    if region_map.shape[:2] != image.shape[:2]:
        raise D2SegError(f"is {region_map.shape[0]}x{region_map.shape[1]} but its image is "
                         f"{image.shape[0]}x{image.shape[1]}", file=str(path))


# ---------------------------------------------------------------------------------------------
# predictions: a results file


class FilePredictions:
    """Predictions read from a file, drawn per record (instance, panoptic or semantic results)."""

    def __init__(self, source, meta, records, space: ClassSpace, pred_dir=None):
        from d2seg.io.coco import load_results

        data = read_json_or_parsed(source, "predictions file")
        self.source, self.space = source, space
        self._names = dataset_id_names(meta)
        if isinstance(data, Mapping) and "annotations" in data:  # COCO panoptic predictions
            self.kind = "panoptic"
            data = load_panoptic_json(data, "panoptic predictions")
            self.folder = panoptic_dir(source, pred_dir)
            for c in data.get("categories", []):  # the dataset's own names take precedence
                if isinstance(c, Mapping) and "id" in c and "name" in c:
                    self._names.setdefault(int(c["id"]), c["name"])
            self.by_image = {a["image_id"]: a for a in data["annotations"]}
        elif isinstance(data, list) and data and all(
                isinstance(r, Mapping) and "file_name" in r and "image_id" not in r for r in data):
            self.kind = "semantic"  # detectron2's sem_seg_predictions.json
            self.by_file = {}
            for r in data:
                self.by_file.setdefault(Path(r["file_name"]).name, []).append(r)
            if not {Path(r["file_name"]).name for r in records} & set(self.by_file):
                raise D2SegError("no prediction's file_name is an image of the dataset",
                                 file=_name(source))
            return
        else:
            self.kind = "instances"
            self.by_image = group_by_image(load_results(data))
        if self.by_image and not set(self.by_image) & {r.get("image_id") for r in records}:
            raise D2SegError(f"no prediction's image_id is in the dataset (e.g. "
                             f"{next(iter(self.by_image))!r})", file=_name(source),
                             hint="the results must use the dataset's image ids (as "
                                  "COCOEvaluator and `d2seg predict --dataset` write them)")

    def _class(self, dataset_id, isthing: bool = False) -> int:
        name = self._names.get(int(dataset_id))
        if name is None:
            raise D2SegError(f"category_id {dataset_id} is not a category of the dataset",
                             file=_name(self.source),
                             hint="results must use the dataset's category ids")
        return self.space.index(name, isthing)

    def draw(self, image, record, *, score_thresh: float, alpha: float,
             ignore_label: int) -> tuple[np.ndarray, str]:
        image_id = record.get("image_id")
        if self.kind == "instances":
            found = results_to_instances(self.by_image.get(image_id, []), image.shape[:2],
                                         where=f"image {image_id}")
            found.classes = [self._class(c, True) for c in found.classes]
            return draw_found(image, found, self.space, score_thresh, alpha)
        if self.kind == "panoptic":
            ann = self.by_image.get(image_id)
            pan, segments = np.zeros(image.shape[:2], np.int64), []
            if ann is not None:
                png = self.folder / ann["file_name"]
                pan = read_panoptic_png(png)
                _check_size(pan, image, png)
                for s in ann.get("segments_info", []):
                    index = self._class(s["category_id"], bool(s.get("isthing", False)))
                    segments.append(dict(s, category_id=index,
                                         isthing=bool(s.get("isthing", self.space.isthing[index]))))
            return (draw_panoptic(image, pan, segments, self.space.names, self.space.isthing,
                                  self.space.colors, alpha),
                    f"prediction ({len(segments)} segments)")
        labels = np.full(image.shape[:2], ignore_label, np.int64)
        for r in self.by_file.get(Path(record["file_name"]).name, []):
            labels[_decode(r["segmentation"], image.shape[:2], self.source)] = \
                self._class(r["category_id"])
        return (draw_semantic(image, labels, self.space.names, self.space.colors, ignore_label,
                              alpha), "prediction")


def _decode(segmentation, size, source) -> np.ndarray:
    from pycocotools import mask as mask_utils

    rle = to_rle(segmentation, *size, where=_name(source))
    return mask_utils.decode(rle).astype(bool)


def _name(source):
    return str(source) if isinstance(source, (str, Path)) else None


def draw_found(image, found: InstanceSet, space: ClassSpace, score_thresh: float, alpha: float):
    shown = found.above(score_thresh)
    return (draw_instances(image, **shown.draw_kwargs(), **space.style(), alpha=alpha),
            f"prediction ({len(shown)}, score >= {score_thresh:g})")


# ---------------------------------------------------------------------------------------------
# the whole dataset


def _order(record):
    """Records by image id (numbers numerically), then file name."""
    image_id = record.get("image_id")
    if isinstance(image_id, (int, np.integer)):
        return (0, int(image_id), "", record["file_name"])
    return (1, 0, "" if image_id is None else str(image_id), record["file_name"])


def _output_names(records) -> list[str]:
    stems = [Path(r["file_name"]).stem for r in records]
    taken = {s for s in stems if stems.count(s) > 1}
    return [f"{s}_{r.get('image_id', i)}.png" if s in taken else f"{s}.png"
            for i, (s, r) in enumerate(zip(stems, records))]


def visualize_dataset(name: str, out_dir, *, pred=None, pred_dir=None, model=None,
                      n: int | None = None, score_thresh: float = 0.5, alpha: float = 0.5,
                      batch_size: int = 2, progress: bool | None = None,
                      register: bool = True) -> list[Path]:
    """Write ``<out_dir>/<image stem>.png`` for each image of a registered dataset.

    Left: its ground truth (instances, panoptic map or label map, whichever the dataset holds).
    Right, when asked: predictions from ``pred`` (a results JSON, path or loaded; a panoptic
    JSON's PNGs are in ``pred_dir``, default the JSON's path without ``.json``), or from
    ``model``: a callable ``model(meta, space, kind)`` returning a prediction source with
    ``source(images) -> outputs`` and ``source.draw(image, output, **style) -> (picture, title)``
    (``d2seg.runners.visualize`` builds one from a config and weights). ``n`` keeps the first N
    images by image id. ``register`` first registers every manifest d2seg finds
    (``d2seg.data.register.register_datasets``).
    """
    if n is not None and n < 1:
        raise D2SegError(f"n must be at least 1, got {n}")
    model_given = model is not None
    if pred is not None and model_given:
        raise D2SegError("predictions from a file and from a model: give one",
                         hint="--pred RESULTS.json, or --config-file CFG --weights FILE")
    records, meta = lookup_dataset(name, register=register)
    if not records:
        raise D2SegError(f"dataset {name!r} has no images", where="--dataset")
    kind = dataset_kind(records)
    if kind is None and pred is None and not model_given:
        raise D2SegError(f"dataset {name!r} has no ground truth to draw", where="--dataset",
                         hint="give --pred RESULTS.json or a model (--config-file, --weights)")
    records = sorted(records, key=_order)
    space = ClassSpace.for_dataset(meta, kind)
    ignore = int(meta.get("ignore_label", 255))

    source = None
    if pred is not None:
        source = FilePredictions(pred, meta, records, space, pred_dir)
    elif model_given:
        source = model(meta, space, kind)
    if n is not None:
        records = records[:n]

    out_dir = Path(out_dir)
    names = _output_names(records)
    step = max(1, int(batch_size)) if model_given else 1
    style = {"score_thresh": score_thresh, "alpha": alpha, "ignore_label": ignore}
    written = []
    with tqdm(total=len(records), desc=f"visualize {name}", unit="img",
              disable=None if progress is None else not progress) as bar:
        for start in range(0, len(records), step):
            chunk = records[start:start + step]
            images = [_read_image(r["file_name"]) for r in chunk]
            outputs = source(images) if model_given else [None] * len(chunk)
            for record, image, output, out_name in zip(chunk, images, outputs,
                                                       names[start:start + step]):
                _check_image_size(image, record)
                panels = []
                if kind is not None:
                    panels.append(draw_ground_truth(image, record, kind, space, alpha=alpha,
                                                    ignore_label=ignore))
                if source is not None:
                    panels.append(source.draw(image, output if model_given else record, **style))
                picture = side_by_side([p for p, _ in panels], [t for _, t in panels])
                written.append(write_png_atomic(out_dir / out_name, picture))
                bar.update(1)
    return written


def _check_image_size(image, record) -> None:
    size = (record.get("height"), record.get("width"))
    if None not in size and tuple(image.shape[:2]) != (int(size[0]), int(size[1])):
        raise D2SegError(f"image is {image.shape[0]}x{image.shape[1]} but the dataset says "
                         f"{size[0]}x{size[1]}", file=str(record["file_name"]))
