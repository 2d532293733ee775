"""Benchmark: d2seg.panoptic.combine_panoptic vs detectron2's combine_semantic_and_instance_outputs.

Same inputs, same thresholds (detectron2's defaults 0.5 / 0.5 / 4096), one run, side by side:
100 instances on an 800x1067 image (ellipses of detection-like sizes, scores uniform in [0, 1]),
and a worst case where every mask is a large box. Prints case, reference ms, d2seg ms, ratio and
whether the panoptic maps and segments_info are identical.

    python bench/bench_panoptic_combine.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from detectron2.modeling.meta_arch.panoptic_fpn import combine_semantic_and_instance_outputs
from detectron2.structures import Instances

from d2seg.panoptic.combine import combine_panoptic


def make_case(n: int, h: int, w: int, large: bool, seed: int = 0):
    g = np.random.default_rng(seed)
    yy, xx = np.ogrid[:h, :w]
    masks = np.zeros((n, h, w), dtype=bool)
    for k in range(n):
        if large:
            y0, x0 = g.integers(0, h // 2), g.integers(0, w // 2)
            masks[k, y0:y0 + h // 2, x0:x0 + w // 2] = True
        else:
            ry, rx = g.uniform(10, 150), g.uniform(10, 150)
            cy, cx = g.uniform(0, h), g.uniform(0, w)
            masks[k] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    inst = Instances((h, w))
    inst.scores = torch.tensor(g.random(n), dtype=torch.float32)
    inst.pred_classes = torch.tensor(g.integers(0, 80, n))
    inst.pred_masks = torch.from_numpy(masks)
    blocks = g.integers(0, 54, size=(h // 100 + 1, w // 100 + 1))
    sem = torch.from_numpy(np.kron(blocks, np.ones((100, 100), np.int64))[:h, :w].copy())
    return inst, sem


def best_ms(fn, repeat: int) -> tuple[float, object]:
    out, times = None, []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times)), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for both (1: stable on a shared 2-core machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'case':<44}{'detectron2 ms':>14}{'d2seg ms':>10}{'ratio':>8}  identical")
    for label, n, large in [("100 instances, 800x1067, detection-sized", 100, False),
                            ("100 instances, 800x1067, all half-image", 100, True),
                            ("20 instances, 800x1067, detection-sized", 20, False)]:
        inst, sem = make_case(n, 800, 1067, large)
        ref_t, ref = best_ms(lambda: combine_semantic_and_instance_outputs(
            inst, sem, 0.5, 4096, 0.5), args.repeat)
        our_t, ours = best_ms(lambda: combine_panoptic(inst, sem), args.repeat)
        same = torch.equal(ref[0], ours.panoptic_seg) and ref[1] == ours.segments_info
        print(f"{label:<44}{ref_t:>14.1f}{our_t:>10.1f}{ref_t / our_t:>7.1f}x  "
              f"{'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
