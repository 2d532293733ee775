"""Training hooks d2seg adds to detectron2's: a progress bar with ETA and current losses."""

from __future__ import annotations

import sys

from detectron2.engine import HookBase
from detectron2.utils import comm
from tqdm import tqdm


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
