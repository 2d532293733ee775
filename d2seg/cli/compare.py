"""``d2seg compare``: several models and classical methods on one dataset, one table."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "compare", help="run models and classical methods on one dataset: table + montage",
        description="Run the methods listed in a comparison YAML (see configs/compare/) on one "
                    "registered dataset; write compare.md / compare.json (metric and time per "
                    "image), montage.png (a row per method) and each method's predictions.")
    p.add_argument("spec", metavar="COMPARISON.yaml", help="dataset and methods to compare")
    p.add_argument("--out", required=True, metavar="DIR", help="where results are written")
    p.add_argument("--images", type=int, metavar="N", help="only the first N images")
    p.add_argument("--dataset", metavar="NAME", help="run on this dataset instead of the spec's")
    p.set_defaults(run=run)


def run(args) -> int:
    from d2seg.runners.compare import compare, load_comparison, markdown_table
    from d2seg.errors import D2SegError

    comparison = load_comparison(args.spec)
    if args.images is not None:
        if args.images < 1:
            raise D2SegError(f"--images must be at least 1, got {args.images}",
                             where="d2seg compare")
        comparison.images = args.images
    if args.dataset:
        comparison.dataset = args.dataset
    rows = compare(comparison, args.out)
    task = "semantic" if "mIoU" in rows[0] else "instance"
    print(markdown_table(rows, task), end="")
    print(f"table, montage and predictions in {args.out}")
    return 0
