"""Superpixels (scikit-image's SLIC and Felzenszwalb) turned into class labels by majority vote.

Superpixels follow image edges, so giving each one the majority class of a coarse semantic
prediction snaps the prediction's boundaries to the edges (refinement); given sparse labels
(scribbles, clicks: everything else is the ignore value) the vote spreads each label over the
superpixels it touches.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from skimage import segmentation
from tqdm import tqdm

from d2seg.errors import D2SegError
from d2seg.io.files import write_png_atomic
from d2seg.io.labels import read_label_png
from d2seg.io.images import IMAGE_SUFFIXES, read_image

__all__ = ["METHODS", "superpixel_labels", "vote", "refine_semantic", "refine_folder"]

METHODS = ("slic", "felzenszwalb")


def superpixel_labels(image: np.ndarray, method: str = "slic", *, n_segments: int | None = None,
                      segment_size: int = 10, compactness: float = 10.0, sigma: float | None = None,
                      scale: float = 100.0, min_size: int = 20) -> np.ndarray:
    """(H, W) int32 superpixel ids 0..N-1 of an RGB (H, W, 3) or grey (H, W) image.

    SLIC: ``n_segments`` superpixels (default: one per ``segment_size``^2 pixels, so the size
    does not depend on the image's), ``compactness`` trades colour for shape, ``sigma`` blurs
    first (default 1). Felzenszwalb: ``scale`` (larger, bigger segments), ``sigma`` (default
    0.8), ``min_size`` pixels.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise D2SegError(f"expected an RGB (H, W, 3) or grey (H, W) image, got {image.shape}")
    channel_axis = -1 if image.ndim == 3 else None
    if sigma is None:
        sigma = 0.8 if method == "felzenszwalb" else 1.0
    if method == "slic":
        if image.ndim == 2:  # SLIC measures colour in Lab (0-100), the scale compactness is for
            image, channel_axis = np.repeat(image[:, :, None], 3, axis=2), -1
        if n_segments is None:
            n_segments = max(1, image.shape[0] * image.shape[1] // max(1, segment_size) ** 2)
        labels = segmentation.slic(image, n_segments=n_segments, compactness=compactness,
                                   sigma=sigma, start_label=0, channel_axis=channel_axis)
    elif method == "felzenszwalb":
        labels = segmentation.felzenszwalb(image, scale=scale, sigma=sigma, min_size=min_size,
                                           channel_axis=channel_axis)
    else:
        raise D2SegError(f"unknown superpixel method {method!r}",
                         hint=f"use one of {', '.join(METHODS)}")
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape).astype(np.int32)


def vote(superpixels: np.ndarray, labels: np.ndarray, ignore: int | None = 255) -> np.ndarray:
    """Every pixel gets the majority label of its superpixel (uint8 or the labels' dtype).

    Pixels whose label is ``ignore`` do not vote; a superpixel with no vote stays ``ignore``.
    Ties go to the smaller label.
    """
    superpixels, labels = np.asarray(superpixels), np.asarray(labels)
    if superpixels.shape != labels.shape:
        raise D2SegError(f"superpixels {superpixels.shape} and labels {labels.shape} differ "
                         "in size")
    if labels.size == 0:
        return labels.copy()
    if labels.min() < 0 or superpixels.min() < 0:
        raise D2SegError("labels and superpixel ids must be >= 0")
    segment = np.unique(superpixels, return_inverse=True)[1].ravel()
    flat = labels.ravel().astype(np.int64)
    voting = flat != ignore if ignore is not None else np.ones(flat.shape, bool)
    num_segments = int(segment.max()) + 1
    num_labels = int(flat[voting].max()) + 1 if voting.any() else 1
    counts = np.bincount(segment[voting] * num_labels + flat[voting],
                         minlength=num_segments * num_labels).reshape(num_segments, num_labels)
    winner = counts.argmax(axis=1)
    if ignore is not None:
        winner[counts.sum(axis=1) == 0] = ignore
    return winner[segment].reshape(labels.shape).astype(labels.dtype)


def refine_semantic(image: np.ndarray, pred: np.ndarray, method: str = "slic",
                    ignore: int | None = 255, **params) -> np.ndarray:
    """A semantic prediction (or sparse labels) voted over the image's superpixels."""
    pred = np.asarray(pred)
    if pred.shape != np.asarray(image).shape[:2]:
        raise D2SegError(f"labels {pred.shape} and image {np.asarray(image).shape[:2]} differ "
                         "in size")
    return vote(superpixel_labels(image, method, **params), pred, ignore)


def _image_for(images_dir: Path, stem: str) -> Path:
    for ext in IMAGE_SUFFIXES:
        for candidate in (images_dir / f"{stem}{ext}", images_dir / f"{stem}{ext.upper()}"):
            if candidate.exists():
                return candidate
    raise D2SegError(f"no image for label map {stem}.png", file=str(images_dir),
                     hint="images and label PNGs must share their names (stems)")


def refine_folder(images_dir, labels_dir, out_dir, method: str = "slic",
                  ignore: int | None = 255, progress: bool | None = None,
                  **params) -> list[Path]:
    """Vote every label PNG of ``labels_dir`` over its image's superpixels into ``out_dir``.

    Label PNGs are single-channel uint8 (class per pixel, ``ignore`` where unknown), matched
    to images by file stem; outputs are uint8 PNGs of the same names and sizes.
    """
    images_dir, labels_dir, out_dir = Path(images_dir), Path(labels_dir), Path(out_dir)
    for folder, what in ((images_dir, "image folder"), (labels_dir, "label folder")):
        if not folder.is_dir():
            raise D2SegError(f"{what} not found", file=str(folder))
    if out_dir.resolve() == labels_dir.resolve():
        raise D2SegError("the output folder is the label folder", file=str(out_dir),
                         hint="inputs are never overwritten: choose another --out")
    label_files = sorted(labels_dir.glob("*.png"))
    if not label_files:
        raise D2SegError("no .png label maps in the folder", file=str(labels_dir))
    written = []
    for path in tqdm(label_files, desc=f"superpixels ({method})", unit="img",
                     disable=None if progress is None else not progress):
        labels = read_label_png(path)
        if labels.dtype != np.uint8:
            raise D2SegError(f"{labels.dtype} label PNG, need 8-bit class ids", file=str(path))
        image_path = _image_for(images_dir, path.stem)
        image = cv2.cvtColor(read_image(image_path), cv2.COLOR_BGR2RGB)
        if image.shape[:2] != labels.shape:
            raise D2SegError(f"label map is {labels.shape[0]}x{labels.shape[1]} but its image "
                             f"is {image.shape[0]}x{image.shape[1]}", file=str(path))
        refined = refine_semantic(image, labels, method, ignore, **params)
        written.append(write_png_atomic(out_dir / path.name, refined.astype(np.uint8)))
    return written
