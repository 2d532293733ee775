"""detectron2's Visualizer.draw_instance_predictions vs d2seg's draw_instances, in one run.

Same detectron2 ``Instances`` (random overlapping masks, their boxes, classes, scores) on the
same image; both produce a finished BGR/RGB image (detectron2's includes matplotlib's canvas
render). The drawings differ by design (different renderers), so instead of "identical" the
table reports the share of mask pixels each output changed (both must draw every mask).

    python bench/bench_render.py [--reps 20] [--out DIR]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import cv2
import matplotlib
import numpy as np

matplotlib.use("Agg")
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated")

import torch  # noqa: E402
from detectron2.data import Metadata  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from detectron2.utils.visualizer import Visualizer  # noqa: E402

from d2seg.visualize import draw_instances, instances_from_detectron2  # noqa: E402

COCO_LIKE_NAMES = [f"class_{i}" for i in range(80)]


def make_case(n: int, height: int = 480, width: int = 640, seed: int = 0):
    """A textured image and ``n`` overlapping elliptical masks as detectron2 Instances."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 3)
    masks = np.zeros((n, height, width), np.uint8)
    for m in masks:
        centre = (int(rng.integers(40, width - 40)), int(rng.integers(40, height - 40)))
        axes = (int(rng.integers(15, 110)), int(rng.integers(15, 110)))
        cv2.ellipse(m, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    boxes = []
    for m in masks:
        x, y, w, h = cv2.boundingRect(m)
        boxes.append([x, y, x + w, y + h])
    inst = Instances((height, width))
    inst.pred_masks = torch.from_numpy(masks.astype(bool))
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.scores = torch.tensor(rng.uniform(0.3, 1.0, n), dtype=torch.float32)
    inst.pred_classes = torch.from_numpy(rng.integers(0, 80, n))
    return image, inst


def detectron2_render(image_bgr, inst, metadata):
    vis = Visualizer(image_bgr[:, :, ::-1], metadata)
    return vis.draw_instance_predictions(inst).get_image()[:, :, ::-1]


def d2seg_render(image_bgr, inst, names):
    found = instances_from_detectron2(inst)
    return draw_instances(image_bgr, **found.draw_kwargs(), class_names=names)


def median_ms(fn, reps: int) -> tuple[float, np.ndarray]:
    out = fn()  # warm-up (imports, font caches)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times), out


def changed_share(before, after, masks) -> float:
    union = masks.any(axis=0)
    return float((np.any(before != after, axis=2) & union).sum() / union.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--out", help="write both renderings here as PNGs")
    args = parser.parse_args()
    metadata = Metadata(thing_classes=COCO_LIKE_NAMES)
    print(f"{'case':<28}{'detectron2 ms':>15}{'d2seg ms':>10}{'ratio':>8}   mask pixels drawn "
          "(detectron2 / d2seg)")
    for n in (20, 100):
        image, inst = make_case(n)
        ref_ms, ref = median_ms(lambda: detectron2_render(image, inst, metadata), args.reps)
        ours_ms, ours = median_ms(lambda: d2seg_render(image, inst, COCO_LIKE_NAMES), args.reps)
        masks = inst.pred_masks.numpy()
        print(f"{f'{n} instances, 640x480':<28}{ref_ms:>15.1f}{ours_ms:>10.2f}"
              f"{ref_ms / ours_ms:>7.1f}x   {changed_share(image, ref, masks):.3f} / "
              f"{changed_share(image, ours, masks):.3f}")
        if args.out:
            from pathlib import Path

            Path(args.out).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(f"{args.out}/detectron2_{n}.png", ref)
            cv2.imwrite(f"{args.out}/d2seg_{n}.png", ours)


if __name__ == "__main__":
    main()
