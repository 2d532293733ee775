"""Watershed for touching objects: one instance per peak of the foreground's distance transform.

The distance to the background peaks once near each object's centre and dips where two objects
touch (the neck is narrower than either), so flooding ``-distance`` from its regional maxima
splits touching blobs along their necks. Markers are the h-maxima of the distance (scikit-image):
a maximum that rises less than ``h`` pixels above the saddle joining it to a higher one is not
an object of its own, which keeps noisy outlines and elongated ridges from being split.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage import filters, morphology, segmentation
from tqdm import tqdm

from d2seg.classical.coco_io import (
    images_from_coco, images_from_folder, label_map_to_results, read_rgb,
)
from d2seg.errors import D2SegError
from d2seg.io.json import read_json_or_parsed
from d2seg.io.coco import load_coco

__all__ = ["foreground_mask", "watershed_labels", "watershed_instances", "watershed_folder"]

POLARITIES = ("auto", "bright", "dark")


def _gray(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image.astype(np.uint8, copy=False), cv2.COLOR_RGB2GRAY)
    if image.ndim == 2:
        return image
    raise D2SegError(f"expected a grey (H, W) or RGB (H, W, 3) image, got shape {image.shape}")


def _otsu_bright(gray: np.ndarray) -> np.ndarray:
    if gray.min() == gray.max():
        return np.zeros(gray.shape, bool)
    return gray > filters.threshold_otsu(gray)


def foreground_mask(image: np.ndarray, *, polarity: str = "auto", sigma: float = 1.0,
                    background_radius: int = 0, fill_holes: bool = True,
                    min_area: int = 30) -> np.ndarray:
    """Objects versus background by Otsu's threshold on the (smoothed) grey image.

    ``polarity``: ``bright`` or ``dark`` objects; ``auto`` takes as background the side that
    covers most of the image border. ``background_radius`` > 0 first removes uneven lighting
    (a top-hat: the image minus its opening by a disc of that radius, larger than the objects).
    Holes are filled and specks under ``min_area`` pixels removed.
    """
    if polarity not in POLARITIES:
        raise D2SegError(f"polarity must be one of {', '.join(POLARITIES)}, got {polarity!r}")
    gray = _gray(image).astype(np.float32)
    if sigma > 0:
        gray = cv2.GaussianBlur(gray, (0, 0), sigma)
    bright = _otsu_bright(gray)
    if polarity == "auto":
        border = np.concatenate([bright[0], bright[-1], bright[1:-1, 0], bright[1:-1, -1]])
        polarity = "dark" if border.mean() > 0.5 else "bright"
    if background_radius > 0:
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * background_radius + 1,) * 2)
        hat = cv2.MORPH_TOPHAT if polarity == "bright" else cv2.MORPH_BLACKHAT
        gray = cv2.morphologyEx(gray, hat, disc)
        polarity = "bright"  # a black-hat turns dark objects bright
        bright = _otsu_bright(gray)
    fg = bright if polarity == "bright" else ~bright
    if fill_holes:
        fg = ndi.binary_fill_holes(fg)
    if min_area > 0:  # (remove_small_objects renamed its argument in scikit-image 0.26)
        pieces = ndi.label(fg, structure=np.ones((3, 3)))[0]
        fg &= (np.bincount(pieces.ravel()) >= min_area)[pieces]
    return fg


def watershed_labels(foreground: np.ndarray, *, h: float = 2.0, min_area: int = 30,
                     compactness: float = 0.0) -> np.ndarray:
    """(H, W) int32 instance labels (0 background, 1..N) splitting a foreground mask.

    ``h``: how much (in pixels) a distance peak must rise above the neck joining it to another
    to count as an object; smaller splits more. Instances under ``min_area`` pixels are dropped.
    ``compactness`` > 0 gives scikit-image's compact watershed (more regular shapes).
    """
    fg = np.asarray(foreground).astype(bool)
    if fg.ndim != 2:
        raise D2SegError(f"foreground mask must be (H, W), got shape {fg.shape}")
    if h <= 0:
        raise D2SegError(f"h must be > 0, got {h}")
    if not fg.any():
        return np.zeros(fg.shape, np.int32)
    distance = cv2.distanceTransform(fg.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    # 8-connected: a maximum may be two diagonal pixels of equal height, one marker.
    markers = ndi.label(morphology.h_maxima(distance, h) & fg, structure=np.ones((3, 3)))[0]
    # A component too thin to rise h above its border still deserves a marker of its own.
    components, n = ndi.label(fg)
    unmarked = np.setdiff1d(np.arange(1, n + 1), np.unique(components[markers > 0]))
    if unmarked.size:
        peaks = ndi.maximum_position(distance, components, unmarked)
        next_label = markers.max() + 1
        for k, (r, c) in enumerate(peaks):
            markers[r, c] = next_label + k
    labels = segmentation.watershed(-distance, markers, mask=fg, compactness=compactness)
    if min_area > 0:
        areas = np.bincount(labels.ravel())
        labels[areas[labels] < min_area] = 0
    return segmentation.relabel_sequential(labels)[0].astype(np.int32)


def watershed_instances(image: np.ndarray, foreground: np.ndarray | None = None, *,
                        polarity: str = "auto", sigma: float = 1.0, background_radius: int = 0,
                        h: float = 2.0, min_area: int = 30,
                        compactness: float = 0.0) -> np.ndarray:
    """Instance labels of an image: its foreground (given, else Otsu's) split by watershed."""
    if foreground is None:
        foreground = foreground_mask(image, polarity=polarity, sigma=sigma,
                                     background_radius=background_radius, min_area=min_area)
    elif np.asarray(foreground).shape != np.asarray(image).shape[:2]:
        raise D2SegError(f"foreground mask {np.asarray(foreground).shape} and image "
                         f"{np.asarray(image).shape[:2]} differ in size")
    return watershed_labels(foreground, h=h, min_area=min_area, compactness=compactness)


def _read_mask(masks_dir: Path, stem: str) -> np.ndarray:
    for ext in (".png", ".bmp", ".tif", ".tiff"):
        path = masks_dir / f"{stem}{ext}"
        if path.exists():
            mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if mask is None:
                raise D2SegError("foreground mask unreadable", file=str(path))
            return mask > 0
    raise D2SegError(f"no foreground mask for image {stem}", file=str(masks_dir),
                     hint=f"name it {stem}.png (non-zero = object)")


def watershed_folder(images_dir, *, coco=None, masks_dir=None, category_id: int = 1,
                     score: float = 1.0, polarity: str = "auto", sigma: float = 1.0,
                     background_radius: int = 0, h: float = 2.0, min_area: int = 30, compactness: float = 0.0,
                     progress: bool | None = None) -> list[dict]:
    """COCO results (RLE masks) of watershed instances for every image of a folder.

    Image ids come from ``coco`` (a COCO file listing the images) or from the number that ends
    each file name. ``masks_dir`` holds a foreground PNG per image (same stem, non-zero =
    object); without it the foreground is Otsu's. Every instance gets ``category_id`` and the
    same ``score`` (watershed ranks nothing).
    """
    if coco is not None:
        name = None if isinstance(coco, dict) else str(coco)
        try:
            entries = images_from_coco(load_coco(read_json_or_parsed(coco, "COCO file")), images_dir)
        except D2SegError as e:
            raise D2SegError(e.reason, file=e.file or name, where=e.where, hint=e.hint) from None
    else:
        entries = images_from_folder(images_dir)
    if masks_dir is not None and not Path(masks_dir).is_dir():
        raise D2SegError("foreground mask folder not found", file=str(masks_dir))
    results = []
    for entry in tqdm(entries, desc="watershed", unit="img",
                      disable=None if progress is None else not progress):
        image = read_rgb(entry)
        fg = _read_mask(Path(masks_dir), entry.path.stem) if masks_dir is not None else None
        labels = watershed_instances(image, fg, polarity=polarity, sigma=sigma,
                                     background_radius=background_radius, h=h,
                                     min_area=min_area, compactness=compactness)
        results += label_map_to_results(labels, entry.image_id, category_id, score)
    return results
