"""Random-number states saved in checkpoints and restored on resume.

With :mod:`d2seg.engine.sampler`'s resumable data stream, restoring them makes a resumed run
repeat the uninterrupted run exactly (single process, deterministic algorithms,
``NUM_WORKERS 0``). Only rank 0 writes checkpoints, so in multi-process runs only rank 0's states
are restored; the other ranks keep the seeds ``setup`` gave them.
"""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch


def capture_rng_states() -> dict:
    """Python, NumPy, torch CPU (and CUDA, when in use) RNG states, as tensors and numbers only
    so that ``torch.load(weights_only=True)`` reads them back."""
    version, internal, gauss_next = random.getstate()
    np_state = np.random.get_state(legacy=False)
    states = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "numpy": {"bit_generator": np_state["bit_generator"],
                  "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict | None) -> None:
    """Put back what :func:`capture_rng_states` captured (parts that are absent are left alone)."""
    if not states:
        return
    if "python" in states:
        py = states["python"]
        random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()),
                         py["gauss_next"]))
    if "numpy" in states:
        s = states["numpy"]
        np.random.set_state({"bit_generator": s["bit_generator"],
                             "state": {"key": s["key"].numpy().astype(np.uint32), "pos": s["pos"]},
                             "has_gauss": s["has_gauss"], "gauss": s["gauss"]})
    if "torch" in states:
        torch.set_rng_state(states["torch"])
    cuda = states.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


@contextlib.contextmanager
def preserved_rng_states():
    """Run a block (evaluation during training) without it changing any RNG stream."""
    states = capture_rng_states()
    try:
        yield
    finally:
        restore_rng_states(states)
