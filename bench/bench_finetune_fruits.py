"""Fine-tuning on real photos: ImageNet MobileNetV2-FPN vs the same model from scratch.

fruits_nuts (../shared/data/fruits_nuts: 18 photos 800x600, 165 polygon instances of date,
fig, hazelnut) has a single split. It is split here deterministically by image id: images with
``id % 3 == 2`` (6 photos: ids 2 5 8 11 14 17, files 10 13 16 3 6 9 .jpg) are held out for
evaluation, the other 12 train. Every run starts from
configs/instance/mask_rcnn_MNV2_FPN_finetune.yaml with the same seed, iterations, resolution
and schedule (learning rate scaled linearly from the recipe's 0.01 at 4 images per iteration);
only the rows' overrides differ:

    imagenet          MODEL.WEIGHTS imagenet:mobilenet_v2 (the recipe: FrozenBN, FREEZE_AT 2)
    scratch           MODEL.WEIGHTS "" and nothing else (FrozenBN = identity: no normalisation)
    scratch-GN        MODEL.WEIGHTS "", TORCHVISION.NORM GN, FREEZE_AT 0 (how to train from scratch)
    imagenet-GN       MODEL.WEIGHTS imagenet:mobilenet_v2, NORM GN, FREEZE_AT 0 (scratch-GN's
                      config exactly, with ImageNet weights: the strictly like-for-like pair;
                      the ImageNet convolutions load, BatchNorm parameters do not carry over)

The table gives bbox and segm AP on the 6 held-out photos (COCOEvaluator), the mean training
loss over the last 20 iterations and seconds per iteration (data loading included). Runs use
one torch thread by default: on a shared machine two threads spin-wait on each other.

    python bench/bench_finetune_fruits.py [--iters 200] [--size 224] [--batch 2] [--seed 42]
        [--threads 1] [--runs imagenet scratch scratch-GN imagenet-GN]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

from detectron2.engine import HookBase

REPO = Path(__file__).resolve().parents[1]
FRUITS = REPO.parent / "shared" / "data" / "fruits_nuts" / "data"
CONFIG = REPO / "configs" / "instance" / "mask_rcnn_MNV2_FPN_finetune.yaml"

RUNS = {
    "imagenet": ["MODEL.WEIGHTS", "imagenet:mobilenet_v2"],
    "scratch": ["MODEL.WEIGHTS", ""],
    "scratch-GN": ["MODEL.WEIGHTS", "", "MODEL.TORCHVISION.NORM", "GN",
                   "MODEL.BACKBONE.FREEZE_AT", "0"],
    "imagenet-GN": ["MODEL.WEIGHTS", "imagenet:mobilenet_v2", "MODEL.TORCHVISION.NORM", "GN",
                    "MODEL.BACKBONE.FREEZE_AT", "0"],
}


def write_split_manifest(folder: Path, name: str = "fruits_bench") -> Path:
    """COCO JSONs for the train (id % 3 != 2) and val (id % 3 == 2) images, and a manifest."""
    coco = json.loads((FRUITS / "trainval.json").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    for split, keep in (("train", lambda i: i % 3 != 2), ("val", lambda i: i % 3 == 2)):
        ids = {im["id"] for im in coco["images"] if keep(im["id"])}
        part = dict(coco, images=[im for im in coco["images"] if im["id"] in ids],
                    annotations=[a for a in coco["annotations"] if a["image_id"] in ids])
        (folder / f"{split}.json").write_text(json.dumps(part))
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\nkind: coco_instances\nsplits:\n"
                    f"  train:\n    images: {FRUITS / 'images'}\n    annotations: train.json\n"
                    f"  val:\n    images: {FRUITS / 'images'}\n    annotations: val.json\n")
    return path


def overrides_for(run: str, iters: int, size: int, dataset: str, batch: int = 2,
                  seed: int = 42, extra=()) -> list[str]:
    """The schedule shared by every run (scaled to ``iters``; the learning rate scaled
    linearly from the recipe's 0.01 at 4 images) plus the run's own overrides."""
    return [
        "DATASETS.TRAIN", f"('{dataset}_train',)", "DATASETS.TEST", f"('{dataset}_val',)",
        "MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "1", "D2SEG.PROGRESS_BAR", "False",
        "INPUT.MIN_SIZE_TRAIN", f"({size - 32}, {size}, {size + 32})",
        "INPUT.MAX_SIZE_TRAIN", str(size * 2), "INPUT.MIN_SIZE_TEST", str(size),
        "INPUT.MAX_SIZE_TEST", str(size * 2),
        "SOLVER.IMS_PER_BATCH", str(batch), "SOLVER.MAX_ITER", str(iters),
        "SOLVER.BASE_LR", str(0.01 * batch / 4), "SOLVER.WARMUP_ITERS", str(min(100, iters // 3)),
        "SOLVER.STEPS", f"({int(iters * 0.75)}, {int(iters * 0.9)})",
        "SOLVER.CHECKPOINT_PERIOD", str(10 * iters), "TEST.EVAL_PERIOD", "0",
        "D2SEG.BEST_METRIC", "", "SEED", str(seed), *RUNS[run], *extra,
    ]


class Recorder(HookBase):
    """A training hook: the total loss of every iteration and the wall time after the first 5."""

    def __init__(self):
        self.losses, self.t0, self.t1, self.n = [], None, None, 0

    def after_step(self):
        self.losses.append(float(self.trainer.storage.history("total_loss").latest()))
        step = self.trainer.iter - self.trainer.start_iter
        if step == 4:
            self.t0 = time.perf_counter()
        elif step > 4:
            self.t1, self.n = time.perf_counter(), step - 4


def train_one(run: str, iters: int, size: int, dataset: str, out_dir: Path, batch: int,
              seed: int, extra=()) -> dict:
    from d2seg.engine.run import setup
    from d2seg.engine.trainer import Trainer

    cfg = setup(str(CONFIG), overrides_for(run, iters, size, dataset, batch, seed, extra),
                output_dir=str(out_dir))
    trainer = Trainer(cfg)
    recorder = Recorder()
    trainer.register_hooks([recorder])
    trainer.resume_or_load(resume=False)
    row = {"run": run, "iters": iters, "size": size, "batch": batch, "seed": seed}
    try:
        trainer.train()
    except FloatingPointError as e:  # detectron2 stops on a non-finite loss
        row.update(bbox_AP=float("nan"), segm_AP=float("nan"), note=f"diverged: {e}"[:60])
    else:
        results = trainer._last_eval_results
        row.update(bbox_AP=results["bbox"]["AP"], segm_AP=results["segm"]["AP"],
                   bbox_AP50=results["bbox"]["AP50"], segm_AP50=results["segm"]["AP50"], note="")
    tail = [x for x in recorder.losses[-20:] if math.isfinite(x)]
    row["loss_last20"] = sum(tail) / len(tail) if tail else float("nan")
    row["s_per_iter"] = (recorder.t1 - recorder.t0) / recorder.n if recorder.n else float("nan")
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--size", type=int, default=224, help="short side of the training images")
    parser.add_argument("--batch", type=int, default=2, help="images per iteration")
    parser.add_argument("--runs", nargs="+", default=["imagenet", "scratch", "scratch-GN",
                                                      "imagenet-GN"], choices=list(RUNS))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared machine two threads "
                             "spin-wait on each other and run many times slower)")
    parser.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE",
                        help="config overrides applied to every run")
    args = parser.parse_args(argv)
    if not FRUITS.is_dir():
        print(f"needs the shared data at {FRUITS}", file=sys.stderr)
        return 2

    import torch

    from d2seg.data import manifest as mf
    from d2seg.data.register import register_manifest

    torch.set_num_threads(args.threads)

    work = Path(args.out or tempfile.mkdtemp(prefix="bench_fruits_"))
    os.environ.setdefault("D2SEG_CACHE", str(work / "cache"))
    register_manifest(mf.load_manifest(write_split_manifest(work / "data")))
    rows = []
    for run in args.runs:
        rows.append(train_one(run, args.iters, args.size, "fruits_bench", work / run, args.batch,
                              args.seed, args.opts))
        print(json.dumps(rows[-1]), flush=True)

    print(f"\nfruits_nuts: 12 train / 6 held-out photos, {args.iters} iterations, "
          f"batch {args.batch}, short side {args.size}, seed {args.seed}, CPU threads {_threads()}")
    print(f"{'run':<12} {'iters':>5} {'bbox AP':>8} {'segm AP':>8} {'bbox AP50':>9} "
          f"{'segm AP50':>9} {'loss(last20)':>12} {'s/iter':>7}  note")
    for r in rows:
        print(f"{r['run']:<12} {r['iters']:>5} {r['bbox_AP']:>8.1f} {r['segm_AP']:>8.1f} "
              f"{r.get('bbox_AP50', float('nan')):>9.1f} {r.get('segm_AP50', float('nan')):>9.1f} "
              f"{r['loss_last20']:>12.3f} {r['s_per_iter']:>7.2f}  {r['note']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    sys.exit(main())
