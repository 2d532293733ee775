"""Validate a COCO instances or COCO panoptic dataset before training, and write a fixed copy.

detectron2 drops bad polygons with a one-line warning, silently skips images without
annotations and crashes deep inside the data loader on an RLE of the wrong size. ``check_coco``
finds those problems up front, one :class:`Problem` per finding, and ``fix_coco`` writes a
cleaned copy of the JSON plus a report of every change (the input is never touched).
"""

from __future__ import annotations

import copy
import os
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from d2seg.errors import D2SegError
from d2seg.io.json import read_json
from d2seg.io.panoptic import rgb_to_id
from d2seg.io.rle import polygon_problem, to_rle
from d2seg.io.files import write_json_atomic
from d2seg.io.images import IMAGE_SUFFIXES

ERROR, WARNING = "error", "warning"

#: Every kind of problem ``check_coco`` reports, with its severity. An error breaks or silently
#: degrades training; a warning is legal data a user may still want to know about.
KINDS = {
    "json_structure": ERROR,
    "image_missing": ERROR,
    "image_unreadable": ERROR,
    "image_size_mismatch": ERROR,
    "duplicate_image_id": ERROR,
    "duplicate_annotation_id": ERROR,
    "duplicate_category_id": ERROR,
    "duplicate_category_name": WARNING,
    "unknown_category": ERROR,
    "unknown_image": ERROR,
    "segmentation_missing": ERROR,
    "bbox_missing": ERROR,
    "bbox_degenerate": ERROR,
    "bbox_outside": ERROR,
    "polygon_malformed": ERROR,
    "polygon_outside": ERROR,
    "rle_size_mismatch": ERROR,
    "iscrowd_invalid": ERROR,
    "crowd_not_rle": WARNING,
    "noncrowd_rle": WARNING,
    "area_missing": WARNING,
    "image_without_annotations": WARNING,
    "panoptic_png_missing": ERROR,
    "panoptic_png_size_mismatch": ERROR,
    "panoptic_duplicate_segment_id": ERROR,
    "panoptic_segment_not_in_png": ERROR,
    "panoptic_png_segment_undeclared": ERROR,
    "panoptic_area_mismatch": ERROR,
    "semseg_label_missing": ERROR,
    "semseg_image_missing": WARNING,
    "semseg_label_unreadable": ERROR,
    "semseg_label_not_single_channel": ERROR,
    "semseg_label_palette": WARNING,
    "semseg_size_mismatch": ERROR,
    "semseg_label_out_of_range": ERROR,
}


@dataclass(frozen=True)
class Problem:
    """One finding: what is wrong, where, and what would fix it."""

    kind: str
    file: str
    message: str
    fix: str
    image_id: int | None = None
    annotation_id: int | None = None

    @property
    def severity(self) -> str:
        return KINDS[self.kind]


@dataclass
class CheckResult:
    """All problems of one dataset split plus counts for the summary table."""

    json_path: Path
    kind: str  # "coco_instances" | "coco_panoptic"
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def ok(self) -> bool:
        """True when nothing would break or silently degrade training."""
        return not self.errors

    def by_kind(self) -> Counter:
        return Counter(p.kind for p in self.problems)

    def to_dict(self) -> dict:
        return {"json": str(self.json_path), "kind": self.kind, "ok": self.ok,
                "counts": self.counts, "by_kind": dict(self.by_kind()),
                "problems": [asdict(p) | {"severity": p.severity} for p in self.problems]}


# ----------------------------------------------------------------------------- loading

def load_coco_json(json_path: str | os.PathLike) -> dict:
    """Read a COCO JSON; a missing file, bad JSON or missing top-level list is a D2SegError."""
    path = Path(json_path)
    if not path.is_file():
        raise D2SegError("annotation file not found", file=str(path),
                         hint="check the path in the manifest")
    data = read_json(path, "annotation file")
    if not isinstance(data, dict):
        raise D2SegError("top level must be an object with images/annotations/categories",
                         file=str(path))
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise D2SegError(f"'{key}' is missing or not a list", file=str(path), where=key,
                             hint="a COCO file has lists 'images', 'annotations', 'categories'")
    return data


def is_panoptic(data: dict) -> bool:
    """COCO panoptic annotations carry ``segments_info`` instead of a segmentation."""
    return any(isinstance(a, dict) and "segments_info" in a for a in data["annotations"])


def header_size(path: Path) -> tuple[int, int]:
    """(width, height) as detectron2 sees the image (EXIF rotation applied), without decoding."""
    with Image.open(path) as im:
        w, h = im.size
        try:
            orientation = im.getexif().get(0x0112, 1)
        except Exception:  # broken EXIF: detectron2 ignores it too
            orientation = 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def decodes(path: Path) -> str | None:
    """None if the whole image decodes, else the decoder's complaint."""
    try:
        with Image.open(path) as im:
            im.load()
    except Exception as e:  # PIL raises many types for broken files
        return f"{type(e).__name__}: {e}"
    return None


def panoptic_ids(png_path: Path) -> np.ndarray:
    """Segment id per pixel of a COCO panoptic PNG: R + 256 G + 256^2 B."""
    with Image.open(png_path) as im:
        return rgb_to_id(np.asarray(im.convert("RGB")))


def inspect_image(path: Path, decode: bool = True
                  ) -> tuple[tuple[int, int] | None, str | None, str]:
    """(size, problem kind or None, message) for one image file."""
    if not path.is_file():
        return None, "image_missing", f"image file not found: {path}"
    try:
        size = header_size(path)
    except Exception as e:  # not an image PIL knows
        return None, "image_unreadable", f"cannot read {path}: {e}"
    if decode and (why := decodes(path)):
        return None, "image_unreadable", f"{path} does not decode ({why})"
    return size, None, ""


def _progress(items, desc: str, enabled: bool | None, total: int | None = None):
    from tqdm import tqdm

    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(items, desc=desc, total=total, disable=not enabled, leave=False)


# ----------------------------------------------------------------------------- checks

class _Checker:
    """Collects problems for one JSON; each ``_check_*`` method looks at one thing."""

    def __init__(self, json_path: Path, data: dict, image_root: Path,
                 panoptic_root: Path | None, decode: bool, tolerance: float,
                 progress: bool | None):
        self.json_path, self.data = json_path, data
        self.image_root, self.panoptic_root = image_root, panoptic_root
        self.decode, self.tol, self.progress = decode, tolerance, progress
        self.problems: list[Problem] = []
        self.file = str(json_path)
        #: size as read from the files, by image id (None when missing/unreadable)
        self.real_size: dict[int, tuple[int, int] | None] = {}
        self.noncrowd_rle: list = []  # annotation ids, reported as one dataset-level warning

    def add(self, kind, message, fix, image_id=None, annotation_id=None, file=None):
        self.problems.append(Problem(kind, file or self.file, message, fix, image_id,
                                     annotation_id))

    # -- ids and references
    def _unique(self, items, what, kind, fix):
        seen = set()
        for i, item in enumerate(items):
            if not isinstance(item, dict) or "id" not in item:
                self.add("json_structure", f"{what}[{i}] has no 'id'", f"give every {what} an id")
                continue
            if item["id"] in seen:
                kw = {"image_id": item["id"]} if what == "image" else (
                    {"annotation_id": item["id"], "image_id": item.get("image_id")}
                    if what == "annotation" else {})
                self.add(kind, f"{what} id {item['id']} is used more than once", fix, **kw)
            seen.add(item["id"])

    def check_ids(self):
        d = self.data
        self._unique(d["images"], "image", "duplicate_image_id",
                     "give each image its own id (--fix keeps the first)")
        self._unique(d["categories"], "category", "duplicate_category_id",
                     "give each category its own id (--fix keeps the first)")
        if not is_panoptic(d):
            self._unique(d["annotations"], "annotation", "duplicate_annotation_id",
                         "renumber annotations (--fix gives the duplicates new ids)")
        self._category_names()

    def _category_names(self):
        """Two categories with one name (real exports: ids 0 and 1 both 'Tumor') train as two
        classes that a prediction cannot tell apart; AP and the class list show them twice."""
        ids_by_name: dict[str, list] = {}
        for c in self.data["categories"]:
            if isinstance(c, dict) and isinstance(c.get("name"), str):
                ids_by_name.setdefault(c["name"].strip().lower(), []).append(c.get("id"))
        for c_name, ids in ids_by_name.items():
            if len(ids) > 1:
                names = sorted({c.get("name") for c in self.data["categories"]
                                if isinstance(c, dict) and isinstance(c.get("name"), str)
                                and c["name"].strip().lower() == c_name})
                self.add("duplicate_category_name",
                         f"categories {', '.join(map(str, ids))} have the same name "
                         f"{' / '.join(repr(n) for n in names)}",
                         "merge them into one category (remap category_id) or rename one")

    # -- image files
    def check_images(self):
        entries = []
        for img in self.data["images"]:
            if not isinstance(img, dict) or "file_name" not in img:
                self.add("json_structure", f"image entry {img!r:.60} has no file_name",
                         "add file_name, width and height", image_id=_get(img, "id"))
            else:
                entries.append(img)
        paths = [self.image_root / img["file_name"] for img in entries]
        # decoding dominates on real data and PIL releases the GIL while decoding: a thread
        # pool uses the cores there are (bench/bench_data_check.py)
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            found = pool.map(lambda p: inspect_image(p, self.decode), paths)
            for img, path, (size, kind, why) in zip(
                    entries, paths, _progress(found, "images", self.progress, len(paths))):
                iid = img.get("id")
                self.real_size[iid] = size
                if kind is not None:
                    fix = ("add the file" if kind == "image_missing" else "replace the file")
                    self.add(kind, why, f"{fix} or remove the image (--fix removes it)",
                             image_id=iid)
                    continue
                declared = (img.get("width"), img.get("height"))
                if declared != size:
                    self.add("image_size_mismatch", f"JSON says {declared[0]}x{declared[1]}, "
                             f"{path.name} is {size[0]}x{size[1]}",
                             "correct width/height (--fix uses the file's size)", image_id=iid)

    # -- instance annotations
    def check_instances(self):
        images = {i["id"]: i for i in self.data["images"] if isinstance(i, dict) and "id" in i}
        cats = {c["id"] for c in self.data["categories"] if isinstance(c, dict) and "id" in c}
        annotated = set()
        anns = self.data["annotations"]
        for a in _progress(anns, "annotations", self.progress, len(anns)):
            if not isinstance(a, dict):
                self.add("json_structure", f"annotation {a!r:.60} is not an object",
                         "remove it")
                continue
            aid, iid = a.get("id"), a.get("image_id")
            img = images.get(iid)
            if img is None:
                self.add("unknown_image", f"image_id {iid} is not in 'images'",
                         "fix image_id or remove the annotation (--fix removes it)",
                         image_id=iid, annotation_id=aid)
                continue
            annotated.add(iid)
            if a.get("category_id") not in cats:
                self.add("unknown_category", f"category_id {a.get('category_id')} is not declared",
                         "declare the category or remove the annotation (--fix removes it)",
                         iid, aid)
            w, h = img.get("width"), img.get("height")
            if not (isinstance(w, int) and isinstance(h, int)):
                continue  # reported by check_images as a size mismatch
            self._check_crowd(a, iid, aid)
            self._check_segmentation(a, w, h, iid, aid)
            self._check_bbox(a, w, h, iid, aid)
            if not isinstance(a.get("area"), (int, float)) or a["area"] <= 0:
                self.add("area_missing", f"area is {a.get('area')!r}",
                         "COCO evaluation sorts by area (--fix computes it from the mask)",
                         iid, aid)
        if self.noncrowd_rle:  # a property of the dataset, reported once
            first = ", ".join(map(str, self.noncrowd_rle[:5]))
            self.add("noncrowd_rle", f"{len(self.noncrowd_rle)} non-crowd annotations are RLE "
                     f"masks (ids {first}{', ...' if len(self.noncrowd_rle) > 5 else ''}); "
                     "detectron2's default INPUT.MASK_FORMAT=polygon fails on them",
                     "train with INPUT.MASK_FORMAT=bitmask")
        for img in self.data["images"]:
            if isinstance(img, dict) and img.get("id") not in annotated:
                self.add("image_without_annotations", "image has no annotation",
                         "fine for negatives, but detectron2 drops it unless "
                         "DATALOADER.FILTER_EMPTY_ANNOTATIONS=False", image_id=img.get("id"))

    def _check_crowd(self, a, iid, aid):
        crowd = a.get("iscrowd", 0)
        if crowd not in (0, 1) or isinstance(crowd, bool):
            self.add("iscrowd_invalid", f"iscrowd is {crowd!r} (must be 0 or 1)",
                     "use 0 or 1 (--fix sets 1 for RLE, 0 for polygons)", iid, aid)
            return
        seg = a.get("segmentation")
        if crowd == 1 and isinstance(seg, list):
            self.add("crowd_not_rle", "crowd annotation is a polygon, COCO crowds are RLE",
                     "--fix converts it to RLE", iid, aid)
        if crowd == 0 and isinstance(seg, dict):
            self.noncrowd_rle.append(aid)

    def _check_segmentation(self, a, w, h, iid, aid):
        seg = a.get("segmentation")
        if isinstance(seg, dict):
            size = seg.get("size")
            if not (isinstance(size, list) and len(size) == 2 and "counts" in seg):
                self.add("segmentation_missing", "RLE needs 'size' and 'counts'",
                         "remove the annotation (--fix removes it)", iid, aid)
            elif list(size) != [h, w]:
                self.add("rle_size_mismatch", f"RLE size {size} (h, w) but the image is "
                         f"{[h, w]}", "re-export the mask at image size (--fix removes it)",
                         iid, aid)
            return
        if not isinstance(seg, list) or not seg:
            self.add("segmentation_missing", f"segmentation is {seg!r:.40}",
                     "add a polygon or RLE (--fix removes the annotation)", iid, aid)
            return
        for k, poly in enumerate(seg):
            problem = polygon_problem(poly)
            if problem is not None:
                self.add("polygon_malformed", problem.replace("polygon", f"polygon {k}", 1),
                         "detectron2 silently drops it (--fix removes the polygon)", iid, aid)
                continue
            xy = np.asarray(poly, dtype=float).reshape(-1, 2)
            lo, hi = xy.min(0), xy.max(0)
            if lo[0] < -self.tol or lo[1] < -self.tol or hi[0] > w + self.tol \
                    or hi[1] > h + self.tol:
                self.add("polygon_outside", f"polygon {k} spans x {lo[0]:.1f}..{hi[0]:.1f}, "
                         f"y {lo[1]:.1f}..{hi[1]:.1f} outside the {w}x{h} image",
                         "--fix clips it to the image", iid, aid)

    def _check_bbox(self, a, w, h, iid, aid):
        box = a.get("bbox")
        if not (isinstance(box, list) and len(box) == 4
                and all(isinstance(v, (int, float)) for v in box)):
            self.add("bbox_missing", f"bbox is {box!r:.40}",
                     "--fix computes it from the segmentation", iid, aid)
            return
        if not all(np.isfinite(box)):  # JSON from Python may hold NaN/Infinity: NaN losses
            self.add("bbox_degenerate", f"bbox {box} has a non-finite number",
                     "--fix recomputes it from the segmentation", iid, aid)
            return
        x, y, bw, bh = box
        if bw <= 0 or bh <= 0:
            self.add("bbox_degenerate", f"bbox {box} has no area",
                     "--fix recomputes it from the segmentation", iid, aid)
        elif x < -self.tol or y < -self.tol or x + bw > w + self.tol or y + bh > h + self.tol:
            self.add("bbox_outside", f"bbox {box} leaves the {w}x{h} image",
                     "--fix clips it to the image", iid, aid)

    # -- panoptic annotations
    def check_panoptic(self):
        images = {i["id"]: i for i in self.data["images"] if isinstance(i, dict) and "id" in i}
        cats = {c["id"] for c in self.data["categories"] if isinstance(c, dict) and "id" in c}
        annotated = set()
        for a in _progress(self.data["annotations"], "panoptic PNGs", self.progress):
            iid = a.get("image_id") if isinstance(a, dict) else None
            if iid not in images:
                self.add("unknown_image", f"image_id {iid} is not in 'images'",
                         "fix image_id or remove the annotation (--fix removes it)", iid)
                continue
            annotated.add(iid)
            segments = a.get("segments_info") or []
            seen = set()
            for s in segments:
                if s.get("id") in seen:
                    self.add("panoptic_duplicate_segment_id", f"segment id {s.get('id')} "
                             "appears twice in segments_info", "--fix keeps the first", iid,
                             s.get("id"))
                seen.add(s.get("id"))
                if s.get("category_id") not in cats:
                    self.add("unknown_category", f"segment {s.get('id')}: category_id "
                             f"{s.get('category_id')} is not declared",
                             "declare it (--fix removes the segment)", iid, s.get("id"))
            self._check_panoptic_png(a, images[iid], segments, iid)
        for img in self.data["images"]:
            if isinstance(img, dict) and img.get("id") not in annotated:
                self.add("image_without_annotations", "image has no panoptic annotation",
                         "detectron2's panoptic loader skips it", image_id=img.get("id"))

    def _check_panoptic_png(self, a, img, segments, iid):
        if self.panoptic_root is None:
            return
        png = self.panoptic_root / a.get("file_name", "")
        if not a.get("file_name") or not png.is_file():
            self.add("panoptic_png_missing", f"panoptic PNG not found: {png}",
                     "add the PNG (--fix removes the annotation)", iid, file=str(png))
            return
        try:
            ids = panoptic_ids(png)
        except Exception as e:
            self.add("panoptic_png_missing", f"cannot read {png}: {e}",
                     "replace the PNG (--fix removes the annotation)", iid, file=str(png))
            return
        if ids.shape != (img.get("height"), img.get("width")):
            self.add("panoptic_png_size_mismatch", f"PNG is {ids.shape[1]}x{ids.shape[0]}, "
                     f"image is {img.get('width')}x{img.get('height')}",
                     "re-export the PNG at image size (--fix removes the annotation)", iid,
                     file=str(png))
            return
        found, counts = np.unique(ids, return_counts=True)
        area = {int(i): int(n) for i, n in zip(found, counts) if i != 0}
        declared = {s.get("id") for s in segments}
        for s in segments:
            sid = s.get("id")
            if sid not in area:
                self.add("panoptic_segment_not_in_png", f"segment {sid} has no pixel in the PNG",
                         "--fix removes it from segments_info", iid, sid, file=str(png))
            elif s.get("area") != area[sid]:
                self.add("panoptic_area_mismatch", f"segment {sid}: area {s.get('area')} but "
                         f"{area[sid]} pixels in the PNG", "--fix uses the pixel count", iid,
                         sid, file=str(png))
        for sid in sorted(set(area) - declared):
            self.add("panoptic_png_segment_undeclared", f"PNG id {sid} ({area[sid]} pixels) is "
                     "not in segments_info", "add it to segments_info or paint it 0 (void); "
                     "not fixable from the JSON alone", iid, sid, file=str(png))


def _get(obj, key):
    return obj.get(key) if isinstance(obj, dict) else None


def check_coco(json_path: str | os.PathLike, image_root: str | os.PathLike, *,
               panoptic_root: str | os.PathLike | None = None, decode: bool = True,
               tolerance: float = 1.0, progress: bool | None = None) -> CheckResult:
    """Check a COCO instances or panoptic JSON against its images (and panoptic PNGs).

    ``decode=False`` reads only image headers (size) and skips the full decode; ``tolerance``
    is how many pixels a polygon or box may stick out of the image before it counts.
    """
    json_path = Path(json_path)
    data = load_coco_json(json_path)
    panoptic = is_panoptic(data)
    checker = _Checker(json_path, data, Path(image_root),
                       Path(panoptic_root) if panoptic_root else None, decode, tolerance,
                       progress)
    checker.check_ids()
    checker.check_images()
    if panoptic:
        checker.check_panoptic()
    else:
        checker.check_instances()
    result = CheckResult(json_path, "coco_panoptic" if panoptic else "coco_instances",
                         checker.problems)
    result.counts = {
        "images": len(data["images"]),
        "annotations": (sum(len(a.get("segments_info") or []) for a in data["annotations"])
                        if panoptic else len(data["annotations"])),
        "categories": len(data["categories"]),
        "images_without_annotations": result.by_kind()["image_without_annotations"],
        "errors": len(result.errors),
        "warnings": len(result.warnings),
    }
    return result


# ----------------------------------------------------------------------------- semantic



def _by_stem(folder: Path, suffixes) -> dict[str, Path]:
    """Files directly in ``folder`` by stem, as detectron2's ``load_sem_seg`` pairs them."""
    return {p.stem: p for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix.lower() in suffixes} if folder.is_dir() else {}


def check_sem_seg(image_root: str | os.PathLike, label_root: str | os.PathLike, *,
                  num_classes: int, ignore_label: int = 255, decode: bool = True,
                  progress: bool | None = None) -> CheckResult:
    """Check a folder of images against a folder of semantic label PNGs (same stems).

    detectron2 silently drops images without a label, reads labels with ``convert("L")`` (a
    palette or RGB PNG becomes grey levels, not class ids) and fails late on out-of-range ids.
    """
    image_root, label_root = Path(image_root), Path(label_root)
    for folder in (image_root, label_root):
        if not folder.is_dir():
            raise D2SegError("folder not found", file=str(folder))
    images, labels = _by_stem(image_root, IMAGE_SUFFIXES), _by_stem(label_root, (".png",))
    result = CheckResult(label_root, "sem_seg")
    add = result.problems.append
    for stem in sorted(set(labels) - set(images)):
        add(Problem("semseg_image_missing", str(labels[stem]), "label has no image",
                    "add the image or delete the label (it is not used)"))
    for stem in _progress(sorted(images), "labels", progress):
        img, lab = images[stem], labels.get(stem)
        if lab is None:
            add(Problem("semseg_label_missing", str(img), f"no {stem}.png in {label_root}",
                        "add the label; detectron2 drops the image silently"))
            continue
        size, kind, why = inspect_image(img, decode)
        if kind is not None:
            add(Problem(kind, str(img), why, "replace or delete the image"))
            continue
        try:
            with Image.open(lab) as im:
                mode, ids = im.mode, np.asarray(im)
        except Exception as e:
            add(Problem("semseg_label_unreadable", str(lab), f"cannot read: {e}",
                        "re-export the label PNG"))
            continue
        if mode == "P":
            add(Problem("semseg_label_palette", str(lab), "palette PNG: d2seg reads its palette "
                        "indices as class ids, but detectron2's own training loader would read "
                        "grey levels of the palette colours", "to use the data outside d2seg, "
                        "save the indices as a mode 'L' PNG"))
        if ids.ndim != 2:
            add(Problem("semseg_label_not_single_channel", str(lab), f"{mode} PNG with "
                        f"{ids.shape[2]} channels", "save one channel of class ids (mode 'L')"))
            continue
        if (ids.shape[1], ids.shape[0]) != size:
            add(Problem("semseg_size_mismatch", str(lab), f"label is {ids.shape[1]}x"
                        f"{ids.shape[0]}, image is {size[0]}x{size[1]}",
                        "re-export the label at image size"))
            continue
        values = np.unique(ids)
        bad = [int(v) for v in values if not (0 <= v < num_classes or v == ignore_label)]
        if bad:
            add(Problem("semseg_label_out_of_range", str(lab), f"values {bad[:8]} are neither "
                        f"class ids 0..{num_classes - 1} nor the ignore label {ignore_label}",
                        "fix the labels, the classes list or ignore_label"))
    result.counts = {"images": len(images), "annotations": len(labels),
                     "categories": num_classes,
                     "images_without_annotations": result.by_kind()["semseg_label_missing"],
                     "errors": len(result.errors), "warnings": len(result.warnings)}
    return result


# ----------------------------------------------------------------------------- fixing

@dataclass(frozen=True)
class Change:
    """One edit ``fix_coco`` made to the JSON."""

    action: str  # "removed_image", "removed_annotation", "set_field", ...
    what: str
    image_id: int | None = None
    annotation_id: int | None = None


def _fix_annotation(a, w, h, tol, log) -> bool:
    """Repair one instance annotation in place; False when it must be removed."""
    aid, iid = a.get("id"), a.get("image_id")
    seg = a.get("segmentation")
    crowd = a.get("iscrowd", 0)
    if crowd not in (0, 1) or isinstance(crowd, bool):
        a["iscrowd"] = 1 if isinstance(seg, dict) else 0
        log("set_field", f"iscrowd {crowd!r} -> {a['iscrowd']}", iid, aid)
    if isinstance(seg, dict):
        if not (isinstance(seg.get("size"), list) and "counts" in seg) or seg["size"] != [h, w]:
            log("removed_annotation", f"RLE of size {seg.get('size')} on a {h}x{w} image", iid,
                aid)
            return False
    elif isinstance(seg, list) and seg:
        kept = []
        for poly in seg:
            problem = polygon_problem(poly)
            if problem is not None:
                log("removed_polygon", problem, iid, aid)
                continue
            xy = np.asarray(poly, dtype=float).reshape(-1, 2)
            if xy[:, 0].min() < -tol or xy[:, 1].min() < -tol or xy[:, 0].max() > w + tol \
                    or xy[:, 1].max() > h + tol:
                clipped = np.clip(xy, 0, [w, h]).reshape(-1).tolist()
                log("clipped_polygon", "polygon clipped to the image", iid, aid)
                poly = clipped
            kept.append(poly)
        if not kept:
            log("removed_annotation", "no valid polygon left", iid, aid)
            return False
        a["segmentation"] = seg = kept
    else:
        log("removed_annotation", "no segmentation", iid, aid)
        return False
    if a.get("iscrowd") == 1 and isinstance(seg, list):
        rle = to_rle(seg, h, w, where=f"annotation {aid}")
        a["segmentation"] = {"size": [h, w], "counts": rle["counts"].decode("ascii")}
        log("set_field", "crowd polygon converted to RLE", iid, aid)
    rle = to_rle(a["segmentation"], h, w, where=f"annotation {aid}")
    mask_area = float(mask_utils.area(rle))
    if mask_area <= 0:
        log("removed_annotation", "mask is empty inside the image", iid, aid)
        return False
    box = a.get("bbox")
    valid_box = (isinstance(box, list) and len(box) == 4
                 and all(isinstance(v, (int, float)) for v in box) and all(np.isfinite(box)))
    if not valid_box or box[2] <= 0 or box[3] <= 0:
        a["bbox"] = [float(v) for v in mask_utils.toBbox(rle)]
        log("set_field", f"bbox {box!r} -> {a['bbox']} (from the mask)", iid, aid)
    else:
        x, y, bw, bh = box
        if x < -tol or y < -tol or x + bw > w + tol or y + bh > h + tol:
            x0, y0 = max(0.0, x), max(0.0, y)
            x1, y1 = min(float(w), x + bw), min(float(h), y + bh)
            if x1 <= x0 or y1 <= y0:
                a["bbox"] = [float(v) for v in mask_utils.toBbox(rle)]
            else:
                a["bbox"] = [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
            log("set_field", f"bbox {box} -> {a['bbox']} (clipped)", iid, aid)
    if not isinstance(a.get("area"), (int, float)) or a["area"] <= 0:
        a["area"] = mask_area
        log("set_field", f"area -> {mask_area:g} (from the mask)", iid, aid)
    return True


def fix_data(data: dict, result: CheckResult, image_root: Path,
             panoptic_root: Path | None = None, tolerance: float = 1.0
             ) -> tuple[dict, list[Change]]:
    """A repaired deep copy of ``data`` and the list of changes, guided by ``result``."""
    out = copy.deepcopy(data)
    changes: list[Change] = []

    def log(action, what, iid=None, aid=None):
        changes.append(Change(action, what, iid, aid))

    def dedupe(items, what):
        seen, kept = set(), []
        for item in items:
            if not isinstance(item, dict) or "id" not in item:
                log(f"removed_{what}", f"{what} without id: {item!r:.60}")
                continue
            if item["id"] in seen:
                log(f"removed_{what}", f"duplicate {what} id {item['id']}",
                    item["id"] if what == "image" else None)
                continue
            seen.add(item["id"])
            kept.append(item)
        return kept

    out["categories"] = dedupe(out["categories"], "category")
    cats = {c["id"] for c in out["categories"]}
    bad_images = {p.image_id for p in result.problems
                  if p.kind in ("image_missing", "image_unreadable")}
    sizes = {}
    images = []
    for img in dedupe(out["images"], "image"):
        iid = img["id"]
        if iid in bad_images or "file_name" not in img:
            log("removed_image", f"{img.get('file_name')}: missing or unreadable", iid)
            continue
        real = header_size(image_root / img["file_name"])
        if (img.get("width"), img.get("height")) != real:
            log("set_field", f"width/height {img.get('width')}x{img.get('height')} -> "
                f"{real[0]}x{real[1]} (from the file)", iid)
            img["width"], img["height"] = real
        sizes[iid] = real
        images.append(img)
    out["images"] = images

    anns = []
    if is_panoptic(out):
        fixed_area = {}
        if panoptic_root is not None:
            for a in out["annotations"]:
                png = panoptic_root / a.get("file_name", "")
                if a.get("image_id") in sizes and a.get("file_name") and png.is_file():
                    ids = panoptic_ids(panoptic_root / a["file_name"])
                    if ids.shape == sizes[a["image_id"]][::-1]:
                        u, n = np.unique(ids, return_counts=True)
                        fixed_area[a["image_id"]] = dict(zip(u.tolist(), n.tolist()))
        for a in out["annotations"]:
            iid = a.get("image_id")
            if iid not in sizes or (panoptic_root is not None and iid not in fixed_area):
                log("removed_annotation", f"panoptic annotation {a.get('file_name')}: image "
                    "unknown, PNG missing or of the wrong size", iid)
                continue
            kept, seen = [], set()
            for s in a.get("segments_info") or []:
                sid = s.get("id")
                if sid in seen or s.get("category_id") not in cats:
                    log("removed_segment", f"segment {sid}: duplicate or undeclared category",
                        iid, sid)
                    continue
                seen.add(sid)
                if iid in fixed_area:
                    px = fixed_area[iid].get(sid, 0)
                    if px == 0:
                        log("removed_segment", f"segment {sid}: no pixel in the PNG", iid, sid)
                        continue
                    if s.get("area") != px:
                        log("set_field", f"segment {sid}: area {s.get('area')} -> {px}", iid, sid)
                        s["area"] = px
                kept.append(s)
            a["segments_info"] = kept
            anns.append(a)
    else:
        used_ids = {a.get("id") for a in out["annotations"] if isinstance(a, dict)}
        next_id = max([i for i in used_ids if isinstance(i, int)], default=0) + 1
        seen = set()
        for a in out["annotations"]:
            if not isinstance(a, dict):
                log("removed_annotation", f"not an object: {a!r:.60}")
                continue
            iid, aid = a.get("image_id"), a.get("id")
            if iid not in sizes:
                log("removed_annotation", f"image {iid} unknown or removed", iid, aid)
                continue
            if a.get("category_id") not in cats:
                log("removed_annotation", f"category {a.get('category_id')} not declared", iid,
                    aid)
                continue
            w, h = sizes[iid]
            if not _fix_annotation(a, w, h, tolerance, log):
                continue
            if aid in seen or not isinstance(aid, int):
                a["id"] = next_id
                log("set_field", f"annotation id {aid} -> {next_id} (duplicate)", iid, next_id)
                next_id += 1
            seen.add(a["id"])
            anns.append(a)
    out["annotations"] = anns
    return out, changes


def fix_coco(json_path: str | os.PathLike, out_path: str | os.PathLike,
             image_root: str | os.PathLike, *, panoptic_root: str | os.PathLike | None = None,
             tolerance: float = 1.0, decode: bool = True, progress: bool | None = None
             ) -> tuple[Path, Path, list[Change]]:
    """Write a cleaned copy of ``json_path`` to ``out_path`` and ``<out>.report.json``.

    Returns (fixed json, report, changes). The input is never overwritten.
    """
    json_path, out_path = Path(json_path), Path(out_path)
    if out_path.resolve() == json_path.resolve():
        raise D2SegError("--fix would overwrite the input", file=str(out_path),
                         hint="give another output path")
    pan = Path(panoptic_root) if panoptic_root else None
    result = check_coco(json_path, image_root, panoptic_root=pan, decode=decode,
                        tolerance=tolerance, progress=progress)
    data = load_coco_json(json_path)
    fixed, changes = fix_data(data, result, Path(image_root), pan, tolerance)
    write_json_atomic(out_path, fixed)
    report_path = out_path.with_name(out_path.stem + ".report.json")
    write_json_atomic(report_path, {"input": str(json_path), "output": str(out_path),
                                    "problems_before": result.to_dict()["by_kind"],
                                    "changes": [asdict(c) for c in changes]})
    return out_path, report_path, changes


# ----------------------------------------------------------------------------- targets

@dataclass(frozen=True)
class SplitFiles:
    """The files one split of a dataset is made of, as the check/stats/show tools need them."""

    label: str  # "<manifest name>/<split>" or the JSON path
    json_path: Path | None  # None for sem_seg
    image_root: Path | None
    panoptic_root: Path | None
    kind: str = "coco"  # "coco" (instances or panoptic, told by the JSON) or "sem_seg"
    sem_seg_root: Path | None = None
    num_classes: int = 0
    ignore_label: int = 255


def resolve_splits(target: str, *, split: str | None = None, images: str | None = None,
                   panoptic_root: str | None = None) -> list[SplitFiles]:
    """A COCO JSON path (with ``images``), or a manifest name/path, to the splits to look at."""
    path = Path(target)
    if path.suffix.lower() == ".json":
        if not path.is_file():
            raise D2SegError("annotation file not found", file=target)
        return [SplitFiles(str(path), path, Path(images) if images else None,
                           Path(panoptic_root) if panoptic_root else None)]
    from d2seg.data.manifest import find_manifest  # written beside this module (data-core)

    manifest = find_manifest(target)
    if split is not None and split not in manifest.splits:
        raise D2SegError(f"no split '{split}'", file=str(manifest.path), where="splits",
                         hint=f"choose one of {sorted(manifest.splits)}")
    chosen = [manifest.splits[split]] if split else list(manifest.splits.values())
    if manifest.kind == "sem_seg":
        return [SplitFiles(f"{manifest.name}/{s.name}", None, s.images, None, "sem_seg",
                           s.sem_seg_root, len(manifest.classes or []), manifest.ignore_label)
                for s in chosen]
    return [SplitFiles(f"{manifest.name}/{s.name}", s.annotations, s.images, s.panoptic_root)
            for s in chosen if s.annotations is not None]
