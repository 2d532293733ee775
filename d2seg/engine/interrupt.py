"""Stop training cleanly on Ctrl-C or SIGTERM: finish the current iteration, save a checkpoint
tagged as last, and stop with :class:`TrainingInterrupted` (the CLI exits with 130).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading

import torch
from detectron2.engine import HookBase
from detectron2.utils import comm

from d2seg.engine.checkpoint import SafeCheckpointer

logger = logging.getLogger(__name__)


def any_process(flag: bool) -> bool:
    """True when ``flag`` is true in any process of the run: one all-reduce of a one-element
    tensor on the default process group (the device NCCL needs, else the CPU), cheap enough to
    run after every iteration, unlike a pickled ``all_gather``. One process: ``flag`` itself."""
    if comm.get_world_size() == 1:
        return bool(flag)
    import torch.distributed as dist

    device = (torch.device("cuda", torch.cuda.current_device())
              if dist.get_backend() == "nccl" else torch.device("cpu"))
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal after saving ``checkpoint`` (the CLI exits with 130)."""

    def __init__(self, iteration: int, checkpoint: str | None):
        self.iteration, self.checkpoint = iteration, checkpoint
        super().__init__(f"interrupted at iteration {iteration}; saved {checkpoint}")


class SaveOnInterrupt(HookBase):
    """On SIGINT/SIGTERM, finish the current iteration, save it, tag it as last, and stop.

    A checkpoint taken between iterations is consistent (an interrupt inside ``optimizer.step``
    would leave half-updated weights), so ``--resume`` continues exactly. A second Ctrl-C stops
    at once; further SIGTERMs (torchrun forwards one after the terminal's SIGINT) are absorbed
    while the checkpoint is written. All processes of a multi-process run stop together.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, checkpointer: SafeCheckpointer):
        self._checkpointer = checkpointer
        self._requested: int | None = None
        self._previous: dict = {}

    def before_train(self):
        if threading.current_thread() is not threading.main_thread():
            return  # Python delivers signals to the main thread only
        for sig in self.SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._on_signal)
        logger.info("Ctrl-C (or SIGTERM) stops training after the current iteration and saves "
                    "a checkpoint to resume from")

    def _on_signal(self, signum, frame):
        first = self._requested is None
        self._requested = signum
        if signum == signal.SIGINT:
            self._restore_handlers(signal.SIGINT)  # a second Ctrl-C acts at once
        if first:
            with contextlib.suppress(OSError, ValueError):  # unbuffered: safe inside a handler
                os.write(2, f"\n{signal.Signals(signum).name} received: saving a checkpoint when "
                            "this iteration ends (Ctrl-C again to quit at once)\n".encode())

    def after_step(self):
        if not any_process(self._requested is not None):
            return
        iteration = self.trainer.iter
        name = f"model_{iteration:07d}"
        if self._checkpointer.last_saved != f"{name}.pth":  # not just saved by the periodic hook
            self._checkpointer.save(name, iteration=iteration)
        comm.synchronize()
        path = os.path.join(self._checkpointer.save_dir, f"{name}.pth")
        logger.warning("training stopped at iteration %d; checkpoint %s; continue with --resume",
                       iteration, path)
        raise TrainingInterrupted(iteration, path)

    def after_train(self):
        self._restore_handlers(*self._previous)

    def _restore_handlers(self, *signals):
        for sig in signals:
            previous = self._previous.pop(sig, None)
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
