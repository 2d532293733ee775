"""``d2seg classical``: GrabCut from boxes, watershed, superpixel voting; the model formats out."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "classical", help="GrabCut, watershed, SLIC/Felzenszwalb superpixels (no training)",
        description="Classical segmentation writing COCO results (RLE masks) or semantic label "
                    "PNGs, which d2seg eval and d2seg visualize read unchanged.")
    methods = p.add_subparsers(dest="method", metavar="METHOD", required=True)

    g = methods.add_parser("grabcut", help="boxes (COCO file or detector results) -> masks")
    g.add_argument("--images", required=True, metavar="DIR", help="folder with the images")
    g.add_argument("--boxes", required=True, metavar="JSON",
                   help="COCO instances file (its boxes) or COCO results (a detector's boxes)")
    g.add_argument("--out", required=True, metavar="RESULTS.json", help="COCO results written")
    g.add_argument("--coco", metavar="JSON", help="COCO file listing the images, when --boxes "
                   "is a results file (default: ids from the numbers ending the file names)")
    g.add_argument("--iters", type=int, default=5, help="GrabCut iterations (default 5)")
    g.add_argument("--margin", type=float, default=0.25,
                   help="context around each box, fraction of its size (default 0.25)")
    g.add_argument("--score-thresh", type=float, default=0.0,
                   help="skip detections scoring below this (default 0)")
    g.add_argument("--all-components", action="store_true",
                   help="keep every piece GrabCut finds (default: the largest only)")
    g.add_argument("--keep-holes", action="store_true", help="do not fill holes in the masks")
    g.set_defaults(run=run_grabcut)

    w = methods.add_parser("watershed", help="touching objects -> instance masks")
    w.add_argument("--images", required=True, metavar="DIR", help="folder with the images")
    w.add_argument("--out", required=True, metavar="RESULTS.json", help="COCO results written")
    w.add_argument("--coco", metavar="JSON", help="COCO file listing the images (default: ids "
                   "from the numbers ending the file names)")
    w.add_argument("--masks", metavar="DIR", help="foreground PNG per image, same name, "
                   "non-zero = object (default: Otsu's threshold)")
    w.add_argument("--polarity", choices=("auto", "bright", "dark"), default="auto",
                   help="objects brighter or darker than the background (default auto)")
    w.add_argument("--sigma", type=float, default=1.0, help="blur before thresholding (1.0)")
    w.add_argument("--background-radius", type=int, default=0, metavar="PX",
                   help="remove uneven lighting with a top-hat of this radius, larger than "
                        "the objects (default 0 = off)")
    w.add_argument("--h", type=float, default=2.0, metavar="PX", dest="h",
                   help="how far a centre must rise above the neck to another (default 2)")
    w.add_argument("--min-area", type=int, default=30, metavar="PX",
                   help="drop instances smaller than this (default 30)")
    w.add_argument("--compactness", type=float, default=0.0, help="compact watershed (0 = off)")
    w.add_argument("--category-id", type=int, default=1, help="category of every instance (1)")
    w.set_defaults(run=run_watershed)

    s = methods.add_parser("superpixels", help="vote label PNGs over SLIC/Felzenszwalb "
                           "superpixels (refine a prediction, spread sparse labels)")
    s.add_argument("--images", required=True, metavar="DIR", help="folder with the images")
    s.add_argument("--labels", required=True, metavar="DIR",
                   help="uint8 label PNGs named like the images (prediction or sparse labels)")
    s.add_argument("--out", required=True, metavar="DIR", help="folder of voted label PNGs")
    s.add_argument("--method", choices=("slic", "felzenszwalb"), default="slic")
    s.add_argument("--ignore", type=int, default=255, help="label that does not vote (255)")
    s.add_argument("--segment-size", type=int, default=10, metavar="PX",
                   help="SLIC: side of a superpixel in pixels (default 10)")
    s.add_argument("--n-segments", type=int, metavar="N", help="SLIC: number of superpixels "
                   "(overrides --segment-size)")
    s.add_argument("--compactness", type=float, default=10.0, help="SLIC: shape vs colour (10)")
    s.add_argument("--sigma", type=float, help="blur first (SLIC 1.0, Felzenszwalb 0.8)")
    s.add_argument("--scale", type=float, default=100.0, help="Felzenszwalb: segment size (100)")
    s.add_argument("--min-size", type=int, default=20, help="Felzenszwalb: min pixels (20)")
    s.set_defaults(run=run_superpixels)


def _check_positive(name: str, value, minimum=0) -> None:
    from d2seg.errors import D2SegError

    if value is not None and value <= minimum:
        raise D2SegError(f"{name} must be > {minimum}, got {value}", where="d2seg classical")


def run_grabcut(args) -> int:
    from d2seg.classical import grabcut_coco
    from d2seg.io.files import write_json_atomic

    _check_positive("--iters", args.iters)
    _check_positive("--margin", args.margin, -1e-12)
    results = grabcut_coco(args.boxes, args.images, images=args.coco, iters=args.iters,
                           margin=args.margin, score_thresh=args.score_thresh,
                           largest_component=not args.all_components,
                           fill_holes=not args.keep_holes)
    write_json_atomic(args.out, results)
    print(f"wrote {len(results)} masks to {args.out}")
    return 0


def run_watershed(args) -> int:
    from d2seg.classical import watershed_folder
    from d2seg.io.files import write_json_atomic

    _check_positive("--h", args.h)
    results = watershed_folder(args.images, coco=args.coco, masks_dir=args.masks,
                               category_id=args.category_id, polarity=args.polarity,
                               sigma=args.sigma, background_radius=args.background_radius,
                               h=args.h, min_area=args.min_area, compactness=args.compactness)
    write_json_atomic(args.out, results)
    print(f"wrote {len(results)} instances to {args.out}")
    return 0


def run_superpixels(args) -> int:
    from d2seg.classical import refine_folder

    _check_positive("--segment-size", args.segment_size)
    _check_positive("--n-segments", args.n_segments)
    params = {"sigma": args.sigma}
    if args.method == "slic":
        params.update(n_segments=args.n_segments, segment_size=args.segment_size,
                      compactness=args.compactness)
    else:
        params.update(scale=args.scale, min_size=args.min_size)
    written = refine_folder(args.images, args.labels, args.out, args.method,
                            ignore=args.ignore, **params)
    print(f"wrote {len(written)} label PNGs to {args.out}")
    return 0
