"""``d2seg label suggest|next``: pre-annotate images with a model; pick what to label next."""

from __future__ import annotations


def _model_args(p) -> None:
    p.add_argument("--config-file", metavar="YAML", help="the model's config (with --weights)")
    p.add_argument("--weights", metavar="FILE", help="trained checkpoint (.pth)")
    p.add_argument("--model", metavar="DIR", help="an export folder from d2seg export "
                   "(instead of --config-file/--weights; runs on onnxruntime, or torchscript "
                   "for a TorchScript export)")
    p.add_argument("--dataset", metavar="NAME", help="registered dataset whose classes the model "
                   "has (default: the config's first training dataset)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY VALUE")


def add_parser(sub) -> None:
    label = sub.add_parser("label", help="pre-annotate images with a model; what to label next")
    lsub = label.add_subparsers(dest="label_command", metavar="ACTION", required=True)

    p = lsub.add_parser("suggest", help="predictions written as a dataset to review "
                        "(COCO polygons; labelme files with --format labelme)")
    p.add_argument("inputs", nargs="+", metavar="IMAGES", help="image files, folders, globs")
    _model_args(p)
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--format", choices=["coco", "labelme"], default="coco",
                   help="coco: instances.json only; labelme: also labelme/<stem>.json per image")
    p.add_argument("--score-thresh", type=float, default=0.5,
                   help="keep detections scored at least this (default 0.5)")
    p.add_argument("--min-area", type=float, default=0.0,
                   help="drop instances whose polygons cover fewer pixels (default 0)")
    p.add_argument("--tolerance", type=float, default=1.0,
                   help="polygon simplification in pixels (cv2.approxPolyDP; 0 = exact mask "
                        "outline; default 1)")
    p.add_argument("--refine", choices=["grabcut"], default=None,
                   help="replace each mask by GrabCut's cut inside its box")
    p.set_defaults(run=run_suggest)

    p = lsub.add_parser("next", help="rank unlabelled images by the model's uncertainty")
    p.add_argument("pool", nargs="+", metavar="POOL", help="folders, image files, globs")
    _model_args(p)
    p.add_argument("-n", type=int, default=50, help="how many to pick (default 50)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--measure", choices=["sum", "max", "mean"], default="sum",
                   help="how detections' score entropies make an image's uncertainty "
                        "(default sum; README, 'What to label next')")
    p.add_argument("--labelled", nargs="*", default=[], metavar="JSON",
                   help="COCO files of images already labelled: left out of the pool")
    p.set_defaults(run=run_next)


def _load(args, score_thresh):
    from d2seg.label.model import load_model

    return load_model(args.config_file, args.weights, args.model, args.dataset, args.opts,
                      score_thresh=score_thresh, command=f"d2seg label {args.label_command}")


def run_suggest(args) -> int:
    from d2seg.label.suggest import suggest

    model = _load(args, args.score_thresh)
    formats = ("coco", "labelme") if args.format == "labelme" else ("coco",)
    s = suggest(model, args.inputs, args.out, score_thresh=args.score_thresh,
                min_area=args.min_area, tolerance=args.tolerance, refine=args.refine,
                formats=formats, batch_size=args.batch_size,
                progress=False if args.quiet else None)
    dropped = s["dropped"]
    left = [f"{dropped['empty']} with an empty mask"] if dropped["empty"] else []
    left += [f"{dropped['small']} below --min-area"] if dropped["small"] else []
    print(f"wrote {s['coco']}: {s['images']} images, {s['annotations']} annotations"
          + (f" (left out: {', '.join(left)})" if left else "")
          + f"; images relative to {s['image_root']}")
    if s["labelme"]:
        print(f"labelme files in {s['labelme']}: review with "
              f"labelme {s['image_root']} --output {s['labelme']}")
    print(f"check: d2seg data check {s['coco']} --images {s['image_root']}")
    return 0


def run_next(args) -> int:
    from d2seg.label.next import rank_pool
    from d2seg.label.uncertainty import MIN_SCORE

    model = _load(args, MIN_SCORE)
    s = rank_pool(model, args.pool, args.out, n=args.n, measure=args.measure,
                  labelled=args.labelled, batch_size=args.batch_size,
                  progress=False if args.quiet else None)
    print(f"ranked {s['pool']} images by uncertainty ({args.measure}); the top {s['chosen']} "
          f"are listed in {s['next']}, all in {s['ranking']}; contact sheet {s['sheet']}")
    for row in s["top"][:5]:
        print(f"  #{row['rank']}  {row['uncertainty']:.3f}  {row['file']}")
    return 0
