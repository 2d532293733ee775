"""``d2seg eval``: COCO AP (12 numbers, per class), PR curves and a confusion matrix.

Scores a results JSON against a ground truth (a COCO file or a registered dataset), or runs a
checkpoint on a dataset first.
"""

from __future__ import annotations

import os

from d2seg.errors import D2SegError


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate COCO results or a checkpoint (bbox/segm AP, plots)")
    src = p.add_argument_group("what to score")
    src.add_argument("--results", metavar="JSON", help="COCO results file (detections)")
    src.add_argument("--config-file", metavar="YAML", help="run this model first (with --weights)")
    src.add_argument("--weights", metavar="FILE", help="checkpoint for --config-file")
    p.add_argument("--gt", metavar="JSON", help="COCO instances ground truth")
    p.add_argument("--dataset", metavar="NAME", help="registered dataset (instead of --gt)")
    p.add_argument("--iou-types", nargs="+", default=["bbox", "segm"], choices=["bbox", "segm"])
    p.add_argument("--out", metavar="DIR", default="runs/eval", help="where metrics.json/.md and plots go")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides with --config-file")
    p.set_defaults(run=run)


def run(args) -> int:
    from d2seg.evaluation import coco

    if args.config_file:
        results, gt = _run_model(args)
    else:
        if not args.results:
            raise D2SegError("nothing to evaluate", hint="give --results JSON, or --config-file and --weights")
        results, gt = args.results, _ground_truth(args)
    report = coco.evaluate_coco(gt, results, args.iou_types)
    written = coco.write_report(report, args.out, gt=gt, results=results, plots=not args.no_plots)
    print(coco.markdown_table(report).split("\n\n")[0])
    print(f"written: {', '.join(sorted(os.path.basename(p) for p in written.values()))} in {args.out}")
    return 0


def _ground_truth(args) -> str:
    if args.gt:
        return args.gt
    if not args.dataset:
        raise D2SegError("no ground truth", hint="give --gt COCO.json or --dataset NAME")
    from detectron2.data import MetadataCatalog

    from d2seg.engine.run import register_datasets

    register_datasets()
    json_file = MetadataCatalog.get(args.dataset).get("json_file", None)
    if not json_file:
        raise D2SegError(f"dataset {args.dataset!r} has no COCO instances file", where="--dataset")
    return json_file


def _run_model(args):
    from d2seg.engine import run as engine

    overrides = list(args.opts)
    if args.dataset:
        overrides += ["DATASETS.TEST", f"('{args.dataset}',)"]
    cfg = engine.setup(args.config_file, overrides, output_dir=args.out)
    engine.evaluate(cfg, args.weights)
    dataset = cfg.DATASETS.TEST[0]
    results = os.path.join(cfg.OUTPUT_DIR, "eval", dataset, "coco_instances_results.json")
    args.dataset = dataset
    return results, _ground_truth(args)
