"""Draw whole folders: COCO ground truth | predictions, and COCO panoptic folders, to PNGs.

The library side of ``d2seg visualize``; dataset names and models as sources build on these.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from tqdm import tqdm

from d2seg.errors import D2SegError
from d2seg.io.json import read_json_or_parsed
from d2seg.io.files import write_png_atomic
from d2seg.io.images import IMAGE_SUFFIXES
from d2seg.io.panoptic_png import read_panoptic_png
from d2seg.visualize.colours import class_colors
from d2seg.io.coco import load_coco, load_results
from d2seg.visualize.inputs import annotations_to_instances, group_by_image, results_to_instances
from d2seg.visualize.render import draw_instances, draw_panoptic, side_by_side



def read_image(path: Path, missing_hint: str = "check --images points at the folder holding "
                                                "the dataset's images") -> np.ndarray:
    """A BGR uint8 image read as training reads it (``d2seg.io.images``); a one-line error
    naming the file when it is missing (with ``missing_hint``) or unreadable."""
    from d2seg.io.images import UnreadableImageError
    from d2seg.io.images import read_image as read

    try:
        return read(path, "BGR")
    except UnreadableImageError as e:
        if e.reason == "image file not found":
            raise UnreadableImageError(e.reason, file=e.file, hint=missing_hint) from None
        raise


def _resolve_image(images_dir: Path, file_name: str) -> Path:
    direct = images_dir / file_name
    return direct if direct.exists() else images_dir / Path(file_name).name


def _trailing_number(stem: str) -> int | None:
    m = re.search(r"(\d+)$", stem)
    return int(m.group(1)) if m else None


def _images_by_trailing_id(images_dir: Path) -> dict[int, Path]:
    """Image files named like COCO's (``..._000000000042.jpg``) keyed by that number."""
    found = {}
    for p in sorted(images_dir.iterdir()) if images_dir.is_dir() else []:
        if p.suffix.lower() in IMAGE_SUFFIXES and (n := _trailing_number(p.stem)) is not None:
            found.setdefault(n, p)
    return found


def category_tables(categories) -> tuple[dict, dict, dict]:
    """Names, colours and isthing by COCO category id, colours in sorted-id order."""
    cats = sorted(categories, key=lambda c: c["id"])
    colours = class_colors(len(cats))
    return ({c["id"]: c.get("name", str(c["id"])) for c in cats},
            {c["id"]: colours[i] for i, c in enumerate(cats)},
            {c["id"]: bool(c.get("isthing", 1)) for c in cats})


@contextmanager
def _blame(source):
    """Name ``source`` (a JSON path) in user errors raised about its contents."""
    try:
        yield
    except D2SegError as e:
        if e.file is None and isinstance(source, (str, Path)):
            raise D2SegError(e.reason, file=str(source), where=e.where, hint=e.hint) from None
        raise


def _check_images_dir(images_dir) -> Path:
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise D2SegError("image folder not found", file=str(images_dir))
    return images_dir


def visualize_coco(images_dir, out_dir, gt=None, pred=None, *, n: int | None = None,
                   score_thresh: float = 0.5, alpha: float = 0.5, categories=None,
                   progress: bool | None = None) -> list[Path]:
    """Write ``<out_dir>/<image stem>.png``: ground truth | predictions, either may be absent.

    ``gt`` is a COCO instances JSON (path or dict), ``pred`` a COCO results JSON (path or list).
    Without ``gt`` images are matched to results by the number at the end of their file name
    (COCO's naming). ``progress=None`` shows a bar only on a terminal.
    """
    if gt is None and pred is None:
        raise D2SegError("nothing to draw", hint="give ground truth and/or predictions")
    images_dir = _check_images_dir(images_dir)
    coco = load_coco(gt) if gt is not None else None
    results = load_results(pred) if pred is not None else None
    if categories is None:
        categories = coco.get("categories", []) if coco else []
    if not categories and results:
        categories = [{"id": c} for c in sorted({r["category_id"] for r in results})]
    names, colours, _ = category_tables(categories)

    if coco is not None:
        images = [(im["id"], _resolve_image(images_dir, im["file_name"]),
                   (im["height"], im["width"]))
                  for im in sorted(coco["images"], key=lambda im: im["id"])]
    else:
        by_id = _images_by_trailing_id(images_dir)
        ids = sorted({r["image_id"] for r in results} & set(by_id))
        if not ids:
            raise D2SegError("no image file matches the results' image ids", file=str(images_dir),
                             hint="name images with the id at the end (COCO style) or pass --gt")
        images = [(i, by_id[i], None) for i in ids]
    if n is not None:
        images = images[:n]

    anns_by_image = group_by_image(coco.get("annotations", [])) if coco is not None else {}
    results_by_image = group_by_image(results) if results is not None else {}
    out_dir = Path(out_dir)
    written = []
    for image_id, path, size in tqdm(images, desc="visualize", unit="img",
                                     disable=None if progress is None else not progress):
        image = read_image(path)
        if size is not None and tuple(image.shape[:2]) != (int(size[0]), int(size[1])):
            raise D2SegError(f"image is {image.shape[0]}x{image.shape[1]} but the annotation "
                             f"file says {size[0]}x{size[1]}", file=str(path))
        panels, titles = [], []
        style = {"class_names": names, "colors": colours, "alpha": alpha}
        if coco is not None:
            with _blame(gt):
                truth = annotations_to_instances(anns_by_image.get(image_id, []),
                                                 *image.shape[:2])
            panels.append(draw_instances(image, **truth.draw_kwargs(), **style))
            titles.append(f"ground truth ({len(truth)})")
        if results is not None:
            with _blame(pred):
                found = results_to_instances(results_by_image.get(image_id, []),
                                             image.shape[:2], where=f"image {image_id}")
                shown = found.above(score_thresh)
                drawn = draw_instances(image, **shown.draw_kwargs(), **style)
            panels.append(drawn)
            titles.append(f"prediction ({len(shown)}, score >= {score_thresh:g})")
        written.append(write_png_atomic(out_dir / f"{path.stem}.png",
                                        side_by_side(panels, titles)))
    return written


def load_panoptic_json(source, what: str) -> dict:
    """A COCO panoptic JSON (path or loaded); one line when it has no annotations list."""
    data = read_json_or_parsed(source, what)
    if not isinstance(data, Mapping) or "annotations" not in data:
        raise D2SegError("not a COCO panoptic JSON (no 'annotations' list)",
                         file=str(source) if isinstance(source, (str, Path)) else None)
    return data


def panoptic_dir(json_path, given) -> Path:
    """The PNG folder of a panoptic JSON: ``given``, else the JSON's path without ``.json``."""
    if given is not None:
        folder = Path(given)
    elif isinstance(json_path, (str, Path)):
        folder = Path(json_path).with_suffix("")  # COCO: panoptic_val2017.json + panoptic_val2017/
    else:
        raise D2SegError("the panoptic PNG folder is needed", hint="pass --panoptic-*-dir")
    if not folder.is_dir():
        raise D2SegError("panoptic PNG folder not found", file=str(folder),
                         hint="pass --panoptic-gt-dir / --panoptic-pred-dir")
    return folder


def _find_image_for(images_dir: Path, png_name: str) -> Path:
    stem = Path(png_name).stem
    for ext in IMAGE_SUFFIXES:
        if (p := images_dir / f"{stem}{ext}").exists():
            return p
    raise D2SegError(f"no image named {stem}.* for {png_name}", file=str(images_dir),
                     hint="give --images the folder with the dataset's images")


def visualize_panoptic(images_dir, out_dir, gt_json=None, gt_dir=None, pred_json=None,
                       pred_dir=None, *, n: int | None = None, alpha: float = 0.5,
                       categories=None, progress: bool | None = None,
                       image_ids=None) -> list[Path]:
    """Write ``<out_dir>/<image stem>_panoptic.png``: ground truth | prediction panoptic maps.

    Each side is a COCO panoptic JSON and its PNG folder (default: the JSON's path without
    ``.json``). Categories come from ``categories``, the ground truth or the prediction JSON.
    ``image_ids``: draw these images, in this order (default: all of the first side's, by id).
    """
    if gt_json is None and pred_json is None:
        raise D2SegError("nothing to draw",
                         hint="give --panoptic-gt-json and/or --panoptic-pred-json")
    images_dir = _check_images_dir(images_dir)
    sides = []
    for title, js, folder in (("ground truth", gt_json, gt_dir),
                              ("prediction", pred_json, pred_dir)):
        if js is not None:
            data = load_panoptic_json(js, f"{title} panoptic JSON")
            sides.append((title, data, panoptic_dir(js, folder),
                          {a["image_id"]: a for a in data["annotations"]}))
    if categories is None:
        categories = next((d["categories"] for _, d, _, _ in sides if d.get("categories")), None)
    if not categories:
        raise D2SegError("no categories to name the segments",
                         hint="use a panoptic JSON with a 'categories' list")
    names, colours, isthing = category_tables(categories)
    files = {}
    for _, data, _, _ in sides:
        for im in data.get("images", []):
            files.setdefault(im["id"], im["file_name"])
    if image_ids is None:
        image_ids = sorted(sides[0][3])
    else:
        missing = [i for i in image_ids if i not in sides[0][3]]
        if missing:
            raise D2SegError(f"image id {missing[0]} is not in the {sides[0][0]} JSON")
    if n is not None:
        image_ids = image_ids[:n]

    out_dir = Path(out_dir)
    written = []
    for image_id in tqdm(image_ids, desc="visualize panoptic", unit="img",
                         disable=None if progress is None else not progress):
        ann0 = sides[0][3][image_id]
        path = (_resolve_image(images_dir, files[image_id]) if image_id in files
                else _find_image_for(images_dir, ann0["file_name"]))
        image = read_image(path)
        panels, titles = [], []
        for title, _, folder, by_id in sides:
            ann = by_id.get(image_id)
            if ann is None:
                pan, segments = np.zeros(image.shape[:2], np.int64), []
            else:
                png = folder / ann["file_name"]
                pan, segments = read_panoptic_png(png), ann.get("segments_info", [])
                if pan.shape != image.shape[:2]:
                    raise D2SegError(f"panoptic PNG is {pan.shape[0]}x{pan.shape[1]} but the image "
                                     f"is {image.shape[0]}x{image.shape[1]}", file=str(png))
            panels.append(draw_panoptic(image, pan, segments, names, isthing, colours, alpha))
            titles.append(f"{title} ({len(segments)} segments)")
        written.append(write_png_atomic(out_dir / f"{path.stem}_panoptic.png",
                                        side_by_side(panels, titles)))
    return written
