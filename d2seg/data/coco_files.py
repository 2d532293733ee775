"""Read the files a COCO dataset is made of, as the checks, statistics and ground-truth drawing
need them: the JSON (one line for a missing file or top-level list), image headers (the size
detectron2 sees, EXIF rotation included) and whether an image decodes."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from d2seg.errors import D2SegError
from d2seg.io.json import read_json

def load_coco_json(json_path: str | os.PathLike) -> dict:
    """Read a COCO JSON; a missing file, bad JSON or missing top-level list is a D2SegError."""
    path = Path(json_path)
    if not path.is_file():
        raise D2SegError("annotation file not found", file=str(path),
                         hint="check the path in the manifest")
    data = read_json(path, "annotation file")
    if not isinstance(data, dict):
        raise D2SegError("top level must be an object with images/annotations/categories",
                         file=str(path))
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise D2SegError(f"'{key}' is missing or not a list", file=str(path), where=key,
                             hint="a COCO file has lists 'images', 'annotations', 'categories'")
    return data


def is_panoptic(data: dict) -> bool:
    """COCO panoptic annotations carry ``segments_info`` instead of a segmentation."""
    return any(isinstance(a, dict) and "segments_info" in a for a in data["annotations"])


def header_size(path: Path) -> tuple[int, int]:
    """(width, height) as detectron2 sees the image (EXIF rotation applied), without decoding."""
    with Image.open(path) as im:
        w, h = im.size
        try:
            orientation = im.getexif().get(0x0112, 1)
        except Exception:  # broken EXIF: detectron2 ignores it too
            orientation = 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def decodes(path: Path) -> str | None:
    """None if the whole image decodes, else the decoder's complaint."""
    try:
        with Image.open(path) as im:
            im.load()
    except Exception as e:  # PIL raises many types for broken files
        return f"{type(e).__name__}: {e}"
    return None


def inspect_image(path: Path, decode: bool = True
                  ) -> tuple[tuple[int, int] | None, str | None, str]:
    """(size, problem kind or None, message) for one image file."""
    if not path.is_file():
        return None, "image_missing", f"image file not found: {path}"
    try:
        size = header_size(path)
    except Exception as e:  # not an image PIL knows
        return None, "image_unreadable", f"cannot read {path}: {e}"
    if decode and (why := decodes(path)):
        return None, "image_unreadable", f"{path} does not decode ({why})"
    return size, None, ""
