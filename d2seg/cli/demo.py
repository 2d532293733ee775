"""``d2seg demo``: the README's main job on the bundled demo dataset."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="generate the demo data, train, evaluate and draw (runs/demo/)")
    p.add_argument("--out", default="runs/demo", metavar="DIR")
    p.add_argument("--max-iter", type=int, help="shorter training (default: the config's schedule)")
    p.add_argument("--skip", choices=["instance", "panoptic"], action="append", default=[],
                   help="leave out one of the two demos")
    p.set_defaults(run=run)


def run(args) -> int:
    from d2seg.runners.demo import main_summary, run_instance_demo, run_panoptic_demo

    if "instance" not in args.skip:
        print("== Mask R-CNN on demo_instances ==")
        print(main_summary(run_instance_demo(args.out, max_iter=args.max_iter)))
    if "panoptic" not in args.skip:
        print("== Panoptic FPN on demo_panoptic ==")
        print(main_summary(run_panoptic_demo(args.out, max_iter=args.max_iter)))
    return 0
