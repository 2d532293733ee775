"""Check a semantic-segmentation dataset (images + single-channel label PNGs) before training:
missing or unreadable labels, colour or palette PNGs, size mismatches, ids out of range."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from d2seg.data.coco_files import inspect_image
from d2seg.data.problems import CheckResult, Problem, progress_bar
from d2seg.errors import D2SegError
from d2seg.io.images import IMAGE_SUFFIXES

def _by_stem(folder: Path, suffixes) -> dict[str, Path]:
    """Files directly in ``folder`` by stem, as detectron2's ``load_sem_seg`` pairs them."""
    return {p.stem: p for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix.lower() in suffixes} if folder.is_dir() else {}


def check_sem_seg(image_root: str | os.PathLike, label_root: str | os.PathLike, *,
                  num_classes: int, ignore_label: int = 255, decode: bool = True,
                  progress: bool | None = None) -> CheckResult:
    """Check a folder of images against a folder of semantic label PNGs (same stems).

    detectron2 silently drops images without a label, reads labels with ``convert("L")`` (a
    palette or RGB PNG becomes grey levels, not class ids) and fails late on out-of-range ids.
    """
    image_root, label_root = Path(image_root), Path(label_root)
    for folder in (image_root, label_root):
        if not folder.is_dir():
            raise D2SegError("folder not found", file=str(folder))
    images, labels = _by_stem(image_root, IMAGE_SUFFIXES), _by_stem(label_root, (".png",))
    result = CheckResult(label_root, "sem_seg")
    add = result.problems.append
    for stem in sorted(set(labels) - set(images)):
        add(Problem("semseg_image_missing", str(labels[stem]), "label has no image",
                    "add the image or delete the label (it is not used)"))
    for stem in progress_bar(sorted(images), "labels", progress):
        img, lab = images[stem], labels.get(stem)
        if lab is None:
            add(Problem("semseg_label_missing", str(img), f"no {stem}.png in {label_root}",
                        "add the label; detectron2 drops the image silently"))
            continue
        size, kind, why = inspect_image(img, decode)
        if kind is not None:
            add(Problem(kind, str(img), why, "replace or delete the image"))
            continue
        try:
            with Image.open(lab) as im:
                mode, ids = im.mode, np.asarray(im)
        except Exception as e:
            add(Problem("semseg_label_unreadable", str(lab), f"cannot read: {e}",
                        "re-export the label PNG"))
            continue
        if mode == "P":
            add(Problem("semseg_label_palette", str(lab), "palette PNG: d2seg reads its palette "
                        "indices as class ids, but detectron2's own training loader would read "
                        "grey levels of the palette colours", "to use the data outside d2seg, "
                        "save the indices as a mode 'L' PNG"))
        if ids.ndim != 2:
            add(Problem("semseg_label_not_single_channel", str(lab), f"{mode} PNG with "
                        f"{ids.shape[2]} channels", "save one channel of class ids (mode 'L')"))
            continue
        if (ids.shape[1], ids.shape[0]) != size:
            add(Problem("semseg_size_mismatch", str(lab), f"label is {ids.shape[1]}x"
                        f"{ids.shape[0]}, image is {size[0]}x{size[1]}",
                        "re-export the label at image size"))
            continue
        values = np.unique(ids)
        bad = [int(v) for v in values if not (0 <= v < num_classes or v == ignore_label)]
        if bad:
            add(Problem("semseg_label_out_of_range", str(lab), f"values {bad[:8]} are neither "
                        f"class ids 0..{num_classes - 1} nor the ignore label {ignore_label}",
                        "fix the labels, the classes list or ignore_label"))
    result.counts = {"images": len(images), "annotations": len(labels),
                     "categories": num_classes,
                     "images_without_annotations": result.by_kind()["semseg_label_missing"],
                     "errors": len(result.errors), "warnings": len(result.warnings)}
    return result
