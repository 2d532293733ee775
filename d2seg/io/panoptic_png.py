"""Read COCO panoptic PNGs (segment id = R + 256 G + 256^2 B): one reader for every command.

PQ evaluation is mostly PNG decoding: libpng (OpenCV, Pillow) takes 1.7-2.8 ms per 640x480
panoptic PNG on one core, ~2 ms of it zlib's inflate. Wuffs (Google's memory-safe decoders,
through the optional ``pywuffs`` binding: ``pip install 'd2seg[fast]'``, which ``make`` tries)
decodes the same files in 0.3-0.5 ms to the same bytes. So:

- an 8-bit RGB or RGBA PNG (what panopticapi, detectron2, Pillow and OpenCV write for panoptic
  maps), not interlaced and without a tRNS colour key, is decoded by Wuffs when it is
  installed, else by OpenCV;
- any other PNG (palette, grey, 16-bit, ...) and any file the fast path cannot decode go through
  Pillow's ``convert("RGB")``, which reads them all and words the error for a broken file.

The header is checked first: a missing or empty file, a non-PNG, and a size over the
decompression-bomb limit (``2 * PIL.Image.MAX_IMAGE_PIXELS``, as for images) each raise a
one-line :class:`~d2seg.errors.D2SegError` naming the file, before anything is allocated.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from d2seg.errors import D2SegError

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_RGB, _RGBA = 2, 6  # PNG colour types
_UNSET = object()
_decoder = _UNSET  # per process: a Wuffs decoder, or None without pywuffs


def wuffs_decoder():
    """This process's Wuffs PNG decoder (RGBA, no alpha blending), or None without pywuffs."""
    global _decoder
    if _decoder is _UNSET:
        try:
            from pywuffs import ImageDecoderQuirks, ImageDecoderType, PixelFormat
            from pywuffs.aux import ImageDecoder, ImageDecoderConfig
        except ImportError:
            _decoder = None
        else:
            config = ImageDecoderConfig()
            config.enabled_decoders = [ImageDecoderType.PNG]
            config.pixel_format = PixelFormat.RGBA_NONPREMUL  # colours as stored
            # Wuffs skips zlib and chunk checksums by default: a corrupt file would decode to
            # wrong ids. Checking them costs nothing measurable here.
            config.quirks = {ImageDecoderQuirks.IGNORE_CHECKSUM: 0}
            _decoder = ImageDecoder(config)
    return _decoder


def decoder_name() -> str:
    """Which decoder reads 8-bit RGB(A) panoptic PNGs here (shown by ``d2seg doctor``)."""
    if wuffs_decoder() is None:
        return "OpenCV (pip install 'd2seg[fast]' for Wuffs: PNG decoding ~4x faster)"
    import importlib.metadata

    return f"Wuffs (pywuffs {importlib.metadata.version('pywuffs')})"


def _read_checked(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise D2SegError("panoptic PNG not found", file=str(path),
                         hint="check the PNG folder and the JSON's file_name") from None
    except IsADirectoryError:
        raise D2SegError("is a folder, not a panoptic PNG", file=str(path)) from None
    except OSError as e:
        raise D2SegError(f"cannot read the panoptic PNG ({e.strerror})", file=str(path)) from None
    if not data:
        raise D2SegError("empty file (0 bytes), not a panoptic PNG", file=str(path),
                         hint="re-export the PNG")
    if not data.startswith(_SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 33:
        raise D2SegError(f"not a PNG file (starts with {data[:8]!r})", file=str(path),
                         hint="panoptic ground truth and predictions must be PNG files")
    width, height = struct.unpack(">II", data[16:24])
    from PIL import Image

    from d2seg.io.images import over_pixel_limit

    limit = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else None
    if limit is not None and width * height > limit:
        raise D2SegError(over_pixel_limit(width * height, limit), file=str(path),
                         hint="raise PIL.Image.MAX_IMAGE_PIXELS if you trust it")
    return data


def _plain_rgb(data: bytes) -> bool:
    """8-bit RGB or RGBA, not interlaced, no tRNS colour key: the files the fast path reads
    exactly (Wuffs blanks the colour of tRNS-keyed pixels; the rest go to Pillow)."""
    bit_depth, colour_type, interlace = data[24], data[25], data[28]
    if bit_depth != 8 or colour_type not in (_RGB, _RGBA) or interlace != 0:
        return False
    at = 8
    while at + 8 <= len(data):  # chunks before the image data; tRNS must come before IDAT
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        if kind == b"IDAT":
            return True
        if kind == b"tRNS":
            return False
        at += 12 + length
    return True  # no image data: let the decoder say what is wrong


def _fast_rgba(data: bytes, out: np.ndarray | None) -> np.ndarray | None:
    """(H, W, 4) uint8 of a plain 8-bit RGB/RGBA PNG by Wuffs or OpenCV; None otherwise."""
    if not _plain_rgb(data):
        return None
    decoder = wuffs_decoder()
    if decoder is not None:
        result = decoder.decode(data)
        return None if result.error_message else result.pixbuf
    import cv2

    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    reusable = out is not None and out.shape == bgr.shape[:2] + (4,)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGBA, dst=out if reusable else None)


def _pillow_rgba(path: Path, data: bytes) -> np.ndarray:
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            rgb = np.asarray(im.convert("RGB"))
    except Exception as e:  # Pillow raises many types for broken files
        raise D2SegError(f"panoptic PNG unreadable ({e})", file=str(path),
                         hint="re-export the PNG") from None
    rgba = np.empty(rgb.shape[:2] + (4,), np.uint8)
    rgba[..., :3] = rgb
    return rgba


def read_rgba(path: str | os.PathLike, out: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 4) uint8 RGBA of a panoptic PNG; channel 3 is meaningless.

    ``out``, a previous result, may be reused by the OpenCV path (fewer page faults in loops).
    """
    path = Path(path)
    data = _read_checked(path)
    rgba = _fast_rgba(data, out)
    return rgba if rgba is not None else _pillow_rgba(path, data)


def ids_of_rgba(rgba: np.ndarray) -> np.ndarray:
    """Flat uint32 segment ids, computed in place (``rgba`` is overwritten).

    The bytes R, G, B, A of a pixel read as one little-endian uint32 are id + 2^24 A, so
    masking A off leaves id = R + 256 G + 256^2 B: one pass, no arithmetic per channel.
    """
    ids = rgba.view("<u4").reshape(-1)
    np.bitwise_and(ids, 0xFFFFFF, out=ids)
    return ids


def read_panoptic_png(path: str | os.PathLike) -> np.ndarray:
    """(H, W) uint32 segment ids of a COCO panoptic PNG: id = R + 256 G + 256^2 B."""
    rgba = read_rgba(path)
    return ids_of_rgba(rgba).reshape(rgba.shape[:2])
