"""Panoptic FPN training data derived from COCO panoptic PNGs, with no script for the user to run.

detectron2's "separated" panoptic form (the one Panoptic FPN trains on) needs two things a
COCO panoptic dataset does not contain: semantic label PNGs where every thing pixel is 0, stuff
is 1..S and void is the ignore label, and instance annotations. Both are derived here from the
panoptic JSON and PNGs, once, into a cache folder named by a hash of those sources' paths,
sizes and modification times (no file is read to name it), so an edited PNG or JSON gives a new
folder and stale labels are never read. Derivation runs when the split is first used. Each cache folder is
built under a temporary name and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from d2seg.data.cache import cache_dir
from d2seg.errors import D2SegError
from d2seg.io.json import parse_json, read_bytes
from d2seg.io.panoptic_png import read_panoptic_png

DERIVATION_VERSION = 2  # 2: cache keyed on file stats, not contents


@dataclass(frozen=True)
class DerivedPanoptic:
    folder: Path          # the cache folder for this content
    sem_seg_root: Path    # semantic PNGs, named like the panoptic PNGs
    instances_json: Path  # COCO instances JSON (RLE masks) of the thing segments
    key: str


def default_cache_root() -> Path:
    """d2seg's cache folder (:func:`d2seg.data.cache.cache_dir`)."""
    return cache_dir()


def _read_json(path: Path) -> tuple[bytes, dict]:
    raw = read_bytes(path, "panoptic JSON file")
    data = parse_json(raw, str(path))
    if not isinstance(data, dict):
        raise D2SegError("a COCO panoptic JSON is an object", file=str(path))
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise D2SegError("missing or not a list", file=str(path), where=key)
    return raw, data


def thing_ids(data: dict, json_file: Path, things: tuple[str, ...] | None = None) -> set[int]:
    """Category ids that are things: the JSON's ``isthing``, or the names the manifest lists."""
    cats = data["categories"]
    if things is not None:
        names = {c.get("name") for c in cats}
        unknown = [t for t in things if t not in names]
        if unknown:
            raise D2SegError(f"things not among the JSON's categories: {', '.join(unknown)}",
                             file=str(json_file), where="things")
        return {c["id"] for c in cats if c.get("name") in things}
    missing = [c.get("name", c.get("id")) for c in cats if "isthing" not in c]
    if missing:
        raise D2SegError(f"categories without 'isthing': {', '.join(map(str, missing[:5]))}",
                         file=str(json_file), where="categories",
                         hint="add isthing to each category, or list 'things:' in the manifest")
    return {c["id"] for c in cats if c["isthing"]}


def stuff_label_map(data: dict, things: set[int]) -> dict[int, int]:
    """Stuff category id -> semantic label 1..S (sorted by id); things are label 0."""
    stuff = sorted(c["id"] for c in data["categories"] if c["id"] not in things)
    return {cid: i + 1 for i, cid in enumerate(stuff)}


def _png_paths(data: dict, json_file: Path, panoptic_root: Path) -> list[Path]:
    paths = []
    for i, ann in enumerate(data["annotations"]):
        name = ann.get("file_name") if isinstance(ann, dict) else None
        if not isinstance(name, str):
            raise D2SegError("missing file_name", file=str(json_file), where=f"annotations[{i}]")
        png = panoptic_root / name
        if not png.is_file():
            raise D2SegError(f"panoptic PNG not found: {png}", file=str(json_file),
                             where=f"annotations[{i}] (image_id {ann.get('image_id')})")
        paths.append(png)
    return paths


def _file_stats(folder: Path) -> list[tuple[str, int, int]]:
    """(path relative to ``folder``, size, mtime_ns) of every file under it, sorted."""
    out, stack = [], [(folder, "")]
    while stack:
        path, rel = stack.pop()
        try:
            entries = list(os.scandir(path))
        except OSError:
            continue
        for entry in entries:
            name = f"{rel}{entry.name}"
            if entry.is_dir():
                stack.append((Path(entry.path), name + "/"))
            elif entry.is_file():
                st = entry.stat()
                out.append((name, st.st_size, st.st_mtime_ns))
    return sorted(out)


def cache_key(panoptic_json, panoptic_root, things: tuple[str, ...] | None = None,
              ignore_label: int = 255) -> str:
    """A hash of the derivation settings and of (path, size, mtime) of the JSON and of every
    file in the PNG folder: no file is read, so registering a dataset costs one folder listing
    (an edited PNG or JSON still gives a new key, hence a new cache folder)."""
    json_file, png_root = Path(panoptic_json).resolve(), Path(panoptic_root).resolve()
    try:
        st = json_file.stat()
    except OSError as e:
        raise D2SegError(f"cannot read: {e.strerror}", file=str(json_file)) from None
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps([DERIVATION_VERSION, things, ignore_label, str(json_file),
                              st.st_size, st.st_mtime_ns, str(png_root)]).encode())
    for name, size, mtime in _file_stats(png_root):
        digest.update(f"{name}\0{size}\0{mtime}\0".encode())
    return digest.hexdigest()


def _segment_ids_checked(png: Path, ann: dict, size) -> np.ndarray:
    """The PNG's segment ids, refusing a PNG that does not fit its image or its JSON entry
    (training would otherwise fail at iteration N, or learn undeclared segments as void)."""
    ids = read_panoptic_png(png)
    if size is not None and ids.shape != tuple(size):
        raise D2SegError(f"PNG is {ids.shape[1]}x{ids.shape[0]} but image_id "
                         f"{ann.get('image_id')} is {size[1]}x{size[0]}", file=str(png),
                         hint="re-export the PNG at image size (d2seg data check --fix removes "
                              "the annotation)")
    declared = {s.get("id") for s in ann.get("segments_info", []) if isinstance(s, dict)}
    undeclared = sorted(int(i) for i in np.unique(ids) if i != 0 and int(i) not in declared)
    if undeclared:
        raise D2SegError(f"segment ids {undeclared[:5]}{' ...' if len(undeclared) > 5 else ''} "
                         f"are in the PNG but not in segments_info of image_id "
                         f"{ann.get('image_id')}", file=str(png),
                         hint="declare them in the JSON or paint them 0 (void)")
    return ids


def _build(folder: Path, json_file: Path, panoptic_root: Path, things_names, ignore_label: int):
    from pycocotools import mask as mask_utils
    from tqdm import tqdm

    _, data = _read_json(json_file)
    things = thing_ids(data, json_file, things_names)
    stuff_labels = stuff_label_map(data, things)
    known = {c["id"] for c in data["categories"]}
    (folder / "semantic").mkdir(parents=True)
    annotations, ann_id = [], 1
    pngs = _png_paths(data, json_file, panoptic_root)
    sizes = {img.get("id"): (img.get("height"), img.get("width")) for img in data["images"]
             if isinstance(img, dict)}
    for ann, png in tqdm(list(zip(data["annotations"], pngs)), desc="panoptic -> semantic",
                         disable=not sys.stderr.isatty(), leave=False):
        ids = _segment_ids_checked(png, ann, sizes.get(ann.get("image_id")))
        semantic = np.full(ids.shape, ignore_label, np.uint8)
        for seg in ann.get("segments_info", []):
            cat = seg.get("category_id")
            if cat not in known:
                raise D2SegError(f"category_id {cat} is not declared in categories",
                                 file=str(json_file), where=f"image_id {ann.get('image_id')}, segment {seg.get('id')}")
            mask = ids == seg["id"]
            if not mask.any():
                continue
            if cat in things:
                semantic[mask] = 0
                rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                annotations.append({
                    "id": ann_id, "image_id": ann["image_id"], "category_id": cat,
                    "segmentation": {"size": [int(v) for v in rle["size"]],
                                     "counts": rle["counts"].decode("ascii")},
                    "area": int(mask_utils.area(rle)), "iscrowd": int(seg.get("iscrowd", 0)),
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)]})
                ann_id += 1
            else:
                semantic[mask] = stuff_labels[cat]
        out = folder / "semantic" / Path(ann["file_name"]).with_suffix(".png")
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(semantic).save(out)
    categories = [c for c in data["categories"] if c["id"] in things]
    (folder / "instances.json").write_text(json.dumps(
        {"images": data["images"], "annotations": annotations, "categories": categories}))
    (folder / "source.json").write_text(json.dumps(
        {"panoptic_json": str(json_file), "panoptic_root": str(panoptic_root),
         "things": sorted(things), "stuff_labels": {str(k): v for k, v in stuff_labels.items()},
         "ignore_label": ignore_label}, indent=1))


def derive(panoptic_json, panoptic_root, things: tuple[str, ...] | None = None,
           ignore_label: int = 255, cache_root=None) -> DerivedPanoptic:
    """Semantic labels and instances for the separated form; built once per content."""
    json_file, panoptic_root = Path(panoptic_json).resolve(), Path(panoptic_root).resolve()
    key = cache_key(json_file, panoptic_root, things, ignore_label)
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    folder = root / "panoptic_semantic" / key
    if not (folder / "instances.json").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=folder.parent))
        try:
            _build(tmp / "data", json_file, panoptic_root, things, ignore_label)
            try:
                os.replace(tmp / "data", folder)
            except OSError:  # built concurrently by another process: keep theirs
                if not (folder / "instances.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return DerivedPanoptic(folder, folder / "semantic", folder / "instances.json", key)
