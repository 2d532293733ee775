"""Training and evaluation loops: detectron2's DefaultTrainer with d2seg's data-driven choices."""

from d2seg.engine.trainer import Trainer, prepare_config

__all__ = ["Trainer", "prepare_config"]
