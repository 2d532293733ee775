"""``d2seg train``: train (or evaluate) a model from a YAML config, detectron2-style overrides."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model from a YAML config (KEY VALUE overrides at the end)")
    p.add_argument("--config-file", required=True, metavar="YAML")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR's last checkpoint")
    p.add_argument("--eval-only", action="store_true", help="only evaluate MODEL.WEIGHTS on DATASETS.TEST")
    p.add_argument("--output", metavar="DIR", help="OUTPUT_DIR (checkpoints, logs, metrics)")
    p.add_argument("--seed", type=int, help="random seed for a reproducible run")
    p.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides, e.g. SOLVER.MAX_ITER 100")
    p.set_defaults(run=run)


def run(args) -> int:
    from d2seg.engine import run as engine

    cfg = engine.setup(args.config_file, args.opts, output_dir=args.output, seed=args.seed)
    if args.eval_only:
        results = engine.evaluate(cfg)
    else:
        results = engine.train(cfg, resume=args.resume)
    for task, metrics in results.items():
        shown = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if "-" not in k)
        print(f"{task}: {shown}")
    print(f"outputs in {cfg.OUTPUT_DIR}")
    return 0
