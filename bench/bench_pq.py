"""Benchmark: d2seg's pq_compute_folders vs panopticapi.evaluation.pq_compute, same folders.

Generates a few hundred 640x480 COCO panoptic ground truth images (stuff regions, ~20 things,
crowd, VOID) and predictions (segments dropped, shifted, relabelled, spurious) in a temp dir,
then times both implementations on the same files in one run and checks the numbers are equal.

    python bench/bench_pq.py [--images 300] [--repeat 3] [--decoder opencv] [--writer pillow]

``--decoder opencv`` measures d2seg without the optional Wuffs decoder (``d2seg[fast]``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from d2seg.evaluation.panoptic_quality import pq_compute_folders
from d2seg.panoptic.export import write_panoptic_png

THINGS, STUFF = list(range(1, 81)), list(range(92, 201))


def _draw(g, h, w, ids, segs, next_id, cat, crowd=0):
    mask = np.zeros((h, w), np.uint8)
    centre = (int(g.integers(0, w)), int(g.integers(0, h)))
    axes = (int(g.integers(8, 90)), int(g.integers(8, 90)))
    cv2.ellipse(mask, centre, axes, float(g.uniform(0, 180)), 0, 360, 1, -1)
    ids[mask > 0] = next_id
    segs[next_id] = (cat, crowd)


def make_pair(g, h=480, w=640):
    gt = np.zeros((h, w), np.int64)
    gsegs = {}
    nid = 1
    for _ in range(int(g.integers(3, 8))):
        y0, x0 = g.integers(0, h), g.integers(0, w)
        gt[y0:y0 + g.integers(60, h), x0:x0 + g.integers(60, w)] = nid
        gsegs[nid] = (int(g.choice(STUFF)), 0)
        nid += 1
    for _ in range(int(g.integers(10, 30))):
        _draw(g, h, w, gt, gsegs, nid, int(g.choice(THINGS)), int(g.random() < 0.05))
        nid += 1
    gt[g.integers(0, h):, :g.integers(0, 40)] = 0
    pred = gt.copy()
    psegs = {}
    for sid, (cat, _) in gsegs.items():
        r = g.random()
        if r < 0.1:
            pred[pred == sid] = 0
            continue
        if r < 0.3:
            pred[np.roll(gt == sid, int(g.integers(-15, 15)), axis=1)] = sid
        elif r < 0.4:
            cat = int(g.choice(THINGS + STUFF))
        psegs[sid] = (cat, 0)
    for _ in range(int(g.integers(0, 5))):
        _draw(g, h, w, pred, psegs, 5000 + nid, int(g.choice(THINGS)))
        nid += 1
    return _finish(gt, gsegs), _finish(pred, psegs)


def _finish(ids, segs):
    present, counts = np.unique(ids, return_counts=True)
    area = dict(zip(present.tolist(), counts.tolist()))
    info = [{"id": k, "category_id": c, "iscrowd": crowd, "area": area[k], "bbox": [0, 0, 1, 1]}
            for k, (c, crowd) in segs.items() if k in area]
    return ids, info


def write_with_pillow(path: Path, ids: np.ndarray) -> None:
    """As panopticapi and COCO's ground truth do (Pillow's PNG encoder, other row filters)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(path)


def generate(root: Path, n: int, seed: int = 0, write=write_panoptic_png):
    g = np.random.default_rng(seed)
    cats = [{"id": c, "name": f"thing{c}", "isthing": 1} for c in THINGS] + \
           [{"id": c, "name": f"stuff{c}", "isthing": 0} for c in STUFF]
    anns = {"gt": [], "pred": []}
    for i in range(n):
        for name, (ids, info) in zip(("gt", "pred"), make_pair(g)):
            write(root / name / f"{i:06d}.png", ids)
            anns[name].append({"image_id": i, "file_name": f"{i:06d}.png", "segments_info": info})
    images = [{"id": i, "file_name": f"{i:06d}.jpg", "height": 480, "width": 640} for i in range(n)]
    for name in ("gt", "pred"):
        (root / f"{name}.json").write_text(json.dumps(
            {"images": images, "annotations": anns[name], "categories": cats}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--decoder", choices=["auto", "opencv"], default="auto",
                        help="opencv: leave Wuffs out even where pywuffs is installed")
    parser.add_argument("--writer", choices=["d2seg", "pillow"], default="d2seg",
                        help="who encodes the PNGs: d2seg's exporter (OpenCV) or Pillow")
    args = parser.parse_args()
    from d2seg.io import panoptic_png as png

    if args.decoder == "opencv":
        png._decoder = None  # before the pool forks: the workers inherit it
    print(f"d2seg decodes panoptic PNGs with {png.decoder_name()}")
    from panopticapi.evaluation import pq_compute

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        generate(root, args.images,
                 write=write_with_pillow if args.writer == "pillow" else write_panoptic_png)
        print(f"generated {args.images} pairs of 640x480 PNGs ({args.writer}'s encoder) in "
              f"{time.perf_counter() - t:.1f}s")
        files = (root / "gt.json", root / "gt", root / "pred.json", root / "pred")
        ref_times, our_times = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                ref = pq_compute(str(files[0]), str(files[2]), str(files[1]), str(files[3]))
            ref_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            ours = pq_compute_folders(*files, workers=2, progress=False)
            our_times.append(time.perf_counter() - t)
        same = all(ours[k] == ref[k] for k in ("All", "Things", "Stuff", "per_class"))
        r, o = float(np.median(ref_times)), float(np.median(our_times))
        print(f"{'case':<34}{'panopticapi s':>14}{'d2seg s':>9}{'ratio':>8}  identical")
        print(f"{f'{args.images} images 640x480, PQ':<34}{r:>14.2f}{o:>9.2f}{r / o:>7.2f}x  "
              f"{'yes' if same else 'NO'}")
        # the same work in one process, CPU time: robust when other jobs share the cores
        from panopticapi.evaluation import pq_compute_single_core
        from d2seg.evaluation.panoptic_quality import image_stats

        gt = json.loads(files[0].read_text())
        pred = json.loads(files[2].read_text())
        cats = {c["id"]: c for c in gt["categories"]}
        pairs = list(zip(gt["annotations"], pred["annotations"]))
        t = time.process_time()
        with contextlib.redirect_stdout(io.StringIO()):
            pq_compute_single_core(0, pairs, str(files[1]), str(files[3]), cats)
        r1 = time.process_time() - t
        t = time.process_time()
        for g, p in pairs:
            image_stats(g, p, str(files[1]), str(files[3]), cats)
        o1 = time.process_time() - t
        print(f"{'same, 1 process, CPU seconds':<34}{r1:>14.2f}{o1:>9.2f}{r1 / o1:>7.2f}x")
        print(f"PQ {100 * ours['All']['pq']:.3f}  SQ {100 * ours['All']['sq']:.3f}  "
              f"RQ {100 * ours['All']['rq']:.3f}")


if __name__ == "__main__":
    main()
