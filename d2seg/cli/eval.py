"""``d2seg eval``: COCO AP (12 numbers, per class), PR curves and a confusion matrix; or panoptic
quality (PQ/SQ/RQ for all, things, stuff and per class).

Scores a results JSON against a ground truth (a COCO file or a registered dataset), COCO
panoptic predictions (JSON + PNG folder) against a panoptic ground truth, or runs a checkpoint
on a dataset first (a panoptic dataset gives PQ, an instance dataset AP).
"""

from __future__ import annotations

import os
from pathlib import Path

from d2seg.errors import D2SegError
from d2seg.io.json import read_json


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate COCO results, panoptic predictions or a checkpoint "
                                    "(bbox/segm AP, plots; PQ)")
    src = p.add_argument_group("what to score")
    src.add_argument("--results", metavar="JSON", help="COCO results file (detections)")
    src.add_argument("--config-file", metavar="YAML", help="run this model first (with --weights "
                     "or MODEL.WEIGHTS)")
    src.add_argument("--weights", metavar="FILE", help="checkpoint for --config-file")
    src.add_argument("--panoptic-pred-json", metavar="JSON",
                     help="COCO panoptic predictions (PQ against --panoptic-gt-json or --dataset)")
    src.add_argument("--panoptic-pred-dir", metavar="DIR",
                     help="their PNGs (default: the JSON's path without .json)")
    src.add_argument("--sem-seg-pred-dir", metavar="DIR",
                     help="label PNGs (class ids, named as the ground-truth PNGs) scored against "
                          "a semantic --dataset: mIoU, per-class IoU, confusion, worst images")
    p.add_argument("--gt", metavar="JSON", help="COCO instances ground truth")
    p.add_argument("--panoptic-gt-json", metavar="JSON", help="COCO panoptic ground truth")
    p.add_argument("--panoptic-gt-dir", metavar="DIR",
                   help="its PNGs (default: the JSON's path without .json)")
    p.add_argument("--dataset", metavar="NAME", help="registered dataset (instead of --gt or "
                   "--panoptic-gt-json; with --config-file: the one to run on)")
    p.add_argument("--images", metavar="DIR", help="the images, for drawing the worst images "
                   "(default: the --dataset's image folder)")
    p.add_argument("--iou-types", nargs="+", default=["bbox", "segm"], choices=["bbox", "segm"])
    p.add_argument("--workers", type=int, default=None,
                   help="processes for PQ (default: CPU count, at most 8)")
    p.add_argument("--out", metavar="DIR", default="runs/eval",
                   help="where metrics.json/.md and plots (or pq.json/.md) go")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--analyze", action="store_true",
                   help="also the error breakdown, per-class P/R/F1 and worst images "
                        "(d2seg analyze) into OUT/analysis")
    p.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides with --config-file")
    p.set_defaults(run=run)


def run(args) -> int:
    panoptic_files = args.panoptic_pred_json or args.panoptic_gt_json
    sources = [name for name, given in (("--results", args.results),
                                        ("--config-file", args.config_file),
                                        ("--panoptic-pred-json", panoptic_files),
                                        ("--sem-seg-pred-dir", args.sem_seg_pred_dir)) if given]
    if len(sources) > 1:
        raise D2SegError(f"{' and '.join(sources)} are different ways to evaluate",
                         hint="give one of them")
    if args.opts and not args.config_file:
        raise D2SegError(f"config overrides ({args.opts[0]} ...) need --config-file")
    if panoptic_files:
        return _run_panoptic_files(args)
    if args.sem_seg_pred_dir:
        return _run_semantic_files(args)
    if args.config_file:
        return _run_model(args)
    if not args.results:
        raise D2SegError("nothing to evaluate", hint="give --results JSON, --panoptic-pred-json "
                         "JSON, --sem-seg-pred-dir DIR, or --config-file and --weights")
    return _report_coco(args, args.results, _ground_truth(args))


def _report_coco(args, results: str, gt: str, report: dict | None = None) -> int:
    """Score ``results`` (unless ``report`` holds their scores already) and write the report."""
    import sys
    import warnings

    from d2seg.evaluation import coco

    if report is None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", coco.CocoResultsWarning)
            report = coco.evaluate_coco(gt, results, args.iou_types)
        for w in caught:
            if issubclass(w.category, coco.CocoResultsWarning):
                print(f"warning: {w.message}", file=sys.stderr)
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    written = coco.write_report(report, args.out, gt=gt, results=results, plots=not args.no_plots)
    print(coco.markdown_table(report).split("\n\n")[0])
    if args.analyze:
        from d2seg.analysis import analyze

        images = _image_root(args)
        analyze(gt, results, Path(args.out) / "analysis", images_dir=images,
                iou_types=list(args.iou_types), worst=8 if images else 0,
                plots=not args.no_plots)
        written["analysis"] = str(Path(args.out) / "analysis")
    from d2seg.report import write_report

    written["html"] = str(write_report(args.out))
    print(f"written: {', '.join(sorted(os.path.basename(p) for p in written.values()))} in {args.out}")
    return 0


def _image_root(args) -> str | None:
    """--images, else the dataset's image folder (for the worst-image drawings), when a dataset
    was named."""
    if args.images:
        if not os.path.isdir(args.images):
            raise D2SegError("no such folder", file=args.images, where="--images")
        return args.images
    if not args.dataset:
        return None
    root = _ground_truth_metadata(args.dataset, ()).get("image_root", None)
    return root if root and os.path.isdir(root) else None


def _metadata(name: str):
    from d2seg.data.register import registered_metadata
    from d2seg.data.register import register_datasets

    register_datasets()
    return registered_metadata(name, where="--dataset")


def _ground_truth_metadata(name: str, keys: tuple[str, ...]):
    """The metadata of a dataset whose ground-truth files are scored (no model runs): from the
    torch-free catalog, with the files under ``keys`` made to exist (a demo split generated,
    panoptic-derived labels built) by loading the split; names only detectron2 knows (its
    builtin COCO splits) from detectron2's catalog."""
    from d2seg.data import catalog

    try:
        info = catalog.dataset_info(name, where="--dataset")
    except D2SegError:
        return _metadata(name)  # detectron2's builtins, or its error naming the nearest names
    meta = catalog.CatalogMetadata(info)
    if any(meta.get(k) and not os.path.exists(meta.get(k)) for k in keys):
        info.load()
    return meta


def _ground_truth(args) -> str:
    if args.gt:
        return args.gt
    if not args.dataset:
        raise D2SegError("no ground truth", hint="give --gt COCO.json or --dataset NAME")
    json_file = _ground_truth_metadata(args.dataset, ("json_file",)).get("json_file", None)
    if not json_file:
        raise D2SegError(f"dataset {args.dataset!r} has no COCO instances file", where="--dataset")
    return json_file


def _png_folder(json_path: str, folder: str | None, option: str) -> str:
    """The folder given, else the COCO panoptic convention: the JSON's path without .json."""
    if folder:
        return folder
    default = Path(json_path).with_suffix("")
    if not default.is_dir():
        raise D2SegError(f"no PNG folder {default} beside the JSON", file=json_path,
                         hint=f"give {option} DIR")
    return str(default)


def _run_panoptic_files(args) -> int:
    """PQ of COCO panoptic predictions (JSON + PNGs) against a panoptic ground truth."""
    from d2seg.evaluation.panoptic_quality import pq_compute_folders

    if not args.panoptic_pred_json:
        raise D2SegError("--panoptic-gt-json without predictions", hint="give --panoptic-pred-json")
    if args.panoptic_gt_json and args.dataset:
        raise D2SegError("--panoptic-gt-json and --dataset are two ground truths", hint="give one")
    if args.panoptic_gt_json:
        gt_json = args.panoptic_gt_json
        gt_dir = _png_folder(gt_json, args.panoptic_gt_dir, "--panoptic-gt-dir")
    elif args.dataset:
        meta = _ground_truth_metadata(args.dataset, ("panoptic_json", "panoptic_root"))
        gt_json, gt_dir = meta.get("panoptic_json", None), meta.get("panoptic_root", None)
        if not gt_json or not gt_dir:
            raise D2SegError(f"dataset {args.dataset!r} has no panoptic ground truth",
                             where="--dataset", hint="use a coco_panoptic dataset")
        gt_dir = args.panoptic_gt_dir or gt_dir
    else:
        raise D2SegError("no panoptic ground truth",
                         hint="give --panoptic-gt-json JSON or --dataset NAME")
    pred_dir = _png_folder(args.panoptic_pred_json, args.panoptic_pred_dir, "--panoptic-pred-dir")
    results = pq_compute_folders(gt_json, gt_dir, args.panoptic_pred_json, pred_dir,
                                 workers=args.workers)
    images = _image_root(args)
    pictures = None if images is None or args.no_plots else dict(
        images_dir=images, gt_json=gt_json, gt_dir=gt_dir, pred_json=args.panoptic_pred_json,
        pred_dir=pred_dir)
    _write_pq_report(results, _categories(gt_json), args.out, pictures)
    return 0


def _run_semantic_files(args) -> int:
    """mIoU and the semantic report of a folder of label PNGs against a semantic dataset."""
    from d2seg.evaluation import semantic_report
    from d2seg.report import write_report

    if not args.dataset:
        raise D2SegError("--sem-seg-pred-dir needs the ground truth",
                         hint="give --dataset NAME (a sem_seg dataset)")
    meta = _ground_truth_metadata(args.dataset, ("sem_seg_root", "image_root"))
    if meta.get("evaluator_type", None) != "sem_seg" or not meta.get("sem_seg_root", None):
        raise D2SegError(f"dataset {args.dataset!r} has no semantic labels", where="--dataset",
                         hint="use a sem_seg dataset")
    images = None if args.no_plots else _image_root(args)
    report = semantic_report.evaluate_folders(
        meta.get("sem_seg_root"), args.sem_seg_pred_dir, list(meta.get("stuff_classes")),
        meta.get("ignore_label", 255), images_dir=images,
        class_colors=meta.get("stuff_colors", None))
    written = semantic_report.write_report(report, args.out, plots=not args.no_plots,
                                           source_dir=args.sem_seg_pred_dir)
    written["html"] = str(write_report(args.out))
    print(semantic_report.markdown(report).split("\n\n")[0])
    print(f"written: {', '.join(sorted(os.path.basename(p) for p in written.values()))} "
          f"in {args.out}")
    return 0


def _categories(gt_json: str) -> list:
    from d2seg.io.json import read_json

    return read_json(gt_json, "ground-truth JSON file").get("categories", [])


def _write_pq_report(results: dict, categories: list, out: str, pictures: dict | None) -> None:
    from d2seg.evaluation.panoptic_quality import WORST_PICTURES, write_pq_report
    from d2seg.report import write_report

    markdown = write_pq_report(results, categories, out, pictures)
    write_report(out)
    print(markdown, end="")
    drawn = f", {WORST_PICTURES}/" if pictures else ""
    print(f"written: pq.json, pq.md{drawn}, report.html in {out}")


def _run_model(args) -> int:
    from d2seg.engine import run as engine
    from d2seg.evaluation.panoptic_evaluator import PQ_JSON, PREDICTIONS_DIR, PREDICTIONS_JSON

    overrides = list(args.opts)
    if args.dataset:  # (a config without DATASETS.TRAIN takes its classes from this one)
        overrides += ["DATASETS.TEST", f"('{args.dataset}',)"]
    cfg = engine.setup(args.config_file, overrides, output_dir=args.out)
    if not cfg.DATASETS.TEST:
        raise D2SegError("no dataset to evaluate on", where="DATASETS.TEST",
                         hint="give --dataset NAME")
    dataset = cfg.DATASETS.TEST[0]
    kind = _metadata(dataset).get("evaluator_type", "coco")
    engine.evaluate(cfg, args.weights)
    # under torchrun the evaluation was shared and rank 0 holds every result: it alone reports
    from detectron2.utils import comm

    from d2seg.engine import launch

    main_process = comm.is_main_process()
    launch.shutdown()
    if not main_process:
        return 0
    folder = Path(cfg.OUTPUT_DIR) / "eval" / dataset
    if kind == "coco_panoptic_seg":
        from d2seg.evaluation.panoptic_quality import read_results

        pq = read_results(folder / PQ_JSON)
        meta = _metadata(dataset)
        images = args.images or meta.get("image_root", None)
        pictures = None if args.no_plots or not images or not os.path.isdir(images) else dict(
            images_dir=images, gt_json=meta.panoptic_json, gt_dir=meta.panoptic_root,
            pred_json=str(folder / PREDICTIONS_JSON), pred_dir=str(folder / PREDICTIONS_DIR))
        _write_pq_report(pq, _categories(meta.panoptic_json), args.out, pictures)
        print(f"predictions (COCO panoptic): {folder / PREDICTIONS_JSON} and "
              f"{folder / PREDICTIONS_DIR}/; bbox/segm AP in {Path(cfg.OUTPUT_DIR) / 'eval_results.json'}")
        return 0
    if kind == "sem_seg":
        from d2seg.evaluation import semantic_report
        from d2seg.report import write_report

        report = read_json(folder / semantic_report.REPORT_JSON, "semantic report file")
        written = semantic_report.write_report(report, args.out, plots=not args.no_plots,
                                               source_dir=folder)
        written["html"] = str(write_report(args.out))
        print(semantic_report.markdown(report).split("\n\n")[0])
        print(f"written: {', '.join(sorted(os.path.basename(p) for p in written.values()))}, "
              f"eval_results.json in {args.out}")
        return 0
    args.dataset = dataset
    from d2seg.evaluation.coco import load_report

    # the evaluator scored these results already (d2seg.evaluation.evaluator): report its numbers
    report = load_report(folder)
    if report is not None:
        report = {t: report[t] for t in args.iou_types if t in report} or None
    return _report_coco(args, str(folder / "coco_instances_results.json"), _ground_truth(args),
                        report=report)
