"""Validate a COCO instances or COCO panoptic dataset before training.

detectron2 drops bad polygons with a one-line warning, silently skips images without
annotations and crashes deep inside the data loader on an RLE of the wrong size. ``check_coco``
finds those problems up front, one :class:`~d2seg.data.problems.Problem` per finding;
``d2seg.data.fix`` writes a cleaned copy, ``d2seg.data.check_semantic`` checks label-PNG data.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from d2seg.data.coco_files import inspect_image, is_panoptic, load_coco_json
from d2seg.data.problems import CheckResult, Problem, progress_bar
from d2seg.io.panoptic_png import read_panoptic_png
from d2seg.io.rle import polygon_problem

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
                    entries, paths, progress_bar(found, "images", self.progress, len(paths))):
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
        for a in progress_bar(anns, "annotations", self.progress, len(anns)):
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
        for a in progress_bar(self.data["annotations"], "panoptic PNGs", self.progress):
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
            ids = read_panoptic_png(png)
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
