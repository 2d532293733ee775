"""``d2seg analyze``: TIDE-style error breakdown, per-class P/R/F1, per-image AP, worst images."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "analyze", help="error analysis of COCO results: TIDE dAP per error type, per-class "
                        "P/R/F1, per-image AP, worst images drawn",
        description="Classify every false positive and false negative (classification, "
                    "localization, both, duplicate, background, missed; TIDE's definitions) "
                    "and write analysis.json/.md, plots and the worst images to --out.")
    p.add_argument("--results", required=True, metavar="JSON", help="COCO results file")
    p.add_argument("--dataset", metavar="NAME", help="registered dataset (its JSON and images)")
    p.add_argument("--gt", metavar="JSON", help="COCO instances ground truth (instead of --dataset)")
    p.add_argument("--images", metavar="DIR", help="image folder for the worst-image drawings "
                   "(default with --dataset: its images)")
    p.add_argument("--out", required=True, metavar="DIR", help="where the analysis goes")
    p.add_argument("--iou-types", nargs="+", choices=["bbox", "segm"],
                   help="default: every type the results have")
    p.add_argument("--score-threshold", type=float, default=0.5, metavar="S",
                   help="P/R/F1 at this score too (the best-F1 threshold is always given)")
    p.add_argument("--worst", type=int, default=8, metavar="N", help="images to draw (0: none)")
    p.add_argument("--draw-threshold", type=float, metavar="S",
                   help="lowest score drawn (default: the best-F1 threshold)")
    p.add_argument("--pos-iou", type=float, default=0.5, help="foreground IoU (TIDE: 0.5)")
    p.add_argument("--bg-iou", type=float, default=0.1, help="background IoU (TIDE: 0.1)")
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(run=run)


def ground_truth(args) -> tuple[str, str | None]:
    """(COCO json, image folder or None) from --gt/--images or --dataset."""
    from d2seg.errors import D2SegError

    if args.gt and args.dataset:
        raise D2SegError("--gt and --dataset are two ground truths", hint="give one")
    if args.gt:
        return args.gt, args.images
    if not args.dataset:
        raise D2SegError("no ground truth", hint="give --dataset NAME or --gt JSON [--images DIR]")
    from d2seg.analysis.dataset import dataset_files

    json_file, image_root = dataset_files(args.dataset)
    return json_file, args.images or image_root


def run(args) -> int:
    from d2seg.analysis import analyze
    from d2seg.analysis.tide import ERROR_TYPES
    from d2seg.errors import D2SegError

    if args.worst < 0:
        raise D2SegError(f"--worst must be 0 or more, got {args.worst}")
    gt, images = ground_truth(args)
    report = analyze(gt, args.results, args.out, images_dir=images, iou_types=args.iou_types,
                     score_threshold=args.score_threshold, worst=args.worst,
                     draw_threshold=args.draw_threshold, pos_iou=args.pos_iou,
                     bg_iou=args.bg_iou, plots=not args.no_plots)
    for t, s in report["iou_types"].items():
        errs = "  ".join(f"{e} {s['dAP'][e]:.2f}" for e in ERROR_TYPES)
        print(f"{t}: AP50 {s['ap50']:.2f}  dAP: {errs}  false_positive "
              f"{s['special_dAP']['false_positive']:.2f}  false_negative "
              f"{s['special_dAP']['false_negative']:.2f}")
    drawn = sum(1 for w in report["worst"] if w.get("png"))
    print("written: analysis.json, analysis.md"
          + (", plots" if not args.no_plots else "") + (f", {drawn} worst images" if drawn else "")
          + f" in {args.out}")
    return 0
