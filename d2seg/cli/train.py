"""``d2seg train``: train (or evaluate) a model from a YAML config, detectron2-style overrides.

Several processes: start it under ``torchrun --nproc-per-node N`` (CPU or GPU, one or several
machines), or give ``--num-gpus N`` to spawn N GPU processes as detectron2's tools do.
"""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model from a YAML config (KEY VALUE overrides at the end)")
    p.add_argument("--config-file", required=True, metavar="YAML")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR's last checkpoint")
    p.add_argument("--eval-only", action="store_true", help="only evaluate MODEL.WEIGHTS on DATASETS.TEST")
    p.add_argument("--output", metavar="DIR", help="OUTPUT_DIR (checkpoints, logs, metrics)")
    p.add_argument("--seed", type=int, help="random seed for a reproducible run")
    group = p.add_argument_group(
        "several GPUs, detectron2-style (on CPU, or to control each process, use torchrun instead: "
        "torchrun --nproc-per-node N tools/train.py ...)")
    group.add_argument("--num-gpus", type=int, default=1, metavar="N",
                       help="processes to spawn on this machine, one GPU each (default 1)")
    group.add_argument("--num-machines", type=int, default=1, metavar="M", help="machines in the job")
    group.add_argument("--machine-rank", type=int, default=0, metavar="I",
                       help="this machine's number, 0 .. M-1")
    group.add_argument("--dist-url", default="auto", metavar="URL",
                       help="tcp://HOST:PORT of machine 0 (several machines); 'auto' on one machine")
    p.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides, e.g. SOLVER.MAX_ITER 100")
    p.set_defaults(run=run)


def run(args) -> int:
    if args.num_gpus > 1 or args.num_machines > 1:
        from d2seg.engine import launch

        return launch.spawn(run_job, args, num_gpus=args.num_gpus, num_machines=args.num_machines,
                            machine_rank=args.machine_rank, dist_url=args.dist_url)
    return run_job(args)


def run_job(args) -> int:
    """One process's share of the work (module level: --num-gpus sends it to each process)."""
    from detectron2.utils import comm

    from d2seg.engine import launch
    from d2seg.engine import run as engine

    cfg = engine.setup(args.config_file, args.opts, output_dir=args.output, seed=args.seed)
    if args.eval_only:
        results = engine.evaluate(cfg)
    else:
        launch.check_ready_to_train(cfg)
        results = engine.train(cfg, resume=args.resume)
    main_process = comm.is_main_process()
    launch.shutdown()  # after a failure the process just exits: torchrun stops the others
    if main_process:
        for task, metrics in results.items():
            shown = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if "-" not in k)
            print(f"{task}: {shown}")
        print(f"outputs in {cfg.OUTPUT_DIR}")
    return 0
