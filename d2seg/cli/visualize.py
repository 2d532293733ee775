"""``d2seg visualize``: ground truth | predictions side by side, as PNGs, for COCO files."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "visualize", help="draw ground truth and/or predictions side by side (PNGs)",
        description="Draw COCO instance ground truth and/or a COCO results JSON, and/or COCO "
                    "panoptic folders, with masks, contours, class names and scores.")
    p.add_argument("--images", required=True, metavar="DIR", help="folder with the images")
    p.add_argument("--out", required=True, metavar="DIR", help="where the PNGs are written")
    p.add_argument("--gt", metavar="COCO.json", help="COCO instances ground truth")
    p.add_argument("--pred", metavar="RESULTS.json", help="COCO results JSON (RLE masks, boxes)")
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
    p.set_defaults(run=run)


def run(args) -> int:
    from d2seg.errors import D2SegError
    from d2seg.visualize.files import visualize_coco, visualize_panoptic

    instance = args.gt is not None or args.pred is not None
    panoptic = args.panoptic_gt_json is not None or args.panoptic_pred_json is not None
    if not instance and not panoptic:
        raise D2SegError("nothing to draw", where="d2seg visualize",
                         hint="pass --gt and/or --pred, or --panoptic-gt-json and/or "
                              "--panoptic-pred-json")
    if args.n is not None and args.n < 1:
        raise D2SegError(f"-n must be at least 1, got {args.n}", where="d2seg visualize")
    if not 0.0 <= args.alpha <= 1.0:
        raise D2SegError(f"--alpha must be in [0, 1], got {args.alpha}", where="d2seg visualize")
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
