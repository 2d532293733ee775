"""COCO bbox/segm evaluation: pycocotools' COCOeval vs d2seg's (detectron2 COCOeval_opt served by
d2seg's numpy fast path), side by side on the same generated data; prints times, ratio and
whether all 12 numbers are identical.

    python bench/bench_coco_eval.py --images 500 --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import statistics
import time

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def make_data(n_images: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    h, w = 240, 320
    for i in range(1, n_images + 1):
        images.append({"id": i, "width": w, "height": h, "file_name": f"{i}.png"})
        for _ in range(rng.integers(3, 12)):
            x, y = rng.uniform(0, w - 40), rng.uniform(0, h - 40)
            bw, bh = rng.uniform(8, 60), rng.uniform(8, 60)
            bw, bh = min(bw, w - x), min(bh, h - y)
            cat = int(rng.integers(1, 11))
            m = np.zeros((h, w), np.uint8)
            m[int(y):int(y + bh), int(x):int(x + bw)] = 1
            rle = mask_util.encode(np.asfortranarray(m))
            rle["counts"] = rle["counts"].decode()
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": [x, y, bw, bh],
                         "area": float(m.sum()), "iscrowd": int(rng.random() < 0.03), "segmentation": rle})
            for _ in range(rng.integers(0, 3)):
                jx, jy = rng.normal(0, 4, 2)
                dm = np.zeros((h, w), np.uint8)
                dm[int(max(0, y + jy)):int(min(h, y + jy + bh)), int(max(0, x + jx)):int(min(w, x + jx + bw))] = 1
                drle = mask_util.encode(np.asfortranarray(dm))
                drle["counts"] = drle["counts"].decode()
                dets.append({"image_id": i, "category_id": cat if rng.random() < 0.85 else int(rng.integers(1, 11)),
                             "bbox": [x + jx, y + jy, bw, bh], "score": float(rng.random()), "segmentation": drle})
    cats = [{"id": c, "name": f"c{c}"} for c in range(1, 11)]
    return {"images": images, "annotations": anns, "categories": cats}, dets


def run_reference(gt_dict, dets, iou_type):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(gt_dict)
        gt.createIndex()
        d = copy.deepcopy(dets)
        if iou_type == "segm":
            for x in d:
                x.pop("bbox")
        ev = COCOeval(gt, gt.loadRes(d), iou_type)
        ev.evaluate(); ev.accumulate(); ev.summarize()
    return list(ev.stats)


def run_d2seg(gt_dict, dets, iou_type):
    from d2seg.evaluation.coco import STAT_NAMES, evaluate_coco

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(gt_dict)
        gt.createIndex()
    report = evaluate_coco(gt, dets, [iou_type])[iou_type]
    return [report["stats"][n] for n in STAT_NAMES]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import detectron2.evaluation.fast_eval_api  # noqa: F401  (import time is not evaluation time)

    gt, dets = make_data(args.images)
    print(f"{args.images} images, {len(gt['annotations'])} ground-truth instances, {len(dets)} detections")
    print("| case | pycocotools s | d2seg s | ratio | identical |\n|---|---|---|---|---|")
    for iou_type in ("bbox", "segm"):
        ref_t, our_t = [], []
        for _ in range(args.repeat):
            t = time.perf_counter(); ref = run_reference(gt, dets, iou_type); ref_t.append(time.perf_counter() - t)
            t = time.perf_counter(); ours = run_d2seg(gt, dets, iou_type); our_t.append(time.perf_counter() - t)
        r, o = statistics.median(ref_t), statistics.median(our_t)
        print(f"| {iou_type}, {args.images} images | {r:.2f} | {o:.2f} | {r / o:.2f}x | {'yes' if ref == ours else 'NO'} |")


if __name__ == "__main__":
    main()
