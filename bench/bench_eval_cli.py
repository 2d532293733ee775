"""`d2seg eval --results` end to end vs a plain pycocotools script, each in a fresh process.

What a user waits for: interpreter start, imports, loading both JSON files, bbox and segm
evaluation, the summary (and for d2seg the report files). Both run as separate processes on
the same files, alternating, median of --repeat wall times (GNU-time-free: measured around
subprocess.run).

    OMP_NUM_THREADS=1 python bench/bench_eval_cli.py [--images 200] [--dets-per-image 3] [--classes 2] [--repeat 5]

Data: bench_coco_eval.make_data (generated 640x480 images, polygon ground truths, RLE detections).
Rows: d2seg with plots (PR curves, confusion matrices, report.html), d2seg --no-plots, and the
pycocotools script; ratio = command / pycocotools script.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_coco_eval import make_data  # noqa: E402

# masks scored without their boxes, as detectron2 and d2seg do
PYCOCOTOOLS_SCRIPT = """
import json, sys
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
gt = COCO(sys.argv[1])
dets = json.load(open(sys.argv[2]))
for iou_type in ("bbox", "segm"):
    use = dets if iou_type == "bbox" else [{k: v for k, v in d.items() if k != "bbox"} for d in dets]
    ev = COCOeval(gt, gt.loadRes(use), iou_type)
    ev.evaluate(); ev.accumulate(); ev.summarize()
"""


def _wall(cmd, env) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--dets-per-image", type=float, default=3)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--classes", type=int, default=2,
                   help="categories (issue 13's case: a 2-class brain-MRI set)")
    args = p.parse_args()
    gt, dets = make_data(args.images, dets_per_image=args.dets_per_image, num_classes=args.classes,
                         seed=3)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    with tempfile.TemporaryDirectory(prefix="bench_eval_cli") as tmp:
        gt_path, res_path = Path(tmp) / "gt.json", Path(tmp) / "results.json"
        gt_path.write_text(json.dumps(gt))
        res_path.write_text(json.dumps(dets))
        d2seg = [str(Path(sys.executable).with_name("d2seg")), "eval", "--results", str(res_path),
                 "--gt", str(gt_path), "--out", str(Path(tmp) / "out")]
        cmds = {"d2seg eval --results (plots, report.html)": d2seg,
                "d2seg eval --results --no-plots": d2seg + ["--no-plots"],
                "pycocotools script (bbox + segm)": [sys.executable, "-c", PYCOCOTOOLS_SCRIPT,
                                                     str(gt_path), str(res_path)]}
        times = {k: [] for k in cmds}
        for _ in range(args.repeat):
            for name, cmd in cmds.items():
                times[name].append(_wall(cmd, env))
    ref = statistics.median(times["pycocotools script (bbox + segm)"])
    print(f"{args.images} images, {args.classes} classes, {len(gt['annotations'])} ground truths, "
          f"{len(dets)} detections; "
          f"median of {args.repeat} fresh processes each")
    print("| command | wall s | vs pycocotools script |")
    print("|---|---:|---:|")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"| {name} | {m:.2f} | {m / ref:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
