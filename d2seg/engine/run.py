"""Set up a run and train or evaluate: what ``d2seg train`` and ``tools/train.py`` call."""

from __future__ import annotations

import logging
import os

from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from d2seg.config import load_config
from d2seg.engine.launch import init_from_env
from d2seg.config.prepare import prepare_config
from d2seg.data.register import register_datasets
from d2seg.engine.trainer import Trainer
from d2seg.errors import D2SegError
from d2seg.io.files import write_json_atomic, write_text_atomic
from d2seg.modeling.checkpoint import D2SegCheckpointer


def setup(config_file=None, overrides=(), output_dir=None, seed=None):
    """A ready config: datasets registered, classes from the data, output folder and logs set up."""
    register_datasets()
    cfg = load_config(config_file, list(overrides))
    cfg.defrost()
    if output_dir:
        cfg.OUTPUT_DIR = str(output_dir)
    if seed is not None:
        cfg.SEED = int(seed)
    cfg = prepare_config(cfg)
    init_from_env(cfg.MODEL.DEVICE)  # under torchrun: join the job (no-op otherwise)
    if comm.is_main_process():  # only rank 0 writes: the other ranks may be on other machines
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        write_text_atomic(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), cfg.dump())
    _setup_logging(cfg)
    if comm.get_world_size() > 1:
        import torch.distributed as dist

        logging.getLogger("d2seg").info("distributed run: %d processes, %s backend",
                                        comm.get_world_size(), dist.get_backend())
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + comm.get_rank())
    _apply_runtime_keys(cfg)
    cfg.freeze()
    return cfg


def _apply_runtime_keys(cfg) -> None:
    """What detectron2's ``default_setup`` does besides logging and seeding, which this setup
    replaces: ``CUDNN_BENCHMARK`` sets cuDNN's autotuner (it was silently ignored), and the
    versions the run used go to the log (one line; detectron2's full ``collect_env_info``
    takes ~10 s here, so ``d2seg doctor`` is where the full report lives)."""
    import platform

    import detectron2
    import torch

    import d2seg

    torch.backends.cudnn.benchmark = bool(cfg.CUDNN_BENCHMARK)
    if comm.is_main_process():
        logging.getLogger("d2seg").info(
            "environment: Python %s, torch %s, detectron2 %s, d2seg %s, CUDA available: %s",
            platform.python_version(), torch.__version__, detectron2.__version__,
            getattr(d2seg, "__version__", "?"), torch.cuda.is_available())


def _setup_logging(cfg) -> None:
    """Full logs go to OUTPUT_DIR/log.txt. On a terminal the progress bar replaces the
    per-iteration console log, so the console then only shows warnings."""
    import sys

    if not comm.is_main_process():
        _setup_worker_logging(comm.get_rank())
        return
    quiet_console = cfg.D2SEG.PROGRESS_BAR and sys.stderr.isatty()
    hide_explained = _HideExplainedFailures()
    # A second run in the same process (the demo trains two models) must replace the first
    # run's handlers, not add to them: detectron2 caches setup_logger per output folder, so a
    # new folder would otherwise print every line twice and keep writing the old log.txt.
    _remove_run_handlers()
    for name in ("detectron2", "d2seg", "fvcore"):
        before = set(logging.getLogger(name).handlers)
        logger = setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name=name,
                              abbrev_name="d2" if name == "detectron2" else name)
        for handler in set(logger.handlers) - before:
            handler._d2seg_run = True
            # detectron2's log.txt handler is a plain StreamHandler too: tell them by stream
            if getattr(handler, "stream", None) in (sys.stdout, sys.stderr):
                handler.setLevel(logging.WARNING if quiet_console else logging.INFO)
                handler.addFilter(hide_explained)


class _HideExplainedFailures(logging.Filter):
    """detectron2 logs "Exception during training:" with the traceback before re-raising.
    For failures d2seg turns into one line (a diverged loss, a D2SegError) the console skips
    that traceback; log.txt still has it, and ``--debug`` prints it."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, (FloatingPointError, D2SegError))


def _remove_run_handlers() -> None:
    """Detach the handlers an earlier setup() installed (tagged _d2seg_run); leave others."""
    for name in ("detectron2", "d2seg", "fvcore"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if getattr(h, "_d2seg_run", False)]:
            logger.removeHandler(handler)
    setup_logger.cache_clear()


def _setup_worker_logging(rank: int) -> None:
    """Ranks other than 0 write no log file (rank 0's log.txt is the run's log) and print only
    warnings and errors, tagged with their rank, so a problem on one process is still seen."""
    import sys

    for name in ("detectron2", "d2seg", "fvcore"):
        logger = setup_logger(None, distributed_rank=rank, name=name)  # no handlers for rank > 0
        if not any(getattr(h, "_d2seg_rank", None) == rank for h in logger.handlers):
            handler = logging.StreamHandler(sys.stderr)
            handler.setLevel(logging.WARNING)
            handler.setFormatter(logging.Formatter(f"[rank {rank}] %(levelname)s %(name)s: %(message)s"))
            handler._d2seg_rank = rank
            logger.addHandler(handler)


def train(cfg, resume: bool = False) -> dict:
    """Train (resuming from OUTPUT_DIR's last checkpoint if asked); return the last evaluation."""
    if not cfg.DATASETS.TRAIN:
        raise D2SegError("no training dataset", where="DATASETS.TRAIN",
                         hint="set DATASETS.TRAIN to a registered dataset, e.g. demo_instances_train")
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=resume)
    try:
        trainer.train()
    except FloatingPointError as e:  # detectron2's check for a NaN/inf loss (or RPN boxes)
        recovered = len(getattr(trainer, "recoveries", ()))
        after = (f" (after {recovered} recover{'y' if recovered == 1 else 'ies'} with a lower "
                 f"learning rate, the most D2SEG.RECOVER_MAX_TIMES allows)") if recovered else ""
        recover = "" if cfg.D2SEG.ON_DIVERGENCE == "recover" else (
            ", or set D2SEG.ON_DIVERGENCE recover to reload the last good checkpoint with a "
            "lower learning rate and go on")
        raise D2SegError(
            f"training diverged: the loss became NaN or infinite at iteration {trainer.iter}{after}",
            where=cfg.OUTPUT_DIR,
            hint="lower SOLVER.BASE_LR, raise SOLVER.WARMUP_ITERS or enable "
                 "SOLVER.CLIP_GRADIENTS (from scratch, use GN or BN norms); the last good "
                 f"checkpoint is kept and --resume continues from it{recover}") from e
    finally:
        _report_skipped(cfg, getattr(trainer._trainer, "data_loader", None))
    results = getattr(trainer, "_last_eval_results", None) or {}
    _write_results(cfg, results)
    if cfg.D2SEG.RUN_REPORT and comm.is_main_process():
        from d2seg.engine.run_report import write_run_report

        write_run_report(cfg)
    return results


def _report_skipped(cfg, loader) -> None:
    """One warning with the count of unreadable images skipped (this process), and their list
    in OUTPUT_DIR/skipped_images.json (skipped_images_rank<N>.json on other ranks)."""
    skipped = getattr(loader, "skipped", None)
    if not skipped:
        return
    logging.getLogger("d2seg").warning(loader.skip_log.summary())
    rank = comm.get_rank()
    name = "skipped_images.json" if rank == 0 else f"skipped_images_rank{rank}.json"
    write_json_atomic(os.path.join(cfg.OUTPUT_DIR, name),
                      [{"file": k, "reason": v} for k, v in skipped.items()], indent=1)


def evaluate(cfg, weights: str | None = None) -> dict:
    """Evaluate a checkpoint (default: MODEL.WEIGHTS) on DATASETS.TEST."""
    model = Trainer.build_model(cfg)
    D2SegCheckpointer(model, save_dir=cfg.OUTPUT_DIR).load(weights or cfg.MODEL.WEIGHTS)
    results = Trainer.test(cfg, model)
    _write_results(cfg, results)
    return results


def _write_results(cfg, results: dict) -> None:
    if not comm.is_main_process() or not results:
        return
    path = os.path.join(cfg.OUTPUT_DIR, "eval_results.json")
    write_json_atomic(path, results, indent=1, default=float)
    logging.getLogger("d2seg").info("evaluation results written to %s", path)
