"""``d2seg data check --fix``: a cleaned copy of a COCO JSON and a report of every change (the
input is never touched). Works from a :class:`~d2seg.data.problems.CheckResult`."""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from d2seg.data.check import check_coco
from d2seg.data.coco_files import header_size, is_panoptic, load_coco_json
from d2seg.data.problems import CheckResult
from d2seg.errors import D2SegError
from d2seg.io.files import write_json_atomic
from d2seg.io.panoptic_png import read_panoptic_png
from d2seg.io.rle import polygon_problem, to_rle

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
                    ids = read_panoptic_png(panoptic_root / a["file_name"])
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
