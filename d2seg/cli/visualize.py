"""``d2seg visualize``: ground truth | predictions side by side, as PNGs.

Sources: COCO files (--images with --gt/--pred, COCO panoptic folders), or a registered
dataset (--dataset NAME) with predictions from a results JSON (--pred) or a model
(--config-file, --weights).
"""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "visualize", help="draw ground truth and/or predictions side by side (PNGs)",
        description="Draw a registered dataset's ground truth (instances, panoptic or semantic) "
                    "beside predictions from a results JSON or a model; or COCO instances files "
                    "and/or a COCO results JSON, and/or COCO panoptic folders.")
    p.add_argument("--out", required=True, metavar="DIR", help="where the PNGs are written")
    p.add_argument("--dataset", metavar="NAME",
                   help="registered dataset (datasets/ manifests, $D2SEG_DATASETS): its images "
                        "and ground truth")
    p.add_argument("--images", metavar="DIR", help="folder with the images (without --dataset)")
    p.add_argument("--gt", metavar="COCO.json", help="COCO instances ground truth")
    p.add_argument("--pred", metavar="RESULTS.json",
                   help="COCO results JSON (RLE masks, boxes); with --dataset also a COCO "
                        "panoptic prediction JSON or sem_seg_predictions.json")
    p.add_argument("--pred-dir", metavar="DIR",
                   help="with --dataset and a panoptic --pred: its PNG folder (default: the JSON "
                        "path without .json)")
    p.add_argument("--config-file", metavar="YAML",
                   help="with --dataset: run this model on the dataset's images")
    p.add_argument("--weights", metavar="FILE", help="trained checkpoint (default MODEL.WEIGHTS)")
    p.add_argument("--batch-size", type=int, default=2, metavar="B",
                   help="images per model call (default 2)")
    p.add_argument("-n", type=int, metavar="N", help="only the first N images (by image id)")
    p.add_argument("--score-thresh", type=float, default=0.5, metavar="S",
                   help="hide predictions scoring below this (default 0.5)")
    p.add_argument("--alpha", type=float, default=0.5, metavar="A",
                   help="mask opacity (default 0.5)")
    p.add_argument("--panoptic-gt-json", metavar="JSON", help="COCO panoptic ground truth JSON")
    p.add_argument("--panoptic-gt-dir", metavar="DIR",
                   help="its PNG folder (default: the JSON path without .json)")
    p.add_argument("--panoptic-pred-json", metavar="JSON", help="COCO panoptic prediction JSON")
    p.add_argument("--panoptic-pred-dir", metavar="DIR",
                   help="its PNG folder (default: the JSON path without .json)")
    p.add_argument("opts", nargs="*", metavar="KEY VALUE",
                   help="config overrides for --config-file, e.g. MODEL.WEIGHTS model_final.pth")
    p.set_defaults(run=run)


def _check_common(args, D2SegError) -> None:
    if args.n is not None and args.n < 1:
        raise D2SegError(f"-n must be at least 1, got {args.n}", where="d2seg visualize")
    if not 0.0 <= args.alpha <= 1.0:
        raise D2SegError(f"--alpha must be in [0, 1], got {args.alpha}", where="d2seg visualize")
    if args.batch_size < 1:
        raise D2SegError(f"--batch-size must be at least 1, got {args.batch_size}",
                         where="d2seg visualize")
    model = args.config_file is not None or args.weights is not None or args.opts
    if model and not args.dataset:
        raise D2SegError("a model is run on a dataset's images", where="d2seg visualize",
                         hint="add --dataset NAME (or run `d2seg predict` on a folder)")
    if (args.weights or args.opts) and not args.config_file:
        raise D2SegError("--weights and KEY VALUE overrides need --config-file",
                         where="d2seg visualize")


def run(args) -> int:
    from d2seg.errors import D2SegError

    _check_common(args, D2SegError)
    if args.dataset:
        files = [f for f, v in (("--images", args.images), ("--gt", args.gt),
                                ("--panoptic-gt-json", args.panoptic_gt_json),
                                ("--panoptic-pred-json", args.panoptic_pred_json)) if v]
        if files:
            raise D2SegError(f"--dataset brings its own images and ground truth; drop {files[0]}",
                             where="d2seg visualize")
        from d2seg.runners.visualize import visualize_dataset

        written = visualize_dataset(args.dataset, args.out, pred=args.pred, pred_dir=args.pred_dir,
                                    config_file=args.config_file, overrides=args.opts,
                                    weights=args.weights, n=args.n, score_thresh=args.score_thresh,
                                    alpha=args.alpha, batch_size=args.batch_size)
        print(f"wrote {len(written)} images to {args.out}")
        return 0

    from d2seg.visualize.files import visualize_coco, visualize_panoptic

    instance = args.gt is not None or args.pred is not None
    panoptic = args.panoptic_gt_json is not None or args.panoptic_pred_json is not None
    if not instance and not panoptic:
        raise D2SegError("nothing to draw", where="d2seg visualize",
                         hint="pass --dataset NAME, or --gt and/or --pred, or --panoptic-gt-json "
                              "and/or --panoptic-pred-json")
    if args.images is None:
        raise D2SegError("--images is needed with COCO files", where="d2seg visualize",
                         hint="pass --images DIR (or --dataset NAME for a registered dataset)")
    if args.pred_dir is not None:
        raise D2SegError("--pred-dir goes with --dataset", where="d2seg visualize",
                         hint="use --panoptic-pred-dir with --panoptic-pred-json")
    written = []
    if instance:
        written += visualize_coco(args.images, args.out, gt=args.gt, pred=args.pred, n=args.n,
                                  score_thresh=args.score_thresh, alpha=args.alpha)
    if panoptic:
        written += visualize_panoptic(args.images, args.out, args.panoptic_gt_json,
                                      args.panoptic_gt_dir, args.panoptic_pred_json,
                                      args.panoptic_pred_dir, n=args.n, alpha=args.alpha)
    print(f"wrote {len(written)} images to {args.out}")
    return 0
