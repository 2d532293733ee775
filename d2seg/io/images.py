"""Read an image file the same way everywhere: training, evaluation, prediction, drawing.

detectron2's ``read_image`` and OpenCV's ``imread`` disagree on the awkward files, and both
fail in unhelpful ways: a truncated JPEG is a traceback at iteration N (detectron2) or a grey
half-image plus a libjpeg line on stderr (OpenCV), a 16-bit greyscale PNG saturates to white in
detectron2, a 30000x30000 header makes OpenCV allocate gigabytes. ``read_image`` here:

- applies the EXIF orientation (as detectron2 and OpenCV do; a broken EXIF block is ignored);
- converts greyscale, palette, CMYK and two-channel images to RGB (PIL's ``convert("RGB")``),
  and drops an alpha channel (RGBA -> RGB, the colour values as stored, not blended);
- scales 16-bit images to 8 bits by keeping the high byte (``value >> 8``, so 65535 -> 255 and
  0..255 -> 0), which is what OpenCV's ``imread`` and PIL's 16-bit RGB decoder do;
- raises :class:`UnreadableImageError` (a one-line ``D2SegError`` naming the file) for a missing
  or empty file, a file that is not an image, truncated or corrupt image data, and an image
  over PIL's decompression-bomb limit (``2 * PIL.Image.MAX_IMAGE_PIXELS`` pixels; raise
  ``MAX_IMAGE_PIXELS`` to read bigger trusted files).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from d2seg.errors import D2SegError

#: File suffixes d2seg takes for images when it lists a folder (lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

#: PIL modes holding more than 8 bits per sample in one channel, scaled with ``>> 8``.
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class UnreadableImageError(D2SegError):
    """An image file that cannot be used: missing, empty, not an image, truncated, too large."""


def _unreadable(path, reason: str, hint: str | None = None) -> UnreadableImageError:
    return UnreadableImageError(reason, file=str(path), hint=hint)


def over_pixel_limit(pixels: int, limit: int) -> str:
    """Why an image over the decompression-bomb limit is refused (PIL's, or a header check)."""
    return (f"image of {pixels / 1e6:.0f} Mpx is over the {limit / 1e6:.0f} Mpx "
            "decompression-bomb limit (2 x PIL.Image.MAX_IMAGE_PIXELS)")


def _bomb_reason(error: Exception) -> str:
    """The image's size against PIL's limit, from PIL's message (it refuses to decode it)."""
    found = re.search(r"\((\d+) pixels\) exceeds limit of (\d+) pixels", str(error))
    if not found:
        return f"refused as a possible decompression bomb ({error})"
    return over_pixel_limit(*(int(g) for g in found.groups()))


def open_image(path: str | os.PathLike) -> Image.Image:
    """The decoded image as an 8-bit PIL image (RGB or L), EXIF orientation applied."""
    return _to_8bit(decode_upright(path))


def decode_upright(path: str | os.PathLike) -> Image.Image:
    """The decoded PIL image as stored (any mode, any bit depth), EXIF orientation applied; the
    checks and one-line errors of this module. Images and label maps both start here."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise _unreadable(path, "image file not found") from None
    except OSError as e:
        raise _unreadable(path, f"cannot read the file ({e.strerror})") from None
    if path.is_dir():
        raise _unreadable(path, "is a folder, not an image file")
    if size == 0:
        raise _unreadable(path, "empty file (0 bytes)", "replace the file or remove the image")
    try:
        with Image.open(path) as im:
            im.load()  # decode now: truncated data fails here, not half-way through training
            image = _upright(im)
    except Image.DecompressionBombError as e:
        raise _unreadable(path, _bomb_reason(e),
                          "resize or tile it, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust "
                          "the file") from e
    except UnidentifiedImageError as e:
        with open(path, "rb") as f:
            head = f.read(8)
        raise _unreadable(path, f"not an image file PIL can read (starts with {head!r})",
                          "replace the file or remove the image") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # PIL's decoders raise all these
        text = str(e) or type(e).__name__
        reason = ("truncated image data" if "truncated" in text.lower()
                  else "corrupt image data")
        raise _unreadable(path, f"{reason} ({text})",
                          "replace the file or remove the image") from e
    return image


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; an image whose EXIF cannot be parsed is used as stored."""
    try:
        if im.getexif().get(0x0112, 1) == 1:
            return im  # loaded already: usable once the file is closed, no copy needed
        return ImageOps.exif_transpose(im)
    except Exception:  # broken EXIF: detectron2 and OpenCV ignore it too
        return im


def _to_8bit(im: Image.Image) -> Image.Image:
    """RGB or L, 8 bits per channel; 16-bit samples keep their high byte."""
    if im.mode in _WIDE_MODES:
        wide = np.asarray(im).astype(np.int64)
        return Image.fromarray((np.clip(wide, 0, 65535) >> 8).astype(np.uint8), mode="L")
    if im.mode in ("RGB", "L"):
        return im
    with warnings.catch_warnings():  # "palette images with transparency ...": nothing to do
        warnings.simplefilter("ignore", UserWarning)
        return im.convert("RGB")


def read_image(path: str | os.PathLike, format: str | None = "BGR") -> np.ndarray:
    """An HWC uint8 array in ``format`` ("BGR", "RGB", "L" or any detectron2 input format).

    What detectron2's ``read_image(path, format)`` returns for ordinary 8-bit files, bit for
    bit; the module docstring lists what differs for unusual ones.
    """
    image = open_image(path)
    if format in (None, "RGB", "BGR"):  # None: detectron2 would return L, RGBA ... as stored
        rgb = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
        if format == "BGR":
            import cv2

            return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # contiguous, unlike rgb[..., ::-1]
        return np.array(rgb)  # writable, as detectron2's is
    from detectron2.data.detection_utils import convert_PIL_to_numpy

    return np.ascontiguousarray(convert_PIL_to_numpy(image, format))
