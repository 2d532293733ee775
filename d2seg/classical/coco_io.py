"""Images in, COCO results out: the file handling shared by the classical methods.

Classical methods write what the models write (COCO results with compressed RLE masks, semantic
label PNGs), so ``d2seg eval`` and ``d2seg visualize`` read their outputs unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_util

from d2seg.errors import D2SegError
from d2seg.io.images import IMAGE_SUFFIXES, read_image

__all__ = ["ImageEntry", "images_from_coco", "images_from_folder", "read_rgb",
           "mask_to_result", "label_map_to_results"]


@dataclass(frozen=True)
class ImageEntry:
    """One image to process: its COCO id and file (and size when a COCO file gives it)."""

    image_id: int
    path: Path
    size: tuple[int, int] | None = None  # (height, width)


def _check_dir(images_dir) -> Path:
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise D2SegError("image folder not found", file=str(images_dir))
    return images_dir


def images_from_coco(coco: dict, images_dir) -> list[ImageEntry]:
    """The images a COCO file lists, found under ``images_dir`` (by path, else by base name)."""
    images_dir = _check_dir(images_dir)
    entries = []
    for im in sorted(coco["images"], key=lambda im: im["id"]):
        path = images_dir / im["file_name"]
        if not path.exists():
            path = images_dir / Path(im["file_name"]).name
        entries.append(ImageEntry(im["id"], path, (int(im["height"]), int(im["width"]))))
    return entries


def images_from_folder(images_dir) -> list[ImageEntry]:
    """Every image in a folder, its id being the number its name ends with (COCO's naming)."""
    images_dir = _check_dir(images_dir)
    entries, seen = [], {}
    for path in sorted(images_dir.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        m = re.search(r"(\d+)$", path.stem)
        if m is None:
            raise D2SegError("image name does not end with its numeric id", file=str(path),
                             hint="pass a COCO file listing the images (--coco) or rename it "
                                  "like 000042.jpg")
        image_id = int(m.group(1))
        if image_id in seen:
            raise D2SegError(f"image id {image_id} also belongs to {seen[image_id].name}",
                             file=str(path), hint="pass a COCO file listing the images (--coco)")
        seen[image_id] = path
        entries.append(ImageEntry(image_id, path))
    if not entries:
        raise D2SegError("no images in the folder", file=str(images_dir),
                         hint=f"image files end with one of {', '.join(IMAGE_SUFFIXES)}")
    return entries


def read_rgb(entry: ImageEntry | Path) -> np.ndarray:
    """An (H, W, 3) uint8 RGB image; a one-line error when missing or not the listed size."""
    path = entry.path if isinstance(entry, ImageEntry) else Path(entry)
    image = cv2.cvtColor(read_image(path), cv2.COLOR_BGR2RGB)
    size = entry.size if isinstance(entry, ImageEntry) else None
    if size is not None and image.shape[:2] != tuple(size):
        raise D2SegError(f"image is {image.shape[0]}x{image.shape[1]} but the COCO file says "
                         f"{size[0]}x{size[1]}", file=str(path))
    return image


def mask_to_result(mask: np.ndarray, image_id: int, category_id: int, score: float) -> dict:
    """One COCO result: compressed RLE (counts as text), the mask's box in XYWH, a score."""
    rle = mask_util.encode(np.asfortranarray(mask, dtype=np.uint8))
    bbox = [float(v) for v in mask_util.toBbox(rle)]
    rle["counts"] = rle["counts"].decode("ascii")
    return {"image_id": int(image_id), "category_id": int(category_id), "segmentation": rle,
            "bbox": bbox, "score": float(score)}


def label_map_to_results(labels: np.ndarray, image_id: int, category_id: int,
                         score: float = 1.0) -> list[dict]:
    """One COCO result per positive label of an instance label map (0 = background)."""
    return [mask_to_result(labels == k, image_id, category_id, score)
            for k in np.unique(labels) if k > 0]
