"""COCO panoptic segment ids and PNG colours: id = R + 256 G + 256^2 B."""

from __future__ import annotations

import numpy as np

from d2seg.errors import D2SegError

__all__ = ["MAX_ID", "rgb_to_id", "id_to_rgb"]

#: The largest segment id an 8-bit RGB pixel can hold.
MAX_ID = (1 << 24) - 1


def rgb_to_id(rgb) -> np.ndarray:
    """uint32 segment ids of ``(..., 3)`` RGB values (the last axis R, G, B)."""
    rgb = np.asarray(rgb)
    if rgb.shape[-1:] != (3,):
        raise ValueError(f"expected RGB values on the last axis, got shape {rgb.shape}")
    rgb = rgb.astype(np.uint32)
    return rgb[..., 0] + (rgb[..., 1] << 8) + (rgb[..., 2] << 16)


def id_to_rgb(ids) -> np.ndarray:
    """``(..., 3)`` uint8 RGB of segment ids: R = id % 256, G = id // 256 % 256, B = id // 256^2.
    An id below 0 or over :data:`MAX_ID` is a D2SegError (it does not fit in an RGB PNG)."""
    ids = np.asarray(ids)
    if ids.size and (int(ids.max()) > MAX_ID or int(ids.min()) < 0):
        bad = int(ids.max()) if int(ids.max()) > MAX_ID else int(ids.min())
        raise D2SegError(f"segment id {bad} does not fit in an RGB PNG (0 to 2^24 - 1)")
    ids = ids.astype(np.uint32)
    return np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], axis=-1).astype(np.uint8)
