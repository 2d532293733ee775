"""Classical methods on real and demo data: GrabCut mask AP from ground-truth boxes, and the
mIoU of a degraded semantic prediction before / after superpixel refinement.

GrabCut is scored against the datasets' true masks with d2seg.evaluation.coco.evaluate_coco
(segm); the reference row fills each box (the mask a box-only dataset gives for free).

The prediction to refine is the demo's ground truth degraded on purpose (no trained semantic
model exists yet): nearest-downsampled x4, 10% of the low-resolution pixels set to a random
class (seeded), nearest-upsampled x4 -- blocky edges plus 4x4 blobs of wrong labels.

    python bench/bench_classical.py [--skip-fruits]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import cv2
import numpy as np

from d2seg.classical import grabcut_coco, refine_semantic
from d2seg.classical.coco_io import images_from_coco, mask_to_result
from d2seg.data.demo import ensure_demo
from d2seg.evaluation.coco import evaluate_coco
from d2seg.evaluation.semantic_metrics import semantic_metrics
from d2seg.io.coco import load_coco

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def filled_boxes(gt_json, images_dir) -> list[dict]:
    """Reference: each ground-truth box filled as its mask."""
    coco = load_coco(str(gt_json))
    sizes = {e.image_id: e.size for e in images_from_coco(coco, images_dir)}
    out = []
    for a in coco["annotations"]:
        if a.get("iscrowd", 0):
            continue
        h, w = sizes[a["image_id"]]
        x, y, bw, bh = a["bbox"]
        mask = np.zeros((h, w), bool)
        mask[int(np.floor(y)):int(np.ceil(y + bh)), int(np.floor(x)):int(np.ceil(x + bw))] = True
        out.append(mask_to_result(mask, a["image_id"], a["category_id"], 1.0))
    return out


def bench_grabcut(name, gt_json, images_dir, rows):
    n_images = len(load_coco(str(gt_json))["images"])
    for method, run in (("filled box (reference)", lambda: filled_boxes(gt_json, images_dir)),
                        ("GrabCut iters=5", lambda: grabcut_coco(gt_json, images_dir,
                                                                 progress=False))):
        start = time.perf_counter()
        results = run()
        seconds = time.perf_counter() - start
        s = evaluate_coco(str(gt_json), results, ("segm",))["segm"]["stats"]
        rows.append((name, method, len(results), s["AP"], s["AP50"], s["AP75"],
                     1000 * seconds / n_images))
        print(f"| {name} | {method} | {len(results)} | {100 * s['AP']:.1f} | "
              f"{100 * s['AP50']:.1f} | {100 * s['AP75']:.1f} | {rows[-1][-1]:.0f} |", flush=True)


def degrade(label: np.ndarray, rng, num_classes: int, factor=4, noise=0.10) -> np.ndarray:
    h, w = label.shape
    small = cv2.resize(label, (w // factor, h // factor), interpolation=cv2.INTER_NEAREST)
    flip = rng.random(small.shape) < noise
    small[flip] = rng.integers(0, num_classes, int(flip.sum()))
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def bench_refinement(demo: Path, num_classes: int = 7):
    rng = np.random.default_rng(0)
    pairs = []
    for path in sorted((demo / "val" / "semantic").glob("*.png")):
        gt = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        image = cv2.cvtColor(cv2.imread(str(demo / "val" / "images" / f"{path.stem}.jpg")),
                             cv2.COLOR_BGR2RGB)
        pairs.append((image, gt, degrade(gt, rng, num_classes)))
    base = semantic_metrics(((g, p) for _, g, p in pairs), num_classes)
    print("| method | mIoU | pixel acc | ms / image |\n|---|---|---|---|")
    print(f"| degraded prediction (before) | {100 * base['mIoU']:.1f} | "
          f"{100 * base['pixel_accuracy']:.1f} | - |")
    for method, params in (("slic", {}), ("slic", {"segment_size": 6}),
                           ("felzenszwalb", {}), ("felzenszwalb", {"scale": 50})):
        start = time.perf_counter()
        refined = [(g, refine_semantic(im, p, method, **params)) for im, g, p in pairs]
        ms = 1000 * (time.perf_counter() - start) / len(pairs)
        m = semantic_metrics(refined, num_classes)
        label = method + (f" {params}" if params else " (defaults)")
        print(f"| {label} | {100 * m['mIoU']:.1f} | {100 * m['pixel_accuracy']:.1f} | "
              f"{ms:.0f} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-fruits", action="store_true")
    args = parser.parse_args()
    print(f"# {time.strftime('%Y-%m-%d')} {platform.machine()} {platform.processor()} "
          f"({__import__('os').cpu_count()} CPUs), OpenCV {cv2.__version__}")
    demo = ensure_demo()
    print("\n## GrabCut from ground-truth boxes (segm, %)\n")
    print("| data | masks | n | AP | AP50 | AP75 | ms / image |\n|---|---|---|---|---|---|---|")
    rows = []
    bench_grabcut("demo val", demo / "val" / "instances.json", demo / "val" / "images", rows)
    fruits = SHARED / "fruits_nuts" / "data"
    if args.skip_fruits or not fruits.is_dir():
        print(f"(fruits_nuts skipped: {fruits} {'absent' if not fruits.is_dir() else 'skipped'})")
    else:
        bench_grabcut("fruits_nuts", fruits / "trainval.json", fruits / "images", rows)
    print("\n## Superpixel refinement of a degraded semantic prediction (demo val, 7 classes)\n")
    bench_refinement(demo)


if __name__ == "__main__":
    main()
