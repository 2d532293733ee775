"""``d2seg demo``: the README's main job on the bundled demo dataset."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="generate the demo data, train, evaluate and draw (runs/demo/)")
    p.add_argument("--out", default="runs/demo", metavar="DIR")
    p.add_argument("--max-iter", type=int, help="shorter training (default: the config's schedule)")
    p.set_defaults(run=run)


def run(args) -> int:
    from d2seg.demo import main_summary, run_instance_demo

    print(main_summary(run_instance_demo(args.out, max_iter=args.max_iter)))
    return 0
