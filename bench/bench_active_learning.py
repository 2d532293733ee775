"""Active learning, simulated: add images chosen by the model's uncertainty vs at random.

The pool is a labelled training split whose labels are hidden until an image is "labelled".
Per seed: a random start set of ``--init`` images; train ``--iters0`` iterations from ImageNet
MobileNetV2, score segm AP on the val split, then for each strategy add ``--step`` images per
round for ``--rounds`` rounds, each round fine-tuning the previous round's model for ``--iters``
more iterations on all images labelled so far (constant learning rate after a 10-iteration
warm-up), and score again:

    random      ``--step`` pool images drawn at random (seeded)
    sum|max|mean the ``--step`` pool images the last model is most unsure about
                (``d2seg.label.next.score_pool``, the measure ``d2seg label next --measure`` uses)

Every strategy of one seed shares the start set and its first model, and each round uses the
same budget. Datasets:

    demo    the bundled demo (synthetic shapes, 192x160): pool = the first ``--pool`` train
            images, val = the 50 val images
    fruits  ../shared/data/fruits_nuts (18 photos 800x600, 3 classes), split as
            bench_finetune_fruits.py: 12 pool images (id % 3 != 2), 6 val (id % 3 == 2)

Rows go to ``--json`` (one JSON object a line, appended as they come) and the summary table and
plot (mean and min-max over seeds of val segm AP against labelled images) to ``--plot``.

    python bench/bench_active_learning.py --dataset demo --seeds 0 1 2 --json al_demo.jsonl
    python bench/bench_active_learning.py --plot bench/active_learning.png al_demo.jsonl al_fruits.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FRUITS = REPO.parent / "shared" / "data" / "fruits_nuts" / "data"
CONFIG = REPO / "configs" / "instance" / "mask_rcnn_MNV2_FPN_cpu_quick.yaml"


def dataset_files(name: str, work: Path, pool_size: int):
    """(pool COCO dict, val JSON path, image folder) for ``name``."""
    if name == "demo":
        from d2seg.data.demo import ensure_demo

        root = ensure_demo()
        train = json.loads((root / "train" / "instances.json").read_text())
        ids = sorted(im["id"] for im in train["images"])[:pool_size]
        keep = set(ids)
        pool = dict(train, images=[im for im in train["images"] if im["id"] in keep],
                    annotations=[a for a in train["annotations"] if a["image_id"] in keep])
        # the demo's train and val images live in different folders: give the pool absolute paths
        for im in pool["images"]:
            im["file_name"] = str(root / "train" / "images" / im["file_name"])
        val = json.loads((root / "val" / "instances.json").read_text())
        for im in val["images"]:
            im["file_name"] = str(root / "val" / "images" / im["file_name"])
        (work / "val.json").write_text(json.dumps(val))
        return pool, work / "val.json", Path("/")
    coco = json.loads((FRUITS / "trainval.json").read_text())
    parts = {}
    for split, keep in (("train", lambda i: i % 3 != 2), ("val", lambda i: i % 3 == 2)):
        ids = {im["id"] for im in coco["images"] if keep(im["id"])}
        parts[split] = dict(coco, images=[im for im in coco["images"] if im["id"] in ids],
                            annotations=[a for a in coco["annotations"] if a["image_id"] in ids])
    (work / "val.json").write_text(json.dumps(parts["val"]))
    return parts["train"], work / "val.json", FRUITS / "images"


def subset(pool: dict, ids) -> dict:
    ids = set(ids)
    return dict(pool, images=[im for im in pool["images"] if im["id"] in ids],
                annotations=[a for a in pool["annotations"] if a["image_id"] in ids])


def train_eval(pool, ids, val_json, images, work: Path, tag: str, args,
               start: Path | None = None) -> tuple[float, Path, object]:
    """Train on the pool images ``ids`` (from ImageNet, or fine-tuning ``start``); return
    (val segm AP, weights, cfg)."""
    from d2seg.data import manifest as mf
    from d2seg.data.register import register_manifest
    from d2seg.engine.run import setup
    from d2seg.engine.trainer import Trainer

    folder = work / tag
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.json").write_text(json.dumps(subset(pool, ids)))
    name = f"al_{tag}"
    (folder / f"{name}.yaml").write_text(
        f"name: {name}\nkind: coco_instances\nsplits:\n"
        f"  train:\n    images: {images}\n    annotations: train.json\n"
        f"  val:\n    images: {images}\n    annotations: {val_json}\n")
    register_manifest(mf.load_manifest(folder / f"{name}.yaml"))
    size, batch = args.size, args.batch
    if start is None:
        iters, schedule = args.iters0, [
            "SOLVER.WARMUP_ITERS", str(min(100, args.iters0 // 3)),
            "SOLVER.STEPS", f"({int(args.iters0 * 0.75)}, {int(args.iters0 * 0.9)})"]
    else:
        iters, schedule = args.iters, ["MODEL.WEIGHTS", str(start), "SOLVER.WARMUP_ITERS", "10",
                                       "SOLVER.STEPS", "()"]
    cfg = setup(str(CONFIG), [
        "DATASETS.TRAIN", f"('{name}_train',)", "DATASETS.TEST", f"('{name}_val',)",
        "MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0", "D2SEG.PROGRESS_BAR", "False",
        "D2SEG.RUN_REPORT", "False",
        "INPUT.MIN_SIZE_TRAIN", f"({size - 16}, {size}, {size + 16})",
        "INPUT.MAX_SIZE_TRAIN", str(size * 2), "INPUT.MIN_SIZE_TEST", str(size),
        "INPUT.MAX_SIZE_TEST", str(size * 2), "SOLVER.IMS_PER_BATCH", str(batch),
        "SOLVER.MAX_ITER", str(iters), "SOLVER.BASE_LR", str(0.01 * batch / 4),
        *schedule, "SOLVER.CHECKPOINT_PERIOD", str(10 * iters), "TEST.EVAL_PERIOD", "0",
        "D2SEG.BEST_METRIC", "", "SEED", str(args.train_seed)], output_dir=str(folder / "run"))
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    try:
        trainer.train()
        ap = float(trainer._last_eval_results["segm"]["AP"])
    except FloatingPointError:
        ap = float("nan")
    return ap, folder / "run" / "model_final.pth", cfg


def uncertain_ids(cfg, weights, pool, candidates, k, measure, images) -> list[int]:
    from d2seg.engine.predict import BatchPredictor
    from d2seg.label.model import LabelModel
    from d2seg.label.next import score_pool
    from d2seg.label.uncertainty import MIN_SCORE

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = MIN_SCORE
    model = LabelModel(BatchPredictor(cfg, str(weights)), [], [])
    by_id = {im["id"]: im for im in pool["images"]}
    files = [Path(images) / by_id[i]["file_name"] for i in candidates]
    rows = score_pool(model, files, measure, progress=False)
    order = sorted(range(len(rows)), key=lambda j: (-rows[j]["uncertainty"], candidates[j]))
    return [candidates[j] for j in order[:k]]


def run(args) -> int:
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.out or tempfile.mkdtemp(prefix=f"bench_al_{args.dataset}_"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("D2SEG_CACHE", str(Path.home() / ".cache" / "d2seg"))
    pool, val_json, images = dataset_files(args.dataset, work, args.pool)
    all_ids = sorted(im["id"] for im in pool["images"])
    out = open(args.json, "a") if args.json else None

    def emit(row):
        print(json.dumps(row), flush=True)
        if out:
            out.write(json.dumps(row) + "\n")
            out.flush()

    for seed in args.seeds:
        rng = random.Random(seed)
        start = sorted(rng.sample(all_ids, args.init))
        t0 = time.time()
        ap0, w0, cfg0 = train_eval(pool, start, val_json, images, work, f"{args.dataset}_s{seed}_r0", args)
        for strategy in args.strategies:
            emit({"dataset": args.dataset, "seed": seed, "strategy": strategy, "round": 0,
                  "labelled": len(start), "segm_AP": ap0, "seconds": round(time.time() - t0)})
        for strategy in args.strategies:
            labelled, weights, cfg = list(start), w0, cfg0
            pick = random.Random(f"{seed}-{strategy}")
            for r in range(1, args.rounds + 1):
                t0 = time.time()
                candidates = [i for i in all_ids if i not in set(labelled)]
                k = min(args.step, len(candidates))
                if strategy == "random":
                    chosen = sorted(pick.sample(candidates, k))
                else:
                    chosen = uncertain_ids(cfg, weights, pool, candidates, k, strategy, images)
                labelled += chosen
                ap, weights, cfg = train_eval(pool, labelled, val_json, images, work,
                                              f"{args.dataset}_s{seed}_{strategy}_r{r}", args,
                                              start=weights)
                emit({"dataset": args.dataset, "seed": seed, "strategy": strategy, "round": r,
                      "labelled": len(labelled), "segm_AP": ap, "chosen": chosen,
                      "seconds": round(time.time() - t0)})
    return 0


def plot(out_png: str, jsonl_files) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [json.loads(line) for f in jsonl_files for line in Path(f).read_text().splitlines()
            if line.strip()]
    datasets = sorted({r["dataset"] for r in rows})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    print("| dataset | strategy | " + " | ".join(["labelled images: segm AP mean (min-max), n seeds"]) + " |")
    print("|---|---|---|")
    for ax, ds in zip(axes[0], datasets):
        for strategy in sorted({r["strategy"] for r in rows if r["dataset"] == ds}):
            sel = [r for r in rows if r["dataset"] == ds and r["strategy"] == strategy]
            xs = sorted({r["labelled"] for r in sel})
            stats = []
            for x in xs:
                v = np.array([r["segm_AP"] for r in sel if r["labelled"] == x], float)
                stats.append((x, np.nanmean(v), np.nanmin(v), np.nanmax(v), len(v)))
            st = np.array([s[:4] for s in stats])
            ax.plot(st[:, 0], st[:, 1], marker="o", label=strategy)
            ax.fill_between(st[:, 0], st[:, 2], st[:, 3], alpha=0.15)
            cells = ", ".join(f"{int(x)}: {m:.1f} ({lo:.1f}-{hi:.1f}), n={n}"
                              for x, m, lo, hi, n in stats)
            print(f"| {ds} | {strategy} | {cells} |")
        ax.set_title(f"{ds}: val segm AP vs labelled images")
        ax.set_xlabel("labelled images")
        ax.set_ylabel("segm AP")
        ax.grid(alpha=0.3)
        ax.legend()
    print("\n| dataset | strategy | round (labelled) | AP minus random's, per seed | mean | seeds better |")
    print("|---|---|---|---|---|---|")
    for ds in datasets:
        sel = [r for r in rows if r["dataset"] == ds]
        base = {(r["seed"], r["round"]): r["segm_AP"] for r in sel if r["strategy"] == "random"}
        for strategy in sorted({r["strategy"] for r in sel} - {"random"}):
            for rnd in sorted({r["round"] for r in sel if r["round"] > 0}):
                pairs = [(r["seed"], r["segm_AP"] - base[(r["seed"], rnd)], r["labelled"])
                         for r in sel if r["strategy"] == strategy and r["round"] == rnd
                         and (r["seed"], rnd) in base]
                if not pairs:
                    continue
                diffs = [d for _, d, _ in pairs]
                print(f"| {ds} | {strategy} | {rnd} ({pairs[0][2]}) | "
                      + ", ".join(f"{d:+.1f}" for d in diffs)
                      + f" | {np.mean(diffs):+.1f} | {sum(d > 0 for d in diffs)}/{len(diffs)} |")
    fig.tight_layout()
    from d2seg.io.files import save_figure_atomic

    save_figure_atomic(fig, out_png, dpi=100)
    print(f"wrote {out_png}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["demo", "fruits"], default="demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--strategies", nargs="+", default=["random", "sum"],
                        choices=["random", "sum", "max", "mean"])
    parser.add_argument("--init", type=int, default=None, help="start set (demo 8, fruits 3)")
    parser.add_argument("--step", type=int, default=None, help="images per round (demo 8, fruits 2)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pool", type=int, default=100, help="demo: pool size")
    parser.add_argument("--iters0", type=int, default=120,
                        help="iterations of the first training, from ImageNet (default 120)")
    parser.add_argument("--iters", type=int, default=80,
                        help="iterations of each round's fine-tuning (default 80)")
    parser.add_argument("--size", type=int, default=None, help="short side (demo 160, fruits 192)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--train-seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--json", default=None, help="append the rows to this JSON-lines file")
    parser.add_argument("--plot", metavar="PNG", default=None,
                        help="only plot the JSON-lines files given as arguments")
    parser.add_argument("files", nargs="*")
    args = parser.parse_args(argv)
    if args.plot:
        return plot(args.plot, args.files)
    demo = args.dataset == "demo"
    args.init = args.init or (8 if demo else 3)
    args.step = args.step or (8 if demo else 2)
    args.size = args.size or (160 if demo else 192)
    if not demo and not FRUITS.is_dir():
        print(f"needs the shared data at {FRUITS}", file=sys.stderr)
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
