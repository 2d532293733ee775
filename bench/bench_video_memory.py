"""Peak memory of ``d2seg predict`` on a short and a 10x longer generated video.

Goal (issue 5): inference on a long video does not grow memory. Each run is a separate
``d2seg predict`` process (a tiny random-init Mask R-CNN from ``d2seg.runners.diagnostics``, 160x120
frames, every detection written to results.json, every frame rendered into an mp4); its peak
resident memory is read from the kernel as in ``bench_eval_memory.py``: the whole process, and the
work's growth over the resident size after imports.

    python bench/bench_video_memory.py                  # 100 vs 1000 frames
    python bench/bench_video_memory.py --frames 50 500
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_eval_memory import measure  # noqa: E402

IMPORTS = "d2seg.cli.main,d2seg.cli.predict,d2seg.engine.predict,d2seg.engine.run,detectron2.modeling"
H, W = 120, 160


def write_model(folder: Path) -> tuple[Path, Path]:
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from d2seg.runners.diagnostics import tiny_mask_rcnn_cfg

    torch.manual_seed(0)
    cfg = tiny_mask_rcnn_cfg("cpu", 48)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # untrained: keep its low-score output
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 100
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 30
    cfg.TEST.DETECTIONS_PER_IMAGE = 12
    DetectionCheckpointer(build_model(cfg), save_dir=str(folder)).save("model")
    (folder / "config.yaml").write_text(cfg.dump())
    return folder / "config.yaml", folder / "model.pth"


def write_video(path: Path, n: int) -> Path:
    import cv2
    import numpy as np

    rng = np.random.default_rng(n)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (W, H))
    for i in range(n):
        img = rng.integers(0, 60, (H, W, 3), dtype=np.uint8)
        x, y = 10 + (3 * i) % (W - 60), 10 + (2 * i) % (H - 50)
        cv2.rectangle(img, (x, y), (x + 40, y + 30), (0, 200, 0), -1)
        writer.write(img)
    writer.release()
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, nargs=2, default=[100, 1000], metavar=("SHORT", "LONG"))
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    import cv2

    folder = Path(tempfile.mkdtemp(prefix="d2seg_videomem_"))
    rows = []
    try:
        yaml_path, weights = write_model(folder)
        for n in args.frames:
            video = write_video(folder / f"clip{n}.mp4", n)
            out = folder / f"out{n}"
            r = measure(IMPORTS, "d2seg", ["predict", video, "--config-file", yaml_path, "--weights", weights,
                                           "--out", out, "--batch-size", args.batch_size, "--score-thresh", "0.0"],
                        env=dict(os.environ, OMP_NUM_THREADS="1"))
            detections = len(json.loads((out / "results.json").read_text()))
            cap = cv2.VideoCapture(str(out / "rendered" / f"clip{n}.mp4"))
            rendered = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            cap.release()
            print(f"  {n} frames: {detections} detections, {rendered} frames rendered; peak {r['peak']:.0f} MB "
                  f"(+{r['growth']:.0f} over imports) in {r['s']:.1f} s", flush=True)
            rows.append((n, r, detections))
            (out / "results.json").unlink()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    (a_n, a, _), (b_n, b, _) = rows
    print("\n| frames | detections | peak RSS MB | ratio | growth over imports MB | ratio |\n|---:|---:|---:|---:|---:|---:|")
    print(f"| {a_n} | {rows[0][2]} | {a['peak']:.0f} | | {a['growth']:.0f} | |")
    print(f"| {b_n} | {rows[1][2]} | {b['peak']:.0f} | {b['peak'] / a['peak']:.2f}x | {b['growth']:.0f} | "
          f"{b['growth'] / a['growth']:.2f}x |")


if __name__ == "__main__":
    main()
