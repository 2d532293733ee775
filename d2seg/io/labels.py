"""Read a label PNG (semantic class ids, instance ids) the same way in training, evaluation,
comparison, drawing and conversion.

A label map is one channel of integers. Grey PNGs (8- or 16-bit) hold them as values; palette
PNGs (VOC and CamVid-style exports) hold them as palette indices, and the index is the id: that
is what detectron2's ``SemSegEvaluator`` reads (``np.array(Image.open(f))``), while its training
loader's ``convert("L")`` would turn the indices into grey levels of the palette colours, and
OpenCV's ``imread`` into BGR colours. Every d2seg reader goes through :func:`read_label_png`, so a
file means the same ids everywhere. A PNG with colour channels is refused with one line naming
the file, since its colours are not ids.
"""

from __future__ import annotations

import os

import numpy as np

from d2seg.io.images import UnreadableImageError, decode_upright

__all__ = ["read_label_png"]

#: PIL modes whose pixel values are ids as they are (P: palette indices).
_ID_MODES = ("L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N", "1")


def read_label_png(path: str | os.PathLike, what: str = "label PNG") -> np.ndarray:
    """(H, W) ids of a single-channel label image: uint8 for 8-bit and palette files, the
    stored integer type for 16- and 32-bit ones. A missing, broken or colour file is a
    one-line :class:`~d2seg.io.images.UnreadableImageError` naming it (``what`` says which file
    it is), so that training skips it like an unreadable image."""
    try:
        image = decode_upright(path)
    except UnreadableImageError as e:
        raise UnreadableImageError(f"{what} unreadable: {e.reason}", file=str(path),
                                   hint=e.hint) from None
    if image.mode not in _ID_MODES:
        bands = "+".join(image.getbands())
        raise UnreadableImageError(f"{what} has colour channels ({image.mode}: {bands}), not one channel "
                         "of ids", file=str(path),
                         hint="save the ids as a single-channel (grey or palette) PNG")
    ids = np.asarray(image)
    if image.mode == "1":
        ids = ids.astype(np.uint8)
    if ids.dtype.byteorder == ">":
        ids = ids.astype(ids.dtype.newbyteorder("="))
    return ids
