"""d2seg's Trainer: detectron2's DefaultTrainer, with evaluators and class counts from the data.

Everything data-dependent that detectron2 leaves to the user is decided here from the
registered datasets' metadata, before any work starts: NUM_CLASSES, INPUT.MASK_FORMAT, which
evaluators to run. A config that contradicts the data is a D2SegError, not a crash at iteration N.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import weakref

from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer, hooks
from detectron2.evaluation import (
    DatasetEvaluators,
    verify_results,
)
from detectron2.utils import comm
from detectron2.utils.events import EventStorage

import d2seg.modeling  # noqa: F401  (registers d2seg's backbones with detectron2)
from d2seg.engine.checkpoint import SafeCheckpointer
from d2seg.engine.interrupt import SaveOnInterrupt
from d2seg.engine.rng import capture_rng_states, preserved_rng_states, restore_rng_states
from d2seg.config.prepare import metric_period
from d2seg.engine.hooks import BestCheckpointer, EvalHook, ProgressBar, ValidationLoss
from d2seg.engine.sampler import ResumableTrainLoader
from d2seg.errors import D2SegError
from d2seg.evaluation.evaluator import CocoEvaluator, SemSegReportEvaluator
from d2seg.evaluation.panoptic_evaluator import PanopticEvaluator

logger = logging.getLogger(__name__)

PERIODIC_CHECKPOINT = re.compile(r"model_\d{7}\.pth")  # PeriodicCheckpointer's (and Ctrl-C's) names


class Trainer(DefaultTrainer):
    """DefaultTrainer plus: evaluators picked from the data, best checkpoint, a progress bar,
    crash-safe checkpoints and exact resume (d2seg.engine.checkpoint, d2seg.engine.sampler),
    the loss on the test split (``TEST.VAL_LOSS_PERIOD``), early stopping
    (``D2SEG.EARLY_STOP``), and, with ``D2SEG.ON_DIVERGENCE recover``, recovery from a NaN/Inf
    loss (:meth:`train`)."""

    @classmethod
    def build_train_loader(cls, cfg):
        # detectron2's data, mapper and sampler, but resumable part-way through the stream
        return ResumableTrainLoader.from_config(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        # images read as in training (d2seg.io.images); an unreadable one is one error line
        from d2seg.data.mappers import build_test_loader

        return build_test_loader(cfg, dataset_name)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        # DeepLab's poly schedule (SOLVER.LR_SCHEDULER_NAME WarmupPolyLR); others: detectron2's
        if cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR":
            from detectron2.projects.deeplab import build_lr_scheduler

            return build_lr_scheduler(cfg, optimizer)
        return super().build_lr_scheduler(cfg, optimizer)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        # evaluating during training must not shift the training's random streams
        with preserved_rng_states():
            return super().test(cfg, model, evaluators)

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume=resume)
        loader = self._trainer.data_loader
        if isinstance(loader, ResumableTrainLoader):
            loader.start_at(self.start_iter)

    # detectron2 v0.6's DefaultTrainer leaves its inner trainer out of checkpoints, so the
    # optimizer's momentum (and AMP's grad scaler) restarted from zero on every resume. Later
    # detectron2 saves it under "_trainer"; the same key keeps checkpoints interchangeable.
    def state_dict(self):
        state = super().state_dict()
        state["_trainer"] = self._trainer.state_dict()
        return state

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])

    # -- the training loop, and recovery from a diverged loss -----------------------------------

    def train(self):
        """DefaultTrainer.train, with detectron2's loop (TrainerBase.train) written out so that a
        recovery can take the iteration back.

        detectron2 raises FloatingPointError when the loss is NaN/Inf, or when the RPN's boxes
        are (the weights already are). With ``D2SEG.ON_DIVERGENCE recover`` (one process) such
        a step reloads the newest periodic checkpoint this run saved before the failure (none
        yet: the state training started from), with its optimizer, schedule and random states;
        multiplies the learning rate by ``RECOVER_LR_FACTOR`` (the scheduler's base LRs, so the
        lower rate persists through warm-up, steps and later checkpoints); logs one warning
        line, records it in OUTPUT_DIR/recoveries.json, and trains on from the checkpoint's next
        iteration, with the same data from there. After ``RECOVER_MAX_TIMES`` recoveries the
        next divergence ends training as ``stop`` does.
        """
        self._train_loop(self.start_iter, self.max_iter)
        if len(self.cfg.TEST.EXPECTED_RESULTS) and comm.is_main_process():
            assert hasattr(self, "_last_eval_results"), \
                "No evaluation results obtained during training!"
            verify_results(self.cfg, self._last_eval_results)
            return self._last_eval_results

    def _train_loop(self, start_iter: int, max_iter: int) -> None:
        d2_logger = logging.getLogger("detectron2.engine.train_loop")  # TrainerBase's lines
        d2_logger.info("Starting training from iteration {}".format(start_iter))
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        self.recoveries: list[dict] = []
        self.stop_message: str | None = None
        with EventStorage(start_iter) as self.storage:
            try:
                self.before_train()
                self._prepare_recovery()
                if self.stop_message is not None:
                    self._log_stop()
                while self.iter < max_iter and self.stop_message is None:
                    self.before_step()
                    try:
                        self.run_step()
                    except FloatingPointError as e:
                        self._recover(e)
                        continue
                    self.after_step()
                    if self.stop_message is not None:
                        self._stop_early()
                        break  # self.iter stays the last iteration: no end-of-training eval
                    self.iter += 1
                if start_iter >= max_iter:  # as TrainerBase: iter == max_iter + 1 when none ran
                    self.iter = start_iter + 1
            except Exception:
                d2_logger.exception("Exception during training:")
                raise
            finally:
                self.after_train()

    # -- early stopping ------------------------------------------------------------------------

    def request_stop(self, message: str, final_pass: bool = True) -> None:
        """End training after the current iteration (a hook's request, the same on every
        rank). With ``final_pass``, hooks with ``on_early_stop`` (the validation loss) run it
        now, before the writers of this iteration."""
        self.stop_message = message
        if final_pass:
            for hook in self._hooks:
                action = getattr(hook, "on_early_stop", None)
                if callable(action):
                    action()

    def _stop_early(self) -> None:
        """The end of a run stopped early: model_final.pth of this iteration, one log line."""
        self.checkpointer.save("model_final", iteration=self.iter)  # rank 0 writes
        self._log_stop()

    def _log_stop(self) -> None:
        if comm.is_main_process():
            logger.warning(self.stop_message)

    def _recovery_enabled(self) -> bool:
        return self.cfg.D2SEG.ON_DIVERGENCE == "recover" and comm.get_world_size() == 1

    def _prepare_recovery(self) -> None:
        """Keep (in memory) the state training starts from: the checkpoint of last resort."""
        self._start_state = None
        if self.cfg.D2SEG.ON_DIVERGENCE == "recover" and comm.get_world_size() > 1:
            logger.warning("D2SEG.ON_DIVERGENCE recover works in single-process training only; "
                           "this run of %d processes stops if the loss diverges",
                           comm.get_world_size())
        if not self._recovery_enabled():
            return
        self._start_base_lrs = self._base_lrs()
        self._start_state = {
            "iteration": self.start_iter - 1,
            "model": {k: v.detach().clone() for k, v in self._bare_model().state_dict().items()},
            "trainer": copy.deepcopy(self.state_dict()),
            "rng_states": capture_rng_states(),
        }

    def _base_lrs(self) -> list[float]:
        groups = self._trainer.optimizer.param_groups
        return list(getattr(self.scheduler, "base_lrs", None) or
                    [g.get("initial_lr", g["lr"]) for g in groups])

    def _bare_model(self):
        model = self._trainer.model
        return getattr(model, "module", model)

    def _recover(self, error: FloatingPointError) -> None:
        """Reload the last good state with a lower learning rate, or re-raise ``error``."""
        limit = self.cfg.D2SEG.RECOVER_MAX_TIMES
        if not self._recovery_enabled() or len(self.recoveries) >= limit:
            raise error
        failed_at = self.iter
        base_before = self._base_lrs()  # what the diverged stretch trained with
        source, iteration = self._reload_last_good(failed_at)
        number = len(self.recoveries) + 1
        lr_before = self._trainer.optimizer.param_groups[0]["lr"]  # the reloaded schedule's
        base_after = self._lower_lr(self.cfg.D2SEG.RECOVER_LR_FACTOR ** number)
        self.iter = iteration + 1
        self._restart_data(self.iter)
        what = ("the RPN's boxes or scores" if "Predicted boxes" in str(error) else "the loss")
        factor = self.cfg.D2SEG.RECOVER_LR_FACTOR
        self.recoveries.append({
            "failed_at": failed_at, "error": str(error).splitlines()[0], "reloaded": source,
            "reloaded_iteration": iteration, "continued_at": self.iter, "lr_factor": factor,
            "base_lr_before": base_before, "base_lr_after": base_after, "lr_before": lr_before,
            "lr_after": self._trainer.optimizer.param_groups[0]["lr"]})
        self._write_recoveries()
        logger.warning(
            "training diverged at iteration %d (%s became NaN or infinite); reloaded %s "
            "(iteration %d), LR x%g (base LR %.4g -> %.4g), continuing from iteration %d "
            "(recovery %d of %d)", failed_at, what, source, iteration, factor, base_before[0],
            base_after[0], self.iter, number, limit)
        for hook in self._hooks:
            rewind = getattr(hook, "rewind", None)
            if callable(rewind):
                rewind(self.iter)
            # the failed step had its before_step and no after_step: close detectron2's timer
            timer = getattr(hook, "_total_timer", None) if isinstance(hook, hooks.IterationTimer) else None
            if timer is not None and not timer.is_paused():
                timer.pause()

    def _reload_last_good(self, failed_at: int) -> tuple[str, int]:
        """Load the newest periodic checkpoint saved before ``failed_at`` by this run whose
        file is intact and whose weights are finite; else the state training started from."""
        seen = set()
        for name, iteration in reversed(self.checkpointer.history):
            if name in seen or not PERIODIC_CHECKPOINT.fullmatch(name) or iteration is None \
                    or iteration >= failed_at:
                continue
            seen.add(name)
            path = os.path.join(self.checkpointer.save_dir, name)
            try:
                self.checkpointer.record.verify(path)
                extra = self.checkpointer.load(path)
            except (D2SegError, OSError) as e:
                logger.warning("cannot recover from %s (%s); trying an earlier one", name, e)
                continue
            if not self._weights_finite():
                logger.warning("cannot recover from %s: its weights are not finite; trying an "
                               "earlier one", name)
                continue
            restore_rng_states(extra.pop("rng_states", None))
            return name, int(iteration)
        start = self._start_state
        self._bare_model().load_state_dict(start["model"])
        self.load_state_dict(copy.deepcopy(start["trainer"]))  # the copy keeps `start` pristine
        restore_rng_states(start["rng_states"])
        return "the weights training started from", start["iteration"]

    def _weights_finite(self) -> bool:
        import torch

        return all(bool(torch.isfinite(v).all()) for v in self._bare_model().state_dict().values()
                   if v.is_floating_point())

    def _lower_lr(self, total_factor: float) -> list[float]:
        """Set the base learning rates to those training started with times ``total_factor``
        (the scheduler's base_lrs and each param group's initial_lr, so that warm-up, steps and
        checkpoints keep the lower rate), and the current rates in proportion; return them."""
        scheduler = self.scheduler
        groups = self._trainer.optimizer.param_groups
        before = self._base_lrs()
        after = [b * total_factor for b in self._start_base_lrs]
        for group, old, new in zip(groups, before, after):
            group["lr"] = group["lr"] * new / old if old else new
            group["initial_lr"] = new
        if hasattr(scheduler, "base_lrs"):
            scheduler.base_lrs = list(after)
        if hasattr(scheduler, "_last_lr"):
            scheduler._last_lr = [g["lr"] for g in groups]
        return after

    def _restart_data(self, iteration: int) -> None:
        """The data stream from ``iteration`` on: the batches the failed stretch saw, again."""
        loader = self._trainer.data_loader
        if not isinstance(loader, ResumableTrainLoader):
            return  # a loader of another kind goes on with its stream
        loader.start_at(iteration)
        old = self._trainer._data_loader_iter
        self._trainer._data_loader_iter = iter(loader)
        close = getattr(old, "close", None)
        if callable(close):
            close()
        # detectron2's JSON writer skips iterations it wrote already: write the replay as well
        for hook in self._hooks:
            for writer in getattr(hook, "_writers", ()):
                last = getattr(writer, "_last_write", None)  # JSON, TensorBoard: an iteration
                if isinstance(last, int) and not isinstance(last, bool):
                    writer._last_write = min(last, iteration - 1)

    def _write_recoveries(self) -> None:
        from d2seg.io.files import write_json_atomic

        if comm.is_main_process() and self.cfg.OUTPUT_DIR:
            write_json_atomic(os.path.join(self.cfg.OUTPUT_DIR, "recoveries.json"),
                              self.recoveries, indent=1)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        meta = MetadataCatalog.get(dataset_name)
        kind = meta.get("evaluator_type", "coco")
        out = output_folder or os.path.join(cfg.OUTPUT_DIR, "eval", dataset_name)
        evaluators = []
        if kind == "coco":
            tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
            evaluators.append(CocoEvaluator(dataset_name, tasks=tasks, distributed=True,
                                           output_dir=out))
        elif kind == "sem_seg":
            evaluators.append(SemSegReportEvaluator(dataset_name, distributed=True, output_dir=out))
        elif kind == "coco_panoptic_seg":
            evaluators.append(PanopticEvaluator(dataset_name, out))
            if meta.get("json_file", None):
                evaluators.append(CocoEvaluator(dataset_name, tasks=("bbox", "segm"),
                                               output_dir=out))
        else:
            raise D2SegError(f"no evaluator for evaluator_type {kind!r}", where=dataset_name)
        return DatasetEvaluators(evaluators)

    def build_hooks(self):
        # DefaultTrainer makes a DetectionCheckpointer just before it builds the hooks; swap in
        # d2seg's (safe loading, more weight formats, atomic writes, fallback on resume) so
        # every hook and resume_or_load use it.
        model = self._trainer.model
        self.checkpointer = SafeCheckpointer(getattr(model, "module", model), self.cfg.OUTPUT_DIR,
                                             trainer=weakref.proxy(self))
        result = super().build_hooks()
        cfg = self.cfg
        # detectron2's evaluation, with the last one inside the last step (d2seg.engine.hooks)
        at = next(i for i, h in enumerate(result) if isinstance(h, hooks.EvalHook))
        after = [EvalHook(result[at]._period, result[at]._func)]  # it, then the hooks using it
        if cfg.TEST.VAL_LOSS_PERIOD > 0 and cfg.DATASETS.TEST:
            after.append(ValidationLoss(cfg, cfg.TEST.VAL_LOSS_PERIOD, cfg.DATASETS.TEST[0],
                                        cfg.TEST.VAL_LOSS_MAX_IMAGES))
        if cfg.D2SEG.BEST_METRIC and metric_period(cfg) > 0 and cfg.DATASETS.TEST:
            after.append(BestCheckpointer(
                metric_period(cfg), self.checkpointer, cfg.D2SEG.BEST_METRIC,
                cfg.D2SEG.BEST_MODE, patience=cfg.D2SEG.EARLY_STOP.PATIENCE,
                min_delta=cfg.D2SEG.EARLY_STOP.MIN_DELTA))
        # detectron2 saves the periodic checkpoint before evaluating; d2seg saves it after the
        # evaluation and the hooks acting on it, so that the checkpoint of an evaluated
        # iteration carries their state (best value, early-stopping counters) and --resume
        # continues them exactly
        after += [h for h in result if isinstance(h, hooks.PeriodicCheckpointer)]  # rank 0 only
        others = [not isinstance(h, hooks.PeriodicCheckpointer) for h in result]
        result = ([h for h, keep in zip(result[:at], others) if keep] + after +
                  [h for h, keep in zip(result[at + 1:], others[at + 1:]) if keep])
        if cfg.D2SEG.PROGRESS_BAR:
            result.append(ProgressBar(cfg.SOLVER.MAX_ITER))
        result.append(SaveOnInterrupt(self.checkpointer))  # last: after the step's metrics
        return result
