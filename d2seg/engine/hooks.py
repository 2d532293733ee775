"""Training hooks d2seg adds to detectron2's: a progress bar with ETA and current losses, the
loss on the test split (:class:`ValidationLoss`), the best checkpoint with early stopping
(:class:`BestCheckpointer`), and detectron2's EvalHook with the last evaluation inside the last
step (:class:`EvalHook`)."""

from __future__ import annotations

import contextlib
import logging
import math
import sys

import torch
from detectron2.engine import HookBase, hooks
from detectron2.utils import comm
from torch import nn
from tqdm import tqdm

from d2seg.config.prepare import LOSS_PREFIX
from d2seg.errors import D2SegError

logger = logging.getLogger(__name__)


class ProgressBar(HookBase):
    """A tqdm bar over iterations showing total loss, its parts and the learning rate.

    Only on the main process and only on a terminal: logs and CI output stay clean.
    """

    def __init__(self, max_iter: int, enabled: bool | None = None):
        self._max_iter = max_iter
        self._enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bar = None

    def before_train(self):
        if self._enabled and comm.is_main_process():
            self._bar = tqdm(total=self._max_iter, initial=self.trainer.start_iter,
                             desc="train", unit="it", dynamic_ncols=True)

    def after_step(self):
        if self._bar is None:
            return
        storage = self.trainer.storage
        latest = storage.latest()
        postfix = {}
        for key in ("total_loss", "loss_cls", "loss_box_reg", "loss_mask", "loss_sem_seg", "lr"):
            if key in latest:
                postfix[key.replace("loss_", "")] = f"{latest[key][0]:.3g}"
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(1)

    def rewind(self, iteration: int) -> None:
        """Training went back to ``iteration`` (a recovery from a diverged loss)."""
        if self._bar is not None:
            self._bar.n = self._bar.last_print_n = iteration
            self._bar.refresh()

    def after_train(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


# -- evaluation at the end, inside the last step -----------------------------------------------

class EvalHook(hooks.EvalHook):
    """detectron2's EvalHook, with the evaluation after the last iteration run in that
    iteration's ``after_step`` instead of ``after_train``.

    The hooks that act on an evaluation (the best checkpoint, early stopping) then see it before
    the final checkpoint is written, so ``model_final.pth`` carries their state. A run with no
    step left (resuming a finished run) still evaluates once in ``after_train``, as detectron2's.
    A run that stops early is evaluated at the iteration it stops at (:meth:`on_early_stop`).
    """

    def before_train(self):
        self._final_done = False
        self._evaluated_at = None

    def after_step(self):
        next_iter = self.trainer.iter + 1
        if next_iter == self.trainer.max_iter or (self._period > 0 and next_iter % self._period == 0):
            self._evaluate()
            self._final_done = next_iter == self.trainer.max_iter

    def on_early_stop(self):
        """Training stops after this iteration: its last evaluation, unless it just had one."""
        if self._evaluated_at != self.trainer.iter:
            self._evaluate()

    def _evaluate(self):
        self._do_eval()
        self._evaluated_at = self.trainer.iter

    def after_train(self):
        if self.trainer.iter + 1 >= self.trainer.max_iter and not self._final_done:
            self._do_eval()
        del self._func  # a closure holding the trainer (detectron2 does the same)


# -- validation loss ------------------------------------------------------------------------



@contextlib.contextmanager
def loss_mode(model):
    """The model in training mode (so that it returns its losses), with BatchNorm (SyncBN too)
    and dropout layers in evaluation mode: running statistics are used, not updated, and
    SyncBN exchanges nothing between processes. Every module's mode is restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.train()
    for m in model.modules():
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)):
            m.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


class _Indexed(torch.utils.data.Dataset):
    """(index in the split, model input) for each ``(index, record)`` pair."""

    def __init__(self, pairs, mapper):
        self.pairs, self.mapper = pairs, mapper

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        index, record = self.pairs[i]
        return index, self.mapper(record)


class ValidationLoss(HookBase):
    """The training losses on a labelled split, every ``period`` iterations and at the end:
    ``val_total_loss`` and ``val_<loss name>`` in the EventStorage (so in metrics.json and
    TensorBoard through detectron2's writers).

    Each image goes through the model alone (batch of 1), in training mode under
    ``torch.no_grad()`` with norm and dropout layers in evaluation mode (:func:`loss_mode`),
    mapped by the training mapper with the test-time resize instead of the training
    augmentations. The model's random sampling (RPN anchors, ROI proposals) is seeded with the
    image's index in the split, and the global random states are restored afterwards: the
    value depends only on the weights and the images, and training's random streams do not
    move. The losses are the mean over the split's first ``max_images`` images (0: all).
    Several processes share the images (rank r takes r, r + world, ...) and the sums are
    gathered, so every rank logs the same value.
    """

    def __init__(self, cfg, period: int, dataset_name: str, max_images: int = 0):
        self._cfg = cfg
        self._period = int(period)
        self._dataset = dataset_name
        self._max_images = int(max_images)
        self._pairs = None
        self.last_iteration: int | None = None
        self.last_losses: dict[str, float] | None = None

    def before_train(self):
        self._load()

    def _load(self):
        from detectron2.data import DatasetCatalog
        from detectron2.data import detection_utils as utils

        from d2seg.data.mappers import D2SegDatasetMapper

        if self._pairs is not None:
            return
        records = DatasetCatalog.get(self._dataset)
        if self._max_images > 0:
            records = records[:self._max_images]
        unlabelled = [r for r in records if "annotations" not in r and "sem_seg_file_name" not in r]
        if not records or unlabelled:
            what = "has no images" if not records else \
                f"has {len(unlabelled)} image(s) without labels (first: {unlabelled[0].get('file_name')})"
            raise D2SegError(f"the validation loss needs labelled images, but {self._dataset} "
                             f"{what}", where="TEST.VAL_LOSS_PERIOD",
                             hint="set DATASETS.TEST to a labelled split, or TEST.VAL_LOSS_PERIOD 0")
        rank, world = comm.get_rank(), comm.get_world_size()
        self._count = len(records)
        self._pairs = [(i, records[i]) for i in range(rank, len(records), world)]
        # training's mapper (annotations kept), evaluation's resize, no random augmentation
        self._mapper = D2SegDatasetMapper(
            self._cfg, is_train=True, recompute_boxes=False,
            augmentations=utils.build_augmentation(self._cfg, is_train=False))

    def after_step(self):
        next_iter = self.trainer.iter + 1
        if next_iter % self._period == 0 or next_iter == self.trainer.max_iter:
            self.run()

    def on_early_stop(self):
        """Training stops after this iteration: the loss of the weights it ends with."""
        if self.last_iteration != self.trainer.iter:
            self.run()

    def run(self) -> dict[str, float]:
        model = self.trainer.model
        losses = self.compute(getattr(model, "module", model))  # not through DDP: no collectives
        self.trainer.storage.put_scalars(
            **{LOSS_PREFIX + k: v for k, v in losses.items()}, smoothing_hint=False)
        self.last_iteration, self.last_losses = self.trainer.iter, losses
        logger.info("validation loss on %s (%d images): %s", self._dataset, self._count,
                    ", ".join(f"{k} {v:.4g}" for k, v in losses.items()))
        return losses

    def compute(self, model) -> dict[str, float]:
        """Mean losses over the split (``total_loss`` first), the same on every rank."""
        from detectron2.data.build import trivial_batch_collator

        from d2seg.engine.rng import preserved_rng_states

        self._load()
        sums: dict[str, float] = {}
        loader = torch.utils.data.DataLoader(
            _Indexed(self._pairs, self._mapper), batch_size=1,
            num_workers=self._cfg.DATALOADER.NUM_WORKERS, collate_fn=trivial_batch_collator)
        amp = self._cfg.SOLVER.AMP.ENABLED and next(model.parameters()).is_cuda
        with preserved_rng_states(), torch.no_grad(), loss_mode(model):
            for [(index, inputs)] in loader:
                torch.manual_seed(index)
                with torch.autocast("cuda", enabled=amp):
                    loss_dict = model([inputs])
                if isinstance(loss_dict, torch.Tensor):
                    loss_dict = {"total_loss": loss_dict}
                else:
                    loss_dict = {"total_loss": sum(loss_dict.values()), **loss_dict}
                for k, v in loss_dict.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
        if comm.get_world_size() > 1:
            gathered = comm.all_gather(sums)
            sums = {}
            for part in gathered:
                for k, v in part.items():
                    sums[k] = sums.get(k, 0.0) + v
        return {k: v / self._count for k, v in sums.items()}


# -- best checkpoint and early stopping -------------------------------------------------------

class BestCheckpointer(hooks.BestCheckpointer):
    """detectron2's BestCheckpointer (``model_best.pth`` when ``metric`` beats the best so far),
    with:

    * its state (best value and iteration, early-stopping counters) in every checkpoint the
      trainer writes (``state_dict``), so ``--resume`` goes on comparing with the same best;
    * the judgement made on rank 0, where the evaluation results are, and sent to every rank,
      so that all ranks agree;
    * the check after the last iteration made in that iteration's ``after_step`` (see
      :class:`EvalHook`), before ``model_final.pth`` is written;
    * early stopping: with ``patience`` > 0, an evaluation counts as an improvement when the
      metric beats by more than ``min_delta`` the value of the last evaluation that counted as
      one (the first finite value always does); after ``patience`` evaluations in a row
      without one, the hook asks the trainer to stop (``trainer.request_stop``). A metric that
      no evaluation produced is then a D2SegError naming D2SEG.BEST_METRIC.
    """

    def __init__(self, period: int, checkpointer, metric: str, mode: str = "max", *,
                 patience: int = 0, min_delta: float = 0.0, file_prefix: str = "model_best"):
        super().__init__(period, checkpointer, metric, mode, file_prefix)
        self._mode = mode
        self._patience = int(patience)
        self._min_delta = float(min_delta)
        self._reference = None  # the value of the last evaluation that counted as an improvement
        self._without_improvement = 0
        self._stopped_at = None
        self._final_done = False

    # the state that travels in checkpoints (plain numbers: torch.load(weights_only=True))
    def state_dict(self):
        return {"best_metric": self.best_metric, "best_iter": self.best_iter,
                "reference": self._reference, "without_improvement": self._without_improvement,
                "stopped_at": self._stopped_at}

    def load_state_dict(self, state):
        self.best_metric = state.get("best_metric")
        self.best_iter = state.get("best_iter")
        self._reference = state.get("reference")
        self._without_improvement = int(state.get("without_improvement", 0))
        self._stopped_at = state.get("stopped_at")

    def before_train(self):
        self._final_done = False
        if self._patience > 0 and self._without_improvement >= self._patience and \
                self.trainer.iter < self.trainer.max_iter:
            # resumed from the checkpoint of a run that stopped early: it stops again
            self.trainer.request_stop(self._stop_message(self._stopped_at), final_pass=False)

    def after_step(self):
        next_iter = self.trainer.iter + 1
        if next_iter == self.trainer.max_iter or (self._period > 0 and next_iter % self._period == 0):
            self._best_checking()
            self._final_done = next_iter == self.trainer.max_iter

    def after_train(self):
        if self.trainer.iter + 1 >= self.trainer.max_iter and not self._final_done:
            self._best_checking(may_stop=False)

    def _best_checking(self, may_stop: bool = True):
        decision = self._judge() if comm.is_main_process() else None
        if comm.get_world_size() > 1:
            decision = comm.all_gather(decision)[0]  # rank 0's, on every rank
        if decision is None:
            return
        if decision["error"]:
            raise D2SegError(decision["error"], where="D2SEG.BEST_METRIC",
                             hint=decision["hint"])
        self.load_state_dict(decision["state"])
        if decision["save"]:  # after the state update: model_best.pth carries this evaluation
            self._checkpointer.save(self._file_prefix, iteration=decision["iteration"])
        if may_stop and decision["stop"]:
            self.trainer.request_stop(self._stop_message(self._stopped_at))

    def _judge(self) -> dict | None:
        """Rank 0: what this evaluation changes (a plain dict, the same for every rank)."""
        storage = self.trainer.storage
        latest = storage.latest().get(self._val_metric)
        if latest is None:
            known = sorted(k for k in storage.latest() if "/" in k or k.startswith(LOSS_PREFIX))
            if self._patience > 0:
                return {"error": f"no evaluation produced the metric {self._val_metric!r} "
                                 "that early stopping follows",
                        "hint": "use one of: " + (", ".join(known) or "(none were produced)")}
            self._logger.warning("D2SEG.BEST_METRIC %s was not computed (known: %s); no best "
                                 "checkpoint is kept for it", self._val_metric,
                                 ", ".join(known) or "none")
            return None
        value, iteration = latest
        if iteration != storage.iter:
            return None  # not produced at this iteration
        value = float(value)
        finite = math.isfinite(value)
        save = finite and (self.best_metric is None or self._compare(value, self.best_metric))
        state = self.state_dict()
        if save:
            state["best_metric"], state["best_iter"] = value, iteration
        improved = finite and (self._reference is None or self._compare(
            value, self._reference + (self._min_delta if self._mode == "max" else -self._min_delta)))
        if improved:
            state["reference"], state["without_improvement"] = value, 0
        else:
            state["without_improvement"] += 1
        stop = (self._patience > 0 and state["without_improvement"] >= self._patience
                and self.trainer.iter + 1 < self.trainer.max_iter)
        if stop:
            state["stopped_at"] = self.trainer.iter
        best = "none" if state["best_metric"] is None else \
            f"{state['best_metric']:.6g} at iteration {state['best_iter']}"
        self._logger.info("%s %s at iteration %d (best %s%s)%s", self._val_metric, f"{value:.6g}",
                          iteration, best,
                          f"; {state['without_improvement']} evaluation(s) without improvement"
                          if self._patience > 0 else "",
                          f"; saved {self._file_prefix}.pth" if save else "")
        return {"error": None, "hint": None, "state": state, "save": save,
                "iteration": iteration, "stop": stop}

    def _stop_message(self, iteration) -> str:
        best = "none was finite" if self.best_metric is None else \
            f"best {self.best_metric:.6g} at iteration {self.best_iter}, kept in {self._file_prefix}.pth"
        return (f"early stopping at iteration {iteration}: D2SEG.BEST_METRIC {self._val_metric} "
                f"has not improved by more than {self._min_delta:g} "
                f"(D2SEG.EARLY_STOP.MIN_DELTA) for {self._without_improvement} evaluations "
                f"(D2SEG.EARLY_STOP.PATIENCE {self._patience}); {best}")
