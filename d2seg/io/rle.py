"""COCO masks: any ``segmentation`` as one compressed RLE, a binary mask as JSON-ready RLE.

A COCO segmentation is a list of polygons (flat ``[x0, y0, x1, y1, ...]`` lists), an
uncompressed RLE (``counts`` a list of run lengths) or a compressed RLE (``counts`` a string).
pycocotools' ``frPyObjects`` reads a first polygon of 4 numbers as a box and keeps the RLE's own
size whatever height and width it is given, so :func:`to_rle` checks both first.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Real

import numpy as np
from pycocotools import mask as mask_utils

from d2seg.errors import D2SegError

__all__ = ["polygon_problem", "to_rle", "encode_mask"]


def polygon_problem(polygon) -> str | None:
    """Why ``polygon`` is not a usable COCO polygon (None when it is): it must be a list of an
    even number >= 6 of numbers, i.e. at least 3 points (detectron2 drops the others)."""
    if not isinstance(polygon, list):
        return f"polygon is a {type(polygon).__name__}, not a list of coordinates"
    if not all(isinstance(v, Real) and not isinstance(v, bool) for v in polygon):
        return "polygon has coordinates that are not numbers"
    if len(polygon) < 6 or len(polygon) % 2:
        return (f"polygon has {len(polygon)} coordinates (need an even number >= 6, "
                "i.e. >= 3 points)")
    return None


def _check_size(rle: Mapping, height: int, width: int, where: str | None, file: str | None):
    size = rle.get("size")
    if not (isinstance(size, (list, tuple)) and len(size) == 2):
        raise D2SegError(f"RLE 'size' is {size!r:.40}, not [height, width]", file=file,
                         where=where)
    if [int(size[0]), int(size[1])] != [int(height), int(width)]:
        raise D2SegError(f"mask size {list(size)} differs from the image {height}x{width}",
                         file=file, where=where)


def to_rle(segmentation, height: int, width: int, *, where: str | None = None,
           file: str | None = None) -> dict:
    """One compressed RLE (``counts`` as bytes) of a COCO segmentation on a ``height`` x
    ``width`` image: polygons are merged (unusable polygons, see :func:`polygon_problem`, are
    skipped as detectron2 skips them), an uncompressed RLE is compressed, a compressed one is
    returned as a copy. An RLE of another size, no usable polygon, or anything else is one
    D2SegError (``file`` and ``where`` name the annotation)."""
    try:
        if isinstance(segmentation, list):
            polygons = [p for p in segmentation if polygon_problem(p) is None]
            if not polygons:
                reason = (polygon_problem(segmentation[0]) if segmentation
                          else "segmentation is an empty list")
                raise D2SegError(f"no usable polygon: {reason}" if segmentation else reason,
                                 file=file, where=where)
            return mask_utils.merge(mask_utils.frPyObjects(polygons, int(height), int(width)))
        if isinstance(segmentation, Mapping) and "counts" in segmentation:
            _check_size(segmentation, height, width, where, file)
            counts = segmentation["counts"]
            if isinstance(counts, list):
                return mask_utils.frPyObjects({"size": [int(height), int(width)],
                                               "counts": counts}, int(height), int(width))
            if isinstance(counts, str):
                counts = counts.encode("ascii")
            if not isinstance(counts, bytes):
                raise D2SegError(f"RLE 'counts' is a {type(counts).__name__}, not a list or a "
                                 "string", file=file, where=where)
            return {"size": [int(height), int(width)], "counts": counts}
    except (TypeError, ValueError, UnicodeEncodeError) as e:
        raise D2SegError(f"unreadable segmentation ({e})", file=file, where=where) from None
    raise D2SegError(f"segmentation is neither polygons nor RLE ({type(segmentation).__name__})",
                     file=file, where=where)


def encode_mask(mask: np.ndarray) -> dict:
    """A 2-D binary mask as a JSON-ready compressed RLE: ``size`` [height, width] as ints,
    ``counts`` as an ASCII string."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask), dtype=np.uint8))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
