"""Crash-safe checkpoints: atomic writes, a record of the good ones, exact resume, save on Ctrl-C.

A run killed while writing ``model_0004999.pth`` must not leave a half-written file that the
next ``--resume`` chokes on, nor a ``last_checkpoint`` tag naming it. :class:`SafeCheckpointer`
writes every checkpoint (and the tag) to a temporary file in the same folder, flushes and
fsyncs it, then renames it into place. After each write it records the file's size and SHA-256
in ``checkpoints.json``; on resume a file that no longer matches its record, or cannot be read,
is named in one warning line and resume falls back to the newest earlier checkpoint that is good.

Each checkpoint also holds the random-number states (Python, NumPy, torch CPU and CUDA), restored
on resume: with :mod:`d2seg.engine.sampler`'s resumable data stream, a resumed run repeats the
uninterrupted run exactly (single process, deterministic algorithms, ``NUM_WORKERS 0``).
Only rank 0 writes checkpoints, so in multi-process runs only rank 0's states are restored;
the other ranks keep the seeds ``setup`` gave them.

:class:`SaveOnInterrupt` turns Ctrl-C (SIGINT) or SIGTERM during training into: finish the
current iteration, save a checkpoint tagged as last, stop with :class:`TrainingInterrupted`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import signal
import threading

import numpy as np
import torch
from detectron2.engine import HookBase
from detectron2.utils import comm

from d2seg.errors import D2SegError
from d2seg.io.files import atomic_output, is_leftover_temporary
from d2seg.modeling.checkpoint import D2SegCheckpointer

logger = logging.getLogger(__name__)

RECORD_FILE = "checkpoints.json"
TAG_FILE = "last_checkpoint"  # detectron2's name: plain detectron2 can resume from our folders


# -- random-number states --------------------------------------------------------------------

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


# -- atomic files ----------------------------------------------------------------------------

def write_atomically(path: str, write) -> None:
    """Call ``write(binary_file)`` for the new content of ``path``, durably and atomically
    (:func:`d2seg.io.files.atomic_output`): readers see the old file or the complete new one,
    never a part; a full disk is a D2SegError naming the file."""
    sink = None
    try:
        with atomic_output(path, durable=True) as f:
            sink = _Sink(f)
            write(sink)
    except BaseException as e:
        # torch.save turns a failed write into an opaque RuntimeError; report the OSError
        cause = e if isinstance(e, OSError) else getattr(sink, "error", None)
        if cause is not None:
            raise D2SegError(f"cannot write checkpoint ({cause.strerror or cause})", file=path,
                             hint="check free disk space and permissions of OUTPUT_DIR") from e
        raise


class _Sink:
    """A binary file that remembers the first OSError its writes raised."""

    def __init__(self, file):
        self._file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self._file.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self._file.flush()


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# -- the record of good checkpoints ----------------------------------------------------------

class CheckpointRecord:
    """``checkpoints.json``: each checkpoint written completely, with its size and SHA-256,
    oldest first. ``last_good`` names the newest."""

    def __init__(self, folder: str):
        self.path = os.path.join(folder, RECORD_FILE)
        self.folder = folder

    def entries(self) -> list[dict]:
        try:
            with open(self.path) as f:
                data = json.load(f)
            return [e for e in data.get("checkpoints", []) if isinstance(e, dict) and "file" in e]
        except (OSError, ValueError, AttributeError):
            return []  # no record (plain detectron2 folder) or an unreadable one: trust nothing

    def find(self, basename: str) -> dict | None:
        return next((e for e in self.entries() if e["file"] == basename), None)

    def add(self, basename: str, iteration) -> dict:
        """Record a file just written; forget entries whose files are gone."""
        full = os.path.join(self.folder, basename)
        entry = {"file": basename, "iteration": iteration, "bytes": os.path.getsize(full),
                 "sha256": _sha256(full)}
        self._write([e for e in self.entries() if e["file"] != basename] + [entry])
        return entry

    def forget(self, basename: str) -> None:
        """Drop a file about to be overwritten (model_best, model_final), so that a crash
        during the overwrite cannot leave the new file judged by the old file's hash."""
        entries = self.entries()
        if any(e["file"] == basename for e in entries):
            self._write([e for e in entries if e["file"] != basename])

    def _write(self, entries: list[dict]) -> None:
        kept = [e for e in entries if os.path.exists(os.path.join(self.folder, e["file"]))]
        text = json.dumps({"last_good": kept[-1]["file"] if kept else None, "checkpoints": kept},
                          indent=1)
        write_atomically(self.path, lambda f: f.write(text.encode()))

    def verify(self, path: str) -> None:
        """Raise a D2SegError if ``path`` differs from what was recorded when it was written."""
        entry = self.find(os.path.basename(path))
        if entry is None or not os.path.isfile(path):
            return  # not ours to judge; loading it will tell
        size = os.path.getsize(path)
        if size != entry.get("bytes", size):
            raise D2SegError(f"checkpoint is truncated or corrupt: {size} bytes, but "
                             f"{entry['bytes']} were written", file=path)
        if entry.get("sha256") and _sha256(path) != entry["sha256"]:
            raise D2SegError("checkpoint is corrupt: its contents changed after it was written "
                             "(SHA-256 differs from checkpoints.json)", file=path)


# -- the checkpointer ------------------------------------------------------------------------

class SafeCheckpointer(D2SegCheckpointer):
    """D2SegCheckpointer that writes atomically, records good checkpoints, saves RNG states and
    resumes from the newest good checkpoint."""

    def __init__(self, model, save_dir: str = "", **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.record = CheckpointRecord(save_dir)
        self.last_saved: str | None = None  # basename of the last file this object wrote
        # (basename, iteration) of every file this object wrote, oldest first: the checkpoints
        # a recovery from a diverged loss may go back to (d2seg.engine.trainer)
        self.history: list[tuple[str, int | None]] = []

    def _local(self) -> bool:
        return bool(self.save_dir) and "://" not in self.save_dir

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        if not self._local():  # a remote folder (iopath handler): no rename there
            return super().save(name, **kwargs)
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        data.setdefault("rng_states", capture_rng_states())
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", path)
        os.makedirs(self.save_dir, exist_ok=True)
        self.record.forget(basename)
        write_atomically(path, lambda f: torch.save(data, f))
        # tag, then record: killed in between, the tag names a complete file (renamed only
        # once whole) that the record has yet to list, which resume accepts as it is
        self.tag_last_checkpoint(basename)
        self.record.add(basename, kwargs.get("iteration"))
        self.last_saved = basename
        self.history.append((basename, kwargs.get("iteration")))

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not self._local():
            return super().tag_last_checkpoint(last_filename_basename)
        write_atomically(os.path.join(self.save_dir, TAG_FILE),
                         lambda f: f.write(last_filename_basename.encode()))

    def has_checkpoint(self) -> bool:
        if getattr(self, "_received_checkpoint", False):
            return True  # resumed from rank 0's checkpoint, which this machine lacked
        return super().has_checkpoint() or (self._local() and bool(self._resume_candidates()))

    def resume_or_load(self, path: str, *, resume: bool = True) -> dict:
        """Resume from the newest good checkpoint (restoring its RNG states), else load ``path``."""
        if resume and comm.get_world_size() > 1 and self._local():
            return self._resume_distributed(path)
        if not (resume and self.has_checkpoint()):
            return self.load(path, checkpointables=[])
        if not self._local():
            return super().resume_or_load(path, resume=True)
        extra, _ = self._resume_local()
        return extra

    def _resume_local(self) -> tuple[dict, str]:
        """Load the newest good checkpoint of save_dir: (its extra data, its path)."""
        self._remove_stale_temporaries()
        failures = []
        for candidate in self._resume_candidates():
            try:
                self.record.verify(candidate)
                extra = self.load(candidate)
            except D2SegError as e:
                failures.append(e)
                continue
            iteration = (self.record.find(os.path.basename(candidate)) or {}).get("iteration")
            at = f" (iteration {iteration})" if iteration is not None else ""
            for e in failures:
                logger.warning("%s; resumed from %s%s instead", e.one_line(),
                               os.path.basename(candidate), at)
            restore_rng_states(extra.pop("rng_states", None))
            return extra, candidate
        reasons = "; ".join(e.one_line() for e in failures) or "no checkpoint files"
        raise D2SegError(f"no readable checkpoint to resume from ({reasons})", file=self.save_dir,
                         hint="train without --resume to start over, or set MODEL.WEIGHTS to a "
                              "good checkpoint")

    def _resume_distributed(self, path: str) -> dict:
        """Every rank resumes from the checkpoint rank 0 chose. Only rank 0 writes checkpoints,
        so on other machines OUTPUT_DIR may hold none (or an older one): a rank that lacks
        rank 0's file byte for byte receives it over the process group instead of starting
        from iteration 0 and leaving the job out of step."""
        import tempfile

        import torch.distributed as dist

        choice, extra = [None], {}
        if comm.is_main_process():
            if self.has_checkpoint():
                extra, chosen = self._resume_local()
                choice = [(chosen, os.path.getsize(chosen), _sha256(chosen))]
            else:
                extra = self.load(path, checkpointables=[])
        dist.broadcast_object_list(choice, src=0)
        if choice[0] is None:  # nothing to resume from: everyone starts from MODEL.WEIGHTS
            return extra if comm.is_main_process() else self.load(path, checkpointables=[])
        chosen, size, digest = choice[0]
        have = not comm.is_main_process() and os.path.isfile(chosen) and \
            os.path.getsize(chosen) == size and _sha256(chosen) == digest
        need = comm.all_gather(comm.is_main_process() or have)
        payload = [None]
        if not all(need):
            if comm.is_main_process():
                with open(chosen, "rb") as f:
                    payload = [f.read()]
            dist.broadcast_object_list(payload, src=0)
        if comm.is_main_process():
            return extra
        if have:
            extra = self.load(chosen)
        else:
            logger.info("rank %d: %s is not on this machine; received it from rank 0",
                        comm.get_rank(), chosen)
            with tempfile.TemporaryDirectory() as folder:
                local = os.path.join(folder, os.path.basename(chosen))
                with open(local, "wb") as f:
                    f.write(payload[0])
                extra = self.load(local)
        extra.pop("rng_states", None)  # the states are rank 0's; other ranks keep their seeds
        # DefaultTrainer asks has_checkpoint() next to decide where to start: say yes
        self._received_checkpoint = True
        return extra

    def _resume_candidates(self) -> list[str]:
        """The tagged checkpoint, then every recorded one, newest first (each once)."""
        names = []
        tag = os.path.join(self.save_dir, TAG_FILE)
        if os.path.isfile(tag):
            with open(tag) as f:
                tagged = f.read().strip()
            if tagged:
                names.append(tagged)
        for entry in reversed(self.record.entries()):
            name = entry["file"]
            if name not in names and os.path.isfile(os.path.join(self.save_dir, name)):
                names.append(name)
        return [os.path.join(self.save_dir, n) for n in names]

    def _remove_stale_temporaries(self) -> None:
        """Temporary files left by a run killed mid-write: never valid, only taking space."""
        if not comm.is_main_process() or not os.path.isdir(self.save_dir):
            return
        for name in os.listdir(self.save_dir):
            if is_leftover_temporary(name):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.save_dir, name))


# -- Ctrl-C ----------------------------------------------------------------------------------

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
        requested = self._requested is not None
        if comm.get_world_size() > 1:
            requested = any(comm.all_gather(requested))
        if not requested:
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
