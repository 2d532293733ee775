"""Turn the formats people annotate in into COCO instances JSON.

Layouts (documented once, here):

* **labelme**: a folder of labelme ``*.json`` files (searched recursively). Shapes of type
  ``polygon`` and ``rectangle`` become instances; shapes with the same label and ``group_id``
  are one instance of several polygons. Image size is taken from ``imageHeight``/``imageWidth``;
  ``file_name`` is ``imagePath`` relative to the folder. Category ids are 1..K in the order of
  ``labels`` if given (a list, or a labels file: one name a line, as labelme's ``labels.txt``),
  else of the sorted label names. Shapes labelled ``__ignore__`` are skipped and counted, and
  ``__ignore__`` is never a category (labelme's own COCO export drops it the same way; its
  ``_background_`` is kept as a category). Other shape types are skipped and counted.
* **instance masks**: one PNG per image (8- or 16-bit, single channel), Cityscapes-style:
  pixel value ``class_index * divisor + instance`` with ``class_index`` 1-based into
  ``classes`` and ``instance`` >= 1; values below ``divisor`` (0 = background, or semantic
  regions without instances) are not instances. Each distinct value >= divisor becomes one
  annotation with a compressed RLE.
* **semantic masks**: one single-channel PNG per image with pixel value = class index
  (0-based into ``classes``), ``ignore_label`` ignored. Each class present in an image becomes
  one non-crowd annotation with a compressed RLE of all its pixels (COCO-stuff style), so the
  JSON trains semantic heads or evaluates as "stuff".

For the mask layouts, the image of ``<stem>.png`` is the file ``<stem>.*`` in ``image_dir``.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from d2seg.errors import D2SegError
from d2seg.io.json import read_json
from d2seg.io.labels import read_label_png
from d2seg.io.rle import encode_mask, to_rle
from d2seg.io.files import write_json_atomic
from d2seg.io.images import IMAGE_SUFFIXES


def _categories(names) -> list[dict]:
    return [{"id": i + 1, "name": n, "supercategory": n} for i, n in enumerate(names)]


def _rle_annotation(mask, ann_id, image_id, category_id) -> dict:
    rle = encode_mask(mask)
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "iscrowd": 0,
            "segmentation": rle, "area": float(mask_utils.area(rle)),
            "bbox": [float(v) for v in mask_utils.toBbox(rle)]}


#: labelme's label for shapes that mark regions to ignore; never a class.
LABELME_IGNORE = "__ignore__"


def read_labels_file(path: str | os.PathLike) -> list[str]:
    """Class names from a labels file, one a line (labelme's ``labels.txt``); blank lines are
    skipped, ``__ignore__`` is dropped, a name listed twice is an error naming the file."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise D2SegError(f"cannot read the labels file ({getattr(e, 'strerror', None) or e})",
                         file=str(path)) from None
    names, seen = [], {}
    for number, line in enumerate(lines, start=1):
        name = line.strip()
        if not name or name == LABELME_IGNORE:
            continue
        if name in seen:
            raise D2SegError(f"label {name!r} is listed twice (first on line {seen[name]})",
                             file=str(path), where=f"line {number}")
        seen[name] = number
        names.append(name)
    return names


def labelme_to_coco(src_dir: str | os.PathLike, out_json: str | os.PathLike, *,
                    labels: list[str] | str | os.PathLike | None = None) -> dict:
    """Convert a labelme folder to one COCO instances JSON; returns a summary dict.

    ``labels``: the class order, as a list of names or the path of a labels file
    (``read_labels_file``); ``__ignore__`` in it is dropped. A label used in the files but not
    listed is an error naming the labels file (or, for a list, the first labelme file using it).
    """
    src = Path(src_dir)
    files = sorted(src.rglob("*.json"))
    if not files:
        raise D2SegError("no labelme *.json file found", file=str(src))
    docs = []
    for f in files:
        doc = read_json(f, "labelme file")
        if not isinstance(doc, dict) or "shapes" not in doc:
            continue  # not a labelme file (e.g. a COCO JSON in the same folder)
        for key in ("imagePath", "imageHeight", "imageWidth"):
            if key not in doc:
                raise D2SegError(f"labelme file has no '{key}'", file=str(f), where=key)
        docs.append((f, doc))
    labels_file = None
    if isinstance(labels, (str, os.PathLike)):
        labels_file, labels = str(labels), read_labels_file(labels)
    elif labels is not None:
        labels = [str(n) for n in labels if str(n) != LABELME_IGNORE]
        if duplicated := sorted({n for n in labels if labels.count(n) > 1}):
            raise D2SegError(f"labels {duplicated} are listed twice", where="--labels")
    used: dict[str, Path] = {}  # label -> first labelme file using it
    for f, d in docs:
        for shape in d["shapes"]:
            used.setdefault(shape["label"], f)
    found = sorted(n for n in used if n != LABELME_IGNORE)
    if labels is None:
        labels = found
    elif missing := [n for n in used if n != LABELME_IGNORE and n not in labels]:
        first, others = missing[0], missing[1:]  # in the order the files use them
        also = f" (nor are {others})" if others else ""
        if labels_file is not None:
            raise D2SegError(f"label {first!r}, used in {used[first]}, is not listed{also}",
                             file=labels_file, hint="add it to the labels file")
        raise D2SegError(f"label {first!r} is not in the --labels list{also}",
                         file=str(used[first]), where="--labels", hint="add it to --labels")
    cat_id = {n: i + 1 for i, n in enumerate(labels)}
    images, annotations, skipped = [], [], Counter()
    for image_id, (f, doc) in enumerate(docs, start=1):
        h, w = int(doc["imageHeight"]), int(doc["imageWidth"])
        target, root = (f.parent / doc["imagePath"]).resolve(), src.resolve()
        rel = target.relative_to(root) if target.is_relative_to(root) else Path(doc["imagePath"])
        images.append({"id": image_id, "file_name": rel.as_posix(), "height": h, "width": w})
        groups: dict = {}
        for k, s in enumerate(doc["shapes"]):
            if s["label"] == LABELME_IGNORE:
                skipped[LABELME_IGNORE] += 1
                continue
            kind = s.get("shape_type") or "polygon"
            pts = np.asarray(s.get("points", []), dtype=float).reshape(-1, 2)
            if kind == "rectangle" and len(pts) == 2:
                (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
                pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
            elif kind != "polygon" or len(pts) < 3:
                skipped[kind if kind != "polygon" else "polygon<3 points"] += 1
                continue
            gid = s.get("group_id")
            key = (s["label"], gid) if gid is not None else (s["label"], f"shape{k}")
            groups.setdefault(key, []).append(pts)
        for (label, _), polys in groups.items():
            seg = [p.reshape(-1).tolist() for p in polys]
            rle = to_rle(seg, h, w, file=str(f))
            allpts = np.concatenate(polys)
            (x0, y0), (x1, y1) = allpts.min(0), allpts.max(0)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": cat_id[label], "iscrowd": 0,
                                "segmentation": seg, "area": float(mask_utils.area(rle)),
                                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]})
    coco = {"images": images, "annotations": annotations, "categories": _categories(labels)}
    write_json_atomic(out_json, coco)
    return {"images": len(images), "annotations": len(annotations),
            "categories": len(labels), "skipped_shapes": dict(skipped)}


def _image_for(stem: str, image_dir: Path) -> Path:
    for suffix in IMAGE_SUFFIXES:
        for cand in (image_dir / f"{stem}{suffix}", image_dir / f"{stem}{suffix.upper()}"):
            if cand.is_file():
                return cand
    raise D2SegError(f"no image named {stem}.* for its mask", file=str(image_dir),
                     hint="masks and images must share the file stem")


def _mask_images(mask_dir, image_dir):
    mask_dir, image_dir = Path(mask_dir), Path(image_dir)
    pngs = sorted(mask_dir.glob("*.png"))
    if not pngs:
        raise D2SegError("no *.png mask found", file=str(mask_dir))
    for image_id, png in enumerate(pngs, start=1):
        labels = read_label_png(png, "mask PNG")
        image = _image_for(png.stem, image_dir)
        with Image.open(image) as im:
            if im.size != (labels.shape[1], labels.shape[0]):
                raise D2SegError(f"mask is {labels.shape[1]}x{labels.shape[0]} but the image "
                                 f"is {im.size[0]}x{im.size[1]}", file=str(png))
        entry = {"id": image_id, "file_name": image.relative_to(image_dir).as_posix(),
                 "height": int(labels.shape[0]), "width": int(labels.shape[1])}
        yield png, entry, labels


def instance_masks_to_coco(mask_dir, out_json, *, image_dir, classes: list[str],
                           divisor: int = 1000) -> dict:
    """Convert Cityscapes-style instance-id PNGs (see module doc) to COCO with RLE masks."""
    images, annotations = [], []
    for png, entry, labels in _mask_images(mask_dir, image_dir):
        images.append(entry)
        for value in np.unique(labels):
            if value < divisor:
                continue
            cls = int(value) // divisor
            if not 1 <= cls <= len(classes):
                raise D2SegError(f"pixel value {value} means class {cls}, but only "
                                 f"{len(classes)} classes are given", file=str(png),
                                 hint=f"values are class_index * {divisor} + instance")
            annotations.append(_rle_annotation(labels == value, len(annotations) + 1,
                                               entry["id"], cls))
    coco = {"images": images, "annotations": annotations, "categories": _categories(classes)}
    write_json_atomic(out_json, coco)
    return {"images": len(images), "annotations": len(annotations), "categories": len(classes)}


def semantic_masks_to_coco(mask_dir, out_json, *, image_dir, classes: list[str],
                           ignore_label: int = 255) -> dict:
    """Convert semantic label PNGs to COCO, one RLE annotation per class present per image."""
    images, annotations = [], []
    for png, entry, labels in _mask_images(mask_dir, image_dir):
        images.append(entry)
        for value in np.unique(labels):
            if value == ignore_label:
                continue
            if not 0 <= value < len(classes):
                raise D2SegError(f"pixel value {value} is not a class index (0..{len(classes) - 1})"
                                 f" nor the ignore label {ignore_label}", file=str(png),
                                 hint="pass all class names, or --ignore-label")
            annotations.append(_rle_annotation(labels == value, len(annotations) + 1,
                                               entry["id"], int(value) + 1))
    coco = {"images": images, "annotations": annotations, "categories": _categories(classes)}
    write_json_atomic(out_json, coco)
    return {"images": len(images), "annotations": len(annotations), "categories": len(classes)}
