"""The bundled demo dataset: synthetic scenes of overlapping shapes on sky / ground / water.

Why synthetic: the README's main command and most tests need data that ships with no download,
trains in seconds on a CPU, and has thing and stuff classes with real occlusion. Everything is
drawn from one seeded generator per image, so the same seed gives byte-identical files.

Written in all three forms d2seg reads, per split (``train``, ``val``)::

    <out>/<split>/images/NNNNNN.jpg        the pictures
    <out>/<split>/instances.json           COCO instances, visible masks as compressed RLE
    <out>/<split>/panoptic.json            COCO panoptic segments_info
    <out>/<split>/panoptic/NNNNNN.png      COCO panoptic PNGs (id = R + 256 G + 256^2 B)
    <out>/<split>/semantic/NNNNNN.png      semantic labels, 0..6 in CATEGORIES order

Category ids are deliberately not contiguous, so the id mapping is exercised everywhere.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from d2seg.io.panoptic import id_to_rgb

GENERATOR_VERSION = 1
IMAGE_HEIGHT = 160
IMAGE_WIDTHS = (160, 192)

# (id, name, isthing, colour): things first, then stuff; ids are non-contiguous on purpose.
CATEGORIES = [
    (1, "square", 1, (220, 20, 60)),
    (2, "disc", 1, (0, 130, 200)),
    (5, "triangle", 1, (255, 200, 0)),
    (7, "star", 1, (160, 40, 220)),
    (10, "sky", 0, (120, 190, 250)),
    (12, "ground", 0, (130, 100, 60)),
    (15, "water", 0, (20, 80, 160)),
]
THING_IDS = [c[0] for c in CATEGORIES if c[2]]
SKY, GROUND, WATER = 10, 12, 15
DEFAULT_SPLITS = {"train": 200, "val": 50}
MIN_VISIBLE_FRACTION = 0.35  # an object stays at least this visible after later ones occlude it
MIN_AREA = 40


def _texture(rng: np.random.Generator, h: int, w: int, base: np.ndarray) -> np.ndarray:
    """A solid, noisy, striped or checkered fill around ``base`` (float RGB)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = rng.integers(0, 4)
    if kind == 0:
        shade = np.zeros((h, w), np.float32)
    elif kind == 1:
        shade = rng.normal(0, 18, (h, w)).astype(np.float32)
    elif kind == 2:
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(4, 12)
        shade = 35 * np.sign(np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period))
    else:
        cell = int(rng.integers(4, 10))
        shade = 30 * (((xx // cell + yy // cell) % 2) * 2 - 1)
    return base[None, None, :] + shade[..., None]


def _stuff_layout(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Category id per pixel: sky above a wavy horizon, ground below, a water body in the ground."""
    xx = np.arange(w, dtype=np.float32)
    horizon = (rng.uniform(0.3, 0.55) * h
               + rng.uniform(2, 8) * np.sin(xx / rng.uniform(12, 30) + rng.uniform(0, 6.3)))
    yy = np.arange(h, dtype=np.float32)[:, None]
    labels = np.where(yy < horizon[None, :], SKY, GROUND).astype(np.int32)
    if rng.random() < 0.8:  # an elliptical lake or a band of river
        water = np.zeros((h, w), np.uint8)
        centre = (int(rng.integers(w // 5, 4 * w // 5)), int(rng.integers(int(0.65 * h), h)))
        axes = (int(rng.integers(w // 6, w // 2)), int(rng.integers(h // 10, h // 4)))
        cv2.ellipse(water, centre, axes, float(rng.uniform(-20, 20)), 0, 360, 1, -1)
        labels[(water > 0) & (labels == GROUND)] = WATER
    return labels


def _paint_stuff(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    h, w = labels.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    image = np.zeros((h, w, 3), np.float32)
    sky = (np.array([110, 170, 235], np.float32) + rng.uniform(-20, 20, 3))[None, None, :]
    sky = sky + (yy / h * 60)[..., None] + rng.normal(0, 4, (h, w, 1))
    ground = np.array([120, 95, 55], np.float32) + rng.uniform(-25, 25, 3)
    ground = ground[None, None, :] + rng.normal(0, 14, (h, w, 1)) + (
        12 * np.sin(yy / rng.uniform(2, 5)))[..., None]
    water = np.array([25, 85, 150], np.float32) + rng.uniform(-15, 15, 3)
    water = water[None, None, :] + (18 * np.sin(xx / 3 + 4 * np.sin(yy / 5)))[..., None]
    for cat, fill in ((SKY, sky), (GROUND, ground), (WATER, water)):
        image[labels == cat] = fill[labels == cat]
    return image


def _shape_mask(rng: np.random.Generator, cat: int, h: int, w: int) -> np.ndarray:
    """A filled square, disc, triangle or star at a random place, size and rotation."""
    mask = np.zeros((h, w), np.uint8)
    size = rng.uniform(10, 34)
    cx, cy = rng.uniform(size * 0.5, w - size * 0.5), rng.uniform(size * 0.5, h - size * 0.5)
    rot = rng.uniform(0, 2 * np.pi)
    if cat == 2:  # disc
        cv2.circle(mask, (int(round(cx)), int(round(cy))), int(round(size * 0.6)), 1, -1)
        return mask
    if cat == 1:  # square
        angles, radii = np.arange(4) * np.pi / 2 + np.pi / 4, np.full(4, size * 0.75)
    elif cat == 5:  # triangle
        angles, radii = np.arange(3) * 2 * np.pi / 3, np.full(3, size * 0.8)
    else:  # five-pointed star
        angles = np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, size * 0.85, size * 0.38)
    points = np.stack([cx + radii * np.cos(angles + rot), cy + radii * np.sin(angles + rot)], 1)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    return mask


def render_scene(rng: np.random.Generator, h: int, w: int):
    """One scene: (RGB uint8 image, segment id map, {segment id: category id})."""
    stuff = _stuff_layout(rng, h, w)
    image = _paint_stuff(rng, stuff)
    seg_ids = np.zeros((h, w), np.int32)
    categories: dict[int, int] = {}
    for cat in (SKY, GROUND, WATER):
        if (stuff == cat).any():
            sid = cat * 1000  # > 255, so the green byte of the PNG is used too
            seg_ids[stuff == cat] = sid
            categories[sid] = cat
    full_area: dict[int, int] = {}
    wanted = int(rng.integers(2, 7))
    for attempt in range(wanted * 4):
        if len(full_area) == wanted:
            break
        cat = int(rng.choice(THING_IDS))
        mask = _shape_mask(rng, cat, h, w).astype(bool)
        if mask.sum() < MIN_AREA:
            continue
        sid = 1 + len(full_area) * 37 + cat  # thing segment ids, all distinct and < 1000
        trial = seg_ids.copy()
        trial[mask] = sid
        if any((trial == old).sum() < MIN_VISIBLE_FRACTION * area for old, area in full_area.items()):
            continue  # would hide an earlier object too much: try another shape
        seg_ids = trial
        full_area[sid] = int(mask.sum())
        categories[sid] = cat
        base = np.array(rng.uniform(20, 235, 3), np.float32)
        image[mask] = _texture(rng, h, w, base)[mask]
    return np.clip(np.round(image), 0, 255).astype(np.uint8), seg_ids, categories


def _bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=False, compress_level=9)
    return buf.getvalue()


def _jpeg_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, separators=(",", ":"), sort_keys=True))


def generated_categories(json_name: str) -> list[dict]:
    """The ``categories`` the generator writes into ``instances.json`` or ``panoptic.json``
    (what the catalog lists for a demo manifest whose data is not generated yet)."""
    if json_name == "instances.json":
        return [{"id": c[0], "name": c[1], "supercategory": "shape"} for c in CATEGORIES if c[2]]
    if json_name == "panoptic.json":
        return [{"id": c[0], "name": c[1], "isthing": c[2], "color": list(c[3]),
                 "supercategory": "shape" if c[2] else "scene"} for c in CATEGORIES]
    raise ValueError(f"the demo generator writes no {json_name}")


def _write_split(out: Path, split: str, count: int, seed: int, split_index: int, progress) -> None:
    from pycocotools import mask as mask_utils

    for sub in ("images", "panoptic", "semantic"):
        (out / split / sub).mkdir(parents=True, exist_ok=True)
    semantic_index = {c[0]: i for i, c in enumerate(CATEGORIES)}
    images, instances, pan_annotations = [], [], []
    ann_id = 1
    for index in progress(range(count), desc=f"demo {split}"):
        rng = np.random.default_rng([seed, split_index, index])
        w = int(IMAGE_WIDTHS[int(rng.integers(0, len(IMAGE_WIDTHS)))])
        image, seg_ids, categories = render_scene(rng, IMAGE_HEIGHT, w)
        image_id = split_index * 100000 + index + 1
        stem = f"{image_id:06d}"
        images.append({"id": image_id, "file_name": f"{stem}.jpg", "height": IMAGE_HEIGHT, "width": w})
        (out / split / "images" / f"{stem}.jpg").write_bytes(_jpeg_bytes(image))
        rgb = id_to_rgb(seg_ids)
        (out / split / "panoptic" / f"{stem}.png").write_bytes(_png_bytes(rgb))
        semantic = np.full(seg_ids.shape, 255, np.uint8)
        segments = []
        for sid in sorted(categories):
            mask = seg_ids == sid
            if not mask.any():
                continue
            cat = categories[sid]
            semantic[mask] = semantic_index[cat]
            area, box = int(mask.sum()), _bbox(mask)
            segments.append({"id": int(sid), "category_id": cat, "area": area, "bbox": box,
                             "iscrowd": 0})
            if cat in THING_IDS:
                rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                instances.append({"id": ann_id, "image_id": image_id, "category_id": cat,
                                  "segmentation": {"size": [int(s) for s in rle["size"]],
                                                   "counts": rle["counts"].decode("ascii")},
                                  "area": area, "bbox": box, "iscrowd": 0})
                ann_id += 1
        (out / split / "semantic" / f"{stem}.png").write_bytes(_png_bytes(semantic))
        pan_annotations.append({"image_id": image_id, "file_name": f"{stem}.png",
                                "segments_info": segments})
    info = {"description": f"d2seg demo dataset, {split} split", "version": str(GENERATOR_VERSION)}
    things = generated_categories("instances.json")
    _write_json(out / split / "instances.json",
                {"info": info, "images": images, "annotations": instances, "categories": things})
    pan_cats = generated_categories("panoptic.json")
    _write_json(out / split / "panoptic.json",
                {"info": info, "images": images, "annotations": pan_annotations,
                 "categories": pan_cats})


def _progress():
    import sys

    from tqdm import tqdm

    return lambda it, desc: tqdm(it, desc=desc, disable=not sys.stderr.isatty(), leave=False)


def generate_demo(out_dir, seed: int = 0, splits: dict[str, int] | None = None) -> Path:
    """Write the demo dataset into ``out_dir`` (created; must not exist or be empty)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    progress = _progress()
    for split_index, (split, count) in enumerate((splits or DEFAULT_SPLITS).items()):
        _write_split(out, split, count, seed, split_index, progress)
    (out / "README.txt").write_text(
        "Generated by d2seg.data.demo (python -m d2seg.data.demo); safe to delete.\n")
    return out


def _stamp(seed: int, splits: dict[str, int] | None) -> str:
    return json.dumps({"version": GENERATOR_VERSION, "seed": seed,
                       "splits": splits or DEFAULT_SPLITS}, sort_keys=True)


def default_demo_dir() -> Path:
    """``demo`` in the cache folder (``$D2SEG_CACHE``, see ``d2seg.data.cache``), where the
    bundled demo manifests look for it."""
    from d2seg.data.cache import cache_dir

    return cache_dir() / "demo"


def ensure_demo(out_dir=None, seed: int = 0, splits: dict[str, int] | None = None) -> Path:
    """Generate the demo dataset if it is absent or stale; return its folder.

    Generated into a temporary sibling folder and renamed into place, so a reader never sees a
    half-written dataset and two processes racing both end with one complete copy.
    """
    out = Path(out_dir) if out_dir is not None else default_demo_dir()
    stamp_file = out / ".complete"
    stamp = _stamp(seed, splits)
    if stamp_file.is_file() and stamp_file.read_text() == stamp:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    umask = os.umask(0o022)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the dataset is not
    try:
        generate_demo(tmp, seed=seed, splits=splits)
        (tmp / ".complete").write_text(stamp)
        if out.exists():  # stale or incomplete: move it aside, then swap in the new one
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}-old-", dir=out.parent))
            os.replace(out, old / "data")
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, out)
        except OSError:  # another process finished first
            if not (stamp_file.is_file() and stamp_file.read_text() == stamp):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv=None) -> None:
    """``python -m d2seg.data.demo [--out DIR] [--seed N]``: generate the demo data now."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m d2seg.data.demo",
                                     description="Write the demo dataset (d2seg also does this on first use).")
    parser.add_argument("--out", default=None, help=f"folder (default {default_demo_dir()})")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(ensure_demo(args.out, seed=args.seed))


if __name__ == "__main__":
    main()
