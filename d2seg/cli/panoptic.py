"""``d2seg panoptic combine`` and ``d2seg panoptic pq``: argument parsing and printing only."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("panoptic", help="combine instance + semantic predictions; score PQ")
    commands = p.add_subparsers(dest="panoptic_command", metavar="ACTION", required=True)

    c = commands.add_parser(
        "combine", help="COCO instance results + semantic maps -> COCO panoptic PNGs + JSON")
    c.add_argument("--instances", required=True, metavar="RESULTS.json",
                   help="COCO results with RLE masks (image_id, category_id, score, segmentation)")
    c.add_argument("--semantic", required=True, metavar="DIR",
                   help="one <image stem>.png label map (category ids) or .npy per image")
    c.add_argument("--dataset", required=True, metavar="JSON",
                   help="COCO JSON with the images and the categories (with isthing)")
    c.add_argument("--out", required=True, metavar="DIR",
                   help="writes DIR/panoptic.json and DIR/panoptic/*.png")
    c.add_argument("--score-threshold", type=float, default=0.5,
                   help="instances below this score are dropped (default 0.5)")
    c.add_argument("--overlap-threshold", type=float, default=0.5,
                   help="drop an instance when more than this share of it is taken (default 0.5)")
    c.add_argument("--stuff-area", type=float, default=4096,
                   help="minimum free pixels for a stuff segment (default 4096)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(run=run_combine)

    q = commands.add_parser("pq", help="panoptic quality of COCO panoptic predictions")
    q.add_argument("--gt-json", required=True)
    q.add_argument("--gt-dir", required=True, help="folder of ground truth panoptic PNGs")
    q.add_argument("--pred-json", required=True)
    q.add_argument("--pred-dir", required=True, help="folder of predicted panoptic PNGs")
    q.add_argument("--out", metavar="DIR", help="also write DIR/pq.json and DIR/pq.md")
    q.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(run=run_pq)


def run_combine(args) -> int:
    from d2seg.panoptic.offline import combine_saved_predictions

    data = combine_saved_predictions(
        args.instances, args.semantic, args.dataset, args.out,
        score_threshold=args.score_threshold, overlap_threshold=args.overlap_threshold,
        stuff_area_threshold=args.stuff_area, progress=False if args.quiet else None)
    n_segments = sum(len(a["segments_info"]) for a in data["annotations"])
    print(f"wrote {len(data['annotations'])} panoptic maps ({n_segments} segments) to "
          f"{args.out}/panoptic.json and {args.out}/panoptic/")
    return 0


def run_pq(args) -> int:
    from pathlib import Path

    from d2seg.evaluation.panoptic_quality import (
        format_markdown,
        format_table,
        pq_compute_folders,
    )
    from d2seg.io.files import write_json_atomic, write_text_atomic
    from d2seg.io.json import read_json

    results = pq_compute_folders(args.gt_json, args.gt_dir, args.pred_json, args.pred_dir,
                                 workers=args.workers, progress=False if args.quiet else None)
    categories = read_json(args.gt_json, "ground-truth JSON file")["categories"]
    print(format_table(results, categories))
    if args.out:
        out = Path(args.out)
        write_json_atomic(out / "pq.json", results)
        write_text_atomic(out / "pq.md", format_markdown(results, categories))
        print(f"wrote {out / 'pq.json'} and {out / 'pq.md'}")
    return 0
