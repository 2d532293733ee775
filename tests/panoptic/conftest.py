"""Helpers for the panoptic tests: write COCO panoptic folders, perturb them, call panopticapi."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from d2seg.io import panoptic_png as png
from d2seg.io.panoptic_png import read_panoptic_png
from d2seg.panoptic.export import write_panoptic_png


def write_dataset(folder: Path, name: str, images, categories) -> tuple[Path, Path]:
    """``images``: list of (image_id, ids map, {segment id: (category, iscrowd)}); GT-style JSON."""
    png_dir = folder / name
    png_dir.mkdir(parents=True, exist_ok=True)
    annotations = []
    for image_id, ids, segments in images:
        file_name = f"{image_id:06d}.png"
        write_panoptic_png(png_dir / file_name, ids)
        infos = []
        for sid, (cat, crowd) in segments.items():
            ys, xs = np.nonzero(ids == sid)
            bbox = [int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1), int(np.ptp(ys) + 1)] \
                if ys.size else [0, 0, 0, 0]
            infos.append({"id": int(sid), "category_id": int(cat), "iscrowd": int(crowd),
                          "area": int(ys.size), "bbox": bbox})
        annotations.append({"image_id": image_id, "file_name": file_name, "segments_info": infos})
    images_json = [{"id": i, "file_name": f"{i:06d}.jpg", "height": int(m.shape[0]),
                    "width": int(m.shape[1])} for i, m, _ in images]
    json_path = folder / f"{name}.json"
    json_path.write_text(json.dumps({"images": images_json, "annotations": annotations,
                                     "categories": categories}))
    return json_path, png_dir


def load_dataset(json_path: Path, png_dir: Path):
    """The inverse of write_dataset: (image_id, ids, {id: (category, iscrowd)}) per image."""
    data = json.loads(Path(json_path).read_text())
    out = []
    for ann in data["annotations"]:
        ids = read_panoptic_png(Path(png_dir) / ann["file_name"]).astype(np.int64)
        segs = {s["id"]: (s["category_id"], s.get("iscrowd", 0)) for s in ann["segments_info"]}
        out.append((ann["image_id"], ids, segs))
    return out, data["categories"]


def reference_pq(gt_json, gt_dir, pred_json, pred_dir) -> dict:
    """panopticapi.evaluation.pq_compute, its printing silenced."""
    from panopticapi.evaluation import pq_compute

    with contextlib.redirect_stdout(io.StringIO()):
        return pq_compute(str(gt_json), str(pred_json), str(gt_dir), str(pred_dir))


def synthetic_panoptic(seed: int, n_images: int = 4, h: int = 60, w: int = 80):
    """Random ground truth: stuff regions, overlapping things, crowd, VOID; and categories."""
    g = np.random.default_rng(seed)
    categories = [{"id": 1, "name": "person", "isthing": 1}, {"id": 3, "name": "car", "isthing": 1},
                  {"id": 7, "name": "dog", "isthing": 1}, {"id": 20, "name": "sky", "isthing": 0},
                  {"id": 21, "name": "road", "isthing": 0},
                  {"id": 25, "name": "grass", "isthing": 0}]
    things, stuff = [1, 3, 7], [20, 21, 25]
    images = []
    yy, xx = np.mgrid[:h, :w]
    for i in range(n_images):
        ids = np.zeros((h, w), np.int64)
        segs = {}
        next_id = int(g.integers(1, 5000))
        for _ in range(int(g.integers(1, 4))):  # stuff rectangles
            y0, x0 = g.integers(0, h), g.integers(0, w)
            ids[y0:y0 + g.integers(5, h), x0:x0 + g.integers(5, w)] = next_id
            segs[next_id] = (int(g.choice(stuff)), 0)
            next_id += int(g.integers(1, 70000))
        for _ in range(int(g.integers(0, 7))):  # things, painted over each other
            cy, cx, ry, rx = g.uniform(0, h), g.uniform(0, w), g.uniform(2, 15), g.uniform(2, 15)
            ids[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = next_id
            segs[next_id] = (int(g.choice(things)), int(g.random() < 0.2))
            next_id += int(g.integers(1, 70000))
        y0, x0 = g.integers(0, h), g.integers(0, w)
        ids[y0:y0 + g.integers(0, 12), x0:x0 + g.integers(0, 12)] = 0  # VOID
        present = set(np.unique(ids).tolist())
        segs = {k: v for k, v in segs.items() if k in present}
        images.append((i + 1, ids, segs))
    return images, categories


def perturb(images, categories, seed: int, kinds=("drop", "erode", "dilate", "relabel",
                                                  "spurious", "void")):
    """Predictions made from ground truth: each segment maybe dropped, eroded, dilated,
    relabelled; spurious segments added (some on VOID or crowd); crowd flags removed."""
    import cv2

    g = np.random.default_rng(seed)
    cat_ids = [c["id"] for c in categories]
    out = []
    for image_id, ids, segs in images:
        pred = ids.copy()
        psegs = {}
        for sid, (cat, _crowd) in segs.items():
            kind = g.choice(list(kinds) + ["keep"] * 2)
            mask = (ids == sid).astype(np.uint8)
            if kind == "drop":
                pred[pred == sid] = 0
                continue
            if kind == "erode":
                k = int(g.integers(1, 6))
                kept = cv2.erode(mask, np.ones((k, k), np.uint8)).astype(bool)
                pred[(mask > 0) & ~kept] = 0
            elif kind == "dilate":
                k = int(g.integers(2, 9))
                grown = cv2.dilate(mask, np.ones((k, k), np.uint8)).astype(bool)
                pred[grown] = sid
            elif kind == "relabel":
                cat = int(g.choice(cat_ids))
            psegs[sid] = (cat, 0)
        if "spurious" in kinds:
            for _ in range(int(g.integers(0, 3))):
                sid = int(g.integers(1 << 20, 1 << 24))
                y0, x0 = g.integers(0, ids.shape[0]), g.integers(0, ids.shape[1])
                pred[y0:y0 + g.integers(1, 20), x0:x0 + g.integers(1, 20)] = sid
                psegs[sid] = (int(g.choice(cat_ids)), 0)
        if "void" in kinds:  # a spurious segment exactly on the VOID area
            void = ids == 0
            if void.any():
                sid = int(g.integers(1 << 20, 1 << 24))
                pred[void] = sid
                psegs[sid] = (int(g.choice(cat_ids)), 0)
        present = set(np.unique(pred).tolist())
        out.append((image_id, pred, {k: v for k, v in psegs.items() if k in present}))
    return out


@pytest.fixture
def panoptic_helpers():
    class H:
        pass

    for f in (write_dataset, load_dataset, reference_pq, synthetic_panoptic, perturb):
        setattr(H, f.__name__, staticmethod(f))
    return H


@pytest.fixture(params=["wuffs", "opencv"])
def decoder(request, monkeypatch):
    """Run the test once with Wuffs (when installed) and once on the OpenCV fallback."""
    if request.param == "wuffs" and png.wuffs_decoder() is None:
        pytest.skip("pywuffs is not installed (pip install 'd2seg[fast]')")
    if request.param == "opencv":
        monkeypatch.setattr(png, "_decoder", None)
    return request.param
