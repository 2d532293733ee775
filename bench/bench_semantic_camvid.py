"""Benchmark: d2seg's semantic segmentation configs on real road scenes (CamVid), same budget each.

A CamVid folder (``val/`` images, ``valannot/`` labels 0..10, 11 = void) is split by sequence
when it holds several (frame names start with the sequence: 0001TP, 0006R0, 0016E5, Seq05VD):
the held-out sequence (``--heldout-sequence``, default the last) is never seen in training, as
in CamVid's own train/test split. ``../shared/data/camvid_val`` holds 101 consecutive frames of
one sequence (0016E5) only: there the frames are split in time (the first ``--train-frames``
train, the last ``--heldout-frames`` are held out, the frames between dropped so near-duplicate
neighbours cannot leak), and the figures are within-sequence, i.e. optimistic for new streets;
the results JSON and the printout say which split was used. Both parts are registered through
d2seg's manifest machinery (a manifest over folders of symlinks).

The benchmark's settings (input size, batch, iterations) are those of
``configs/semantic/deeplabv3plus_MNV2_camvid.yaml``, a config a user can train with.

Each config in ``configs/semantic`` is trained with the same number of iterations, batch size
and input size (the config's own model, LR and schedule), then evaluated on the held-out frames
by the trainer's SemSegEvaluator. Reported: mIoU and pixel accuracy (%), seconds per training
iteration, and optionally (``--refine``) mIoU after voting each prediction over SLIC superpixels
(d2seg.classical.refine_semantic). ``--suites camvid,demo`` also trains on demo_semseg_train
and evaluates on demo_semseg_val (the configs' own input sizes), with the same budget.

    python bench/bench_semantic_camvid.py [--iters 300] [--batch 4] [--size 180] \\
        [--models fcn_MNV2_cpu_quick,unet_scratch] [--refine] [--suites camvid,demo]

Times come from whatever machine runs it (often shared): read s/iter as orders of magnitude.
torch runs one thread by default (``--threads``): on 2 cores shared with other jobs, two
spin-waiting threads per process made each step several times slower.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CAMVID = REPO.parent / "shared" / "data" / "camvid_val"
CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
           "Pedestrian", "Bicyclist"]
COLORS = [[128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222],
          [128, 128, 0], [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0], [0, 128, 192]]
VOID = 11
DEFAULT_MODELS = ["semantic_fpn_MNV2_cpu_quick", "deeplabv3plus_MNV2_cpu_quick",
                  "fcn_MNV2_cpu_quick", "unet_MNV2_cpu_quick", "unet_scratch",
                  "semantic_fpn_R18_GN_scratch", "fcn_R18_GN_scratch"]


SETTINGS = REPO / "configs" / "semantic" / "deeplabv3plus_MNV2_camvid.yaml"


def sequence_of(frame: str) -> str:
    """CamVid frame names are ``<sequence>_<frame number>.png``."""
    return frame.split("_", 1)[0]


def split_frames(frames: list[str], train_frames: int, heldout_frames: int,
                 heldout_sequence: str | None = None) -> tuple[dict, str]:
    """``({"train": [...], "heldout": [...]}, description)``: a whole sequence held out when
    there are several, else a split in time with the frames between the parts dropped."""
    frames = sorted(frames)
    sequences = sorted({sequence_of(f) for f in frames})
    if len(sequences) > 1 or heldout_sequence is not None:
        held = heldout_sequence or sequences[-1]
        if held not in sequences:
            raise SystemExit(f"no sequence {held!r} among {sequences}")
        parts = {"train": [f for f in frames if sequence_of(f) != held],
                 "heldout": [f for f in frames if sequence_of(f) == held]}
        if not parts["train"]:
            raise SystemExit(f"holding out {held} leaves nothing to train on")
        return parts, f"by sequence: held out {held}, trained on {', '.join(s for s in sequences if s != held)}"
    if train_frames + heldout_frames > len(frames):
        raise SystemExit(f"{len(frames)} frames: cannot take {train_frames} + {heldout_frames}")
    parts = {"train": frames[:train_frames], "heldout": frames[len(frames) - heldout_frames:]}
    gap = len(frames) - train_frames - heldout_frames
    return parts, (f"in time within the one sequence {sequences[0]}: first {train_frames} frames "
                   f"train, last {heldout_frames} held out, {gap} between dropped (within-sequence"
                   ": optimistic for other streets)")


def register_camvid(work: Path, camvid: Path, train_frames: int, heldout_frames: int,
                    heldout_sequence: str | None = None) -> tuple[str, str, str]:
    """Split the frames (:func:`split_frames`) into two folders of symlinks and register them as
    a manifest; returns the two dataset names and the split's description."""
    from d2seg.data import manifest as mf
    from d2seg.data import register

    frames = sorted(p.name for p in (camvid / "val").glob("*.png"))
    parts, description = split_frames(frames, train_frames, heldout_frames, heldout_sequence)
    root = work / "camvid_split"
    for split, names in parts.items():
        for kind, source in (("images", camvid / "val"), ("labels", camvid / "valannot")):
            folder = root / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for old in folder.iterdir():
                old.unlink()
            for name in names:
                (folder / name).symlink_to(source / name)
    manifest = root / "camvid_bench.yaml"
    manifest.write_text(
        "name: camvid_bench\nkind: sem_seg\nsplits:\n"
        + "".join(f"  {s}:\n    images: {s}/images\n    sem_seg_root: {s}/labels\n" for s in parts)
        + f"classes: {json.dumps(CLASSES)}\ncolors: {json.dumps(COLORS)}\nignore_label: {VOID}\n")
    names = register.register_manifest(mf.load_manifest(manifest))
    return names[0], names[1], description


class _Recorder:
    """A DatasetEvaluator that keeps each prediction (argmax) by image file."""

    def __init__(self):
        self.predictions = {}

    def reset(self):
        self.predictions = {}

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            self.predictions[inp["file_name"]] = out["sem_seg"].argmax(0).cpu().numpy()

    def evaluate(self):
        return {}


def _scores(predictions: dict, dataset: str, ignore: int, refine: bool) -> dict:
    """mIoU / pixel accuracy (%) recomputed from the kept predictions, and after SLIC voting."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from PIL import Image

    from d2seg.evaluation.semantic_metrics import SemanticConfusion

    n = len(MetadataCatalog.get(dataset).stuff_classes)
    plain, voted = SemanticConfusion(n, ignore), SemanticConfusion(n, ignore)
    for record in DatasetCatalog.get(dataset):
        gt = np.array(Image.open(record["sem_seg_file_name"]), dtype=np.int64)
        pred = predictions[record["file_name"]]
        plain.update(gt, pred)
        if refine:
            from d2seg.classical.superpixels import refine_semantic

            image = np.array(Image.open(record["file_name"]).convert("RGB"))
            voted.update(gt, refine_semantic(image, pred.astype(np.int64), "slic", ignore=None))
    out = {"mIoU_recomputed": 100 * plain.metrics()["mIoU"]}
    if refine:
        out["mIoU_slic"] = 100 * voted.metrics()["mIoU"]
    return out


def run_one(config: str, train: str, test: str, args, out_dir: Path, ignore: int,
            resize: bool = True, refine: bool = False) -> dict:
    from detectron2.engine import HookBase
    from detectron2.evaluation import DatasetEvaluators

    from d2seg.engine.run import setup
    from d2seg.engine.trainer import Trainer

    recorder = _Recorder()

    class BenchTrainer(Trainer):
        """d2seg's Trainer; its end-of-training evaluation also keeps the predictions."""

        @classmethod
        def build_evaluator(cls, cfg, dataset_name, output_folder=None):
            return DatasetEvaluators([Trainer.build_evaluator(cfg, dataset_name, output_folder),
                                      recorder])

    class Clock(HookBase):
        """Times the training iterations alone (the evaluation runs in after_train)."""

        def before_train(self):
            self.start = time.perf_counter()

        def after_step(self):
            self.end = time.perf_counter()

    size = args.size
    overrides = [
        "DATASETS.TRAIN", f"('{train}',)", "DATASETS.TEST", f"('{test}',)",
        "MODEL.SEM_SEG_HEAD.IGNORE_VALUE", str(ignore),
        "SOLVER.MAX_ITER", str(args.iters), "SOLVER.IMS_PER_BATCH", str(args.batch),
        "SOLVER.WARMUP_ITERS", str(min(20, args.iters // 10)),
        "SOLVER.CHECKPOINT_PERIOD", str(10 * args.iters), "TEST.EVAL_PERIOD", "0",
        "D2SEG.PROGRESS_BAR", "False", "DATALOADER.NUM_WORKERS", str(args.workers),
        "SEED", str(args.seed), "MODEL.DEVICE", args.device,
    ]
    if resize:  # else the config's own sizes (the demo's)
        overrides += ["INPUT.MIN_SIZE_TRAIN", str((int(size * 0.875), size, int(size * 1.125))),
                      "INPUT.MAX_SIZE_TRAIN", str(3 * size), "INPUT.MIN_SIZE_TEST", str(size),
                      "INPUT.MAX_SIZE_TEST", str(3 * size)]
    cfg = setup(REPO / "configs" / "semantic" / f"{config}.yaml", overrides, output_dir=out_dir)
    trainer = BenchTrainer(cfg)
    clock = Clock()
    trainer.register_hooks([clock])
    trainer.resume_or_load(resume=False)
    trainer.train()  # evaluates DATASETS.TEST once, after the last iteration
    sem = trainer._last_eval_results["sem_seg"]
    train_s = clock.end - clock.start
    row = {"model": config, "iters": args.iters, "batch": args.batch,
           "size": size if resize else "config", "mIoU": sem["mIoU"], "pACC": sem["pACC"],
           "s_per_iter": train_s / args.iters, "train_min": train_s / 60,
           "params_M": sum(p.numel() for p in trainer.model.parameters()) / 1e6}
    row.update(_scores(recorder.predictions, test, ignore, refine))
    row["per_class_IoU"] = {k[4:]: v for k, v in sem.items() if k.startswith("IoU-")}
    return row


def _table(rows: list[dict], refine: bool) -> str:
    head = "| model | params (M) | iterations | mIoU | pixel acc | s / iter |" + (
        " mIoU + SLIC vote |" if refine else "")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        line = (f"| {r['model']} | {r['params_M']:.1f} | {r['iters']} | {r['mIoU']:.1f} | "
                f"{r['pACC']:.1f} | {r['s_per_iter']:.2f} |")
        if refine:
            line += f" {r['mIoU_slic']:.1f} |"
        lines.append(line)
    return "\n".join(lines)


def _settings() -> dict:
    """Input size, batch and iterations of the benchmark: those of its runnable config."""
    from d2seg.config import load_config

    cfg = load_config(SETTINGS)
    return {"size": int(cfg.INPUT.MIN_SIZE_TEST), "batch": int(cfg.SOLVER.IMS_PER_BATCH),
            "iters": int(cfg.SOLVER.MAX_ITER)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(DEFAULT_MODELS),
                   help="comma-separated config names from configs/semantic")
    settings = _settings()
    p.add_argument("--iters", type=int, default=settings["iters"])
    p.add_argument("--batch", type=int, default=settings["batch"])
    p.add_argument("--size", type=int, default=settings["size"],
                   help="short side of the inputs (CamVid: 360)")
    p.add_argument("--train-frames", type=int, default=70)
    p.add_argument("--heldout-frames", type=int, default=26)
    p.add_argument("--heldout-sequence", default=None,
                   help="the sequence to hold out (default: the last, when there are several)")
    p.add_argument("--camvid", type=Path, default=CAMVID)
    p.add_argument("--work", type=Path, default=Path("/tmp/d2seg_bench_semantic"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 is fastest on a machine shared with other jobs)")
    p.add_argument("--refine", action="store_true", help="also score SLIC-voted predictions")
    p.add_argument("--suites", default="camvid",
                   help="comma-separated: camvid (held-out frames), demo (demo_semseg_val)")
    args = p.parse_args(argv)
    wanted = [s.strip() for s in args.suites.split(",") if s.strip()]
    if "camvid" in wanted and not args.camvid.is_dir():
        raise SystemExit(f"CamVid not found at {args.camvid} (see ../shared/README.md)")

    import torch

    from d2seg.data.register import register_datasets

    torch.set_num_threads(args.threads)
    register_datasets()
    args.work.mkdir(parents=True, exist_ok=True)
    suites = []
    if "camvid" in wanted:
        train, test, split = register_camvid(args.work, args.camvid, args.train_frames,
                                             args.heldout_frames, args.heldout_sequence)
        print(f"CamVid split {split}", flush=True)
        suites.append(("camvid", train, test, VOID))
    if "demo" in wanted:
        suites.append(("demo", "demo_semseg_train", "demo_semseg_val", 255))
    report = {}
    for suite, tr, te, ignore in suites:
        rows = []
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            row = run_one(model, tr, te, args, args.work / suite / model, ignore,
                          resize=suite == "camvid", refine=args.refine and suite == "camvid")
            if suite == "camvid":
                row["split"] = split
            rows.append(row)
            print(f"[{suite}] {model}: mIoU {row['mIoU']:.1f} (recomputed {row['mIoU_recomputed']:.1f}), "
                  f"pixel acc {row['pACC']:.1f}, {row['s_per_iter']:.2f} s/iter", flush=True)
            (args.work / f"results_{suite}.json").write_text(json.dumps(rows, indent=1, default=float))
        report[suite] = rows
    for suite, rows in report.items():
        print(f"\n{suite}: {args.iters} iterations, batch {args.batch}, short side {args.size}"
              if suite == "camvid" else f"\n{suite}: {args.iters} iterations, batch {args.batch}, "
              "config input sizes")
        print(_table(rows, args.refine and suite == "camvid"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
