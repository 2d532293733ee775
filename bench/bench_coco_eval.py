"""COCO bbox/segm evaluation: pycocotools, faster-coco-eval and d2seg side by side in one run.

    OMP_NUM_THREADS=1 python bench/bench_coco_eval.py            # (a) and (b)
    python bench/bench_coco_eval.py --skip-coco-size --repeat 3  # (a) only
    OMP_NUM_THREADS=1 python bench/bench_coco_eval.py --skip-generated   # (b) only

(a) 1,000 generated 640x480 images, ~6,470 ground-truth polygons (1 % crowd RLEs), 25,000
    detections with polygon-shaped RLE masks (jittered ground truths and false positives), timed
    in this process, median of --repeat, end to end: loading the results, IoUs, matching,
    accumulation, summary (ground-truth indexes are built outside the timing for all three).
(b) COCO val2017's shape: 5,000 images, ~36,000 ground truths, 100 detections per image; each
    tool in its own process from the JSON files (load, score, summary), peak RSS growth over
    the process after its imports.

"identical" compares with pycocotools: the 12 stats and the precision, recall and scores arrays
(bit for bit); faster-coco-eval gives pycocotools' 12 stats but a few precision cells 1 ulp off.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from pycocotools import mask as mask_util

TOOLS = ("pycocotools", "faster-coco-eval", "d2seg")


def _polygon(rng, cx, cy, r, n):
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = r * rng.uniform(0.55, 1.0, n)
    return np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)


def make_data(n_images, gt_per_image=6.65, dets_per_image=25, w=640, h=480, num_classes=20, seed=0):
    """COCO ground truth (polygons, 1 % crowd RLEs) and detections with RLE masks: jittered
    copies of the ground truths (15 % with a wrong class) and random false positives."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    cats = [{"id": c, "name": f"class{c}"} for c in range(1, num_classes + 1)]

    def clip(p):
        p[:, 0] = p[:, 0].clip(0, w - 1)
        p[:, 1] = p[:, 1].clip(0, h - 1)
        return p

    for i in range(1, n_images + 1):
        images.append({"id": i, "width": w, "height": h, "file_name": f"{i:06d}.jpg"})
        objs = []
        for _ in range(rng.poisson(gt_per_image)):
            r = float(np.exp(rng.uniform(np.log(4), np.log(150))))
            poly = clip(_polygon(rng, rng.uniform(0, w), rng.uniform(0, h), r, int(rng.integers(6, 20))))
            cat = int(rng.integers(1, num_classes + 1))
            flat = [round(float(v), 2) for v in poly.ravel()]
            rle = mask_util.merge(mask_util.frPyObjects([flat], h, w))
            x0, y0 = poly.min(0)
            x1, y1 = poly.max(0)
            crowd = bool(rng.random() < 0.01)
            if crowd:
                rle["counts"] = rle["counts"].decode()
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat,
                         "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                         "area": float(mask_util.area(rle)), "iscrowd": int(crowd),
                         "segmentation": rle if crowd else [flat]})
            objs.append((poly, cat, r))
        k = 0
        while k < dets_per_image:
            if objs and rng.random() < 0.7:
                poly, cat, r = objs[int(rng.integers(len(objs)))]
                p = poly + rng.normal(0, max(1.0, 0.12 * r), poly.shape)
                if rng.random() > 0.85:
                    cat = int(rng.integers(1, num_classes + 1))
            else:
                r = float(np.exp(rng.uniform(np.log(4), np.log(150))))
                p = _polygon(rng, rng.uniform(0, w), rng.uniform(0, h), r, int(rng.integers(6, 20)))
                cat = int(rng.integers(1, num_classes + 1))
            rle = mask_util.merge(mask_util.frPyObjects([clip(p).ravel().tolist()], h, w))
            if mask_util.area(rle) == 0:
                continue
            box = [round(float(v), 2) for v in mask_util.toBbox(rle)]
            rle["counts"] = rle["counts"].decode()
            dets.append({"image_id": i, "category_id": cat, "bbox": box,
                         "score": round(float(rng.random()), 5), "segmentation": rle})
            k += 1
    return {"images": images, "annotations": anns, "categories": cats}, dets


def for_iou_type(dets, iou_type):
    """Masks are scored without their boxes (as d2seg and detectron2 do)."""
    d = copy.deepcopy(dets)
    if iou_type == "segm":
        for x in d:
            x.pop("bbox", None)
    return d


def _arrays(ev):
    return {k: ev.eval[k] for k in ("precision", "recall", "scores")}


def run_pycocotools(gt, dets, iou_type):
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(dets), iou_type)
        ev.evaluate(); ev.accumulate(); ev.summarize()
    return list(map(float, ev.stats)), _arrays(ev)


def run_faster(gt, dets, iou_type):
    from faster_coco_eval import COCOeval_faster

    ev = COCOeval_faster(gt, gt.loadRes(dets), iou_type, print_function=lambda *a: None)
    ev.evaluate(); ev.accumulate(); ev.summarize()
    return list(map(float, ev.stats[:12])), _arrays(ev)


def run_d2seg(gt, dets, iou_type):
    from d2seg.evaluation.coco import STAT_NAMES, evaluate_coco

    r = evaluate_coco(gt, dets, [iou_type])[iou_type]
    return [r["stats"][n] for n in STAT_NAMES], {"precision": r["_precision"], "recall": r["_recall"]}


def _gt_index(tool, gt_dict):
    """Each tool's own ground-truth index, built outside the timing."""
    if tool == "faster-coco-eval":
        from faster_coco_eval import COCO as FasterCOCO

        return FasterCOCO(copy.deepcopy(gt_dict), print_function=lambda *a: None)
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt_dict)
        coco.createIndex()
    return coco


RUNNERS = {"pycocotools": run_pycocotools, "faster-coco-eval": run_faster, "d2seg": run_d2seg}


def _identical(ref, out):
    stats = ref[0] == out[0]
    arrays = all(np.array_equal(ref[1][k], out[1][k]) for k in out[1])
    return "yes" if stats and arrays else ("stats only" if stats else "NO")


def bench_generated(args):
    t = time.perf_counter()
    gt, dets = make_data(args.images)
    print(f"(a) {args.images} images, {len(gt['annotations'])} ground truths, {len(dets)} detections "
          f"(generated in {time.perf_counter() - t:.0f} s), median of {args.repeat}")
    print("| case | tool | s | vs pycocotools | identical |\n|---|---|---|---|---|")
    for iou_type in ("bbox", "segm"):
        times = {tool: [] for tool in TOOLS}
        outputs = {}
        for _ in range(args.repeat):
            for tool in TOOLS:  # interleaved: a load on the machine hits all three alike
                coco, d = _gt_index(tool, gt), for_iou_type(dets, iou_type)
                t = time.perf_counter()
                outputs[tool] = RUNNERS[tool](coco, d, iou_type)
                times[tool].append(time.perf_counter() - t)
                del coco, d
        ref = statistics.median(times["pycocotools"])
        for tool in TOOLS:
            s = statistics.median(times[tool])
            same = "reference" if tool == "pycocotools" else _identical(outputs["pycocotools"], outputs[tool])
            print(f"| {iou_type}, {args.images} images | {tool} | {s:.2f} | {ref / s:.1f}x | {same} |")


CHILD = r"""
import contextlib, hashlib, io, json, sys, time
import numpy as np
tool, iou_type, gt_path, res_path = sys.argv[1:5]
sys.path.insert(0, sys.argv[5])
def rss_mb(field="VmRSS"):  # VmHWM: this process's peak (ru_maxrss would count the fork's)
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field)) / 1024
if tool == "pycocotools":
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
elif tool == "faster-coco-eval":
    from faster_coco_eval import COCO, COCOeval_faster
else:
    from d2seg.evaluation import fast_coco
    from d2seg.evaluation.coco import STAT_NAMES, evaluate_coco
base = rss_mb()
t = time.perf_counter()
if tool == "pycocotools":
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_path); ev = COCOeval(gt, gt.loadRes(res_path), iou_type)
        ev.evaluate(); ev.accumulate(); ev.summarize()
    stats, prec = list(map(float, ev.stats)), ev.eval["precision"]
elif tool == "faster-coco-eval":
    gt = COCO(gt_path, print_function=lambda *a: None)
    ev = COCOeval_faster(gt, gt.loadRes(res_path), iou_type, print_function=lambda *a: None)
    ev.evaluate(); ev.accumulate(); ev.summarize()
    stats, prec = list(map(float, ev.stats[:12])), ev.eval["precision"]
else:
    r = evaluate_coco(gt_path, res_path, [iou_type])[iou_type]
    stats, prec = [r["stats"][n] for n in STAT_NAMES], r["_precision"]
elapsed = time.perf_counter() - t
peak = rss_mb("VmHWM")
print(json.dumps({"s": elapsed, "base": base, "peak": peak, "stats": stats,
                  "precision": hashlib.sha1(np.ascontiguousarray(prec).tobytes()).hexdigest()}))
"""


def bench_coco_size(args):
    t = time.perf_counter()
    gt, dets = make_data(args.coco_images, gt_per_image=7.2, dets_per_image=100, num_classes=80, seed=1)
    print(f"\n(b) COCO val2017 shape: {args.coco_images} images, {len(gt['annotations'])} ground truths, "
          f"{len(dets)} detections (generated in {time.perf_counter() - t:.0f} s); one process per row, "
          f"from the JSON files")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory(prefix="bench_coco_eval") as tmp:
        gt_path = os.path.join(tmp, "gt.json")
        with open(gt_path, "w") as f:
            json.dump(gt, f)
        paths = {}
        for iou_type in ("bbox", "segm"):
            paths[iou_type] = os.path.join(tmp, f"{iou_type}.json")
            with open(paths[iou_type], "w") as f:
                json.dump(for_iou_type(dets, iou_type), f)
        del gt, dets
        print("| case | tool | s | vs pycocotools | peak RSS growth MB | vs pycocotools | identical |")
        print("|---|---|---|---|---|---|---|")
        for iou_type in ("bbox", "segm"):
            rows = {}
            for tool in TOOLS:
                out = subprocess.run([sys.executable, "-c", CHILD, tool, iou_type, gt_path,
                                      paths[iou_type], repo], capture_output=True, text=True)
                if out.returncode:
                    sys.exit(out.stderr)
                rows[tool] = json.loads(out.stdout.strip().splitlines()[-1])
            ref = rows["pycocotools"]
            for tool in TOOLS:
                r = rows[tool]
                growth = r["peak"] - r["base"]
                if tool == "pycocotools":
                    same = "reference"
                elif r["stats"] != ref["stats"]:
                    same = "NO"
                else:
                    same = "yes" if r["precision"] == ref["precision"] else "stats only"
                print(f"| {iou_type}, {args.coco_images} images | {tool} | {r['s']:.1f} | "
                      f"{ref['s'] / r['s']:.1f}x | {growth:.0f} | "
                      f"{growth / (ref['peak'] - ref['base']):.2f}x | {same} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--coco-images", type=int, default=5000)
    parser.add_argument("--skip-coco-size", action="store_true")
    parser.add_argument("--skip-generated", action="store_true", help="(b) only")
    args = parser.parse_args()
    import faster_coco_eval  # noqa: F401  (import time is not evaluation time)

    import d2seg.evaluation.fast_coco  # noqa: F401

    if not args.skip_generated:
        bench_generated(args)
    if not args.skip_coco_size:
        bench_coco_size(args)


if __name__ == "__main__":
    main()
