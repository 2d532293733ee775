"""Crash-safe checkpoints: atomic writes and a record of the good ones.

A run killed while writing ``model_0004999.pth`` must not leave a half-written file that the
next ``--resume`` chokes on, nor a ``last_checkpoint`` tag naming it. :class:`SafeCheckpointer`
writes every checkpoint (and the tag) to a temporary file in the same folder, flushes and
fsyncs it, then renames it into place. After each write it records the file's size and SHA-256
in ``checkpoints.json``; on resume a file that no longer matches its record, or cannot be read,
is named in one warning line and resume falls back to the newest earlier checkpoint that is good.

Each checkpoint also holds the random-number states (:mod:`d2seg.engine.rng`), restored on
resume; :mod:`d2seg.engine.interrupt` saves one on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os

import torch
from detectron2.utils import comm

from d2seg.engine.rng import capture_rng_states, restore_rng_states
from d2seg.errors import D2SegError
from d2seg.io.files import atomic_output, is_leftover_temporary
from d2seg.modeling.checkpoint import D2SegCheckpointer

logger = logging.getLogger(__name__)

RECORD_FILE = "checkpoints.json"
TAG_FILE = "last_checkpoint"  # detectron2's name: plain detectron2 can resume from our folders


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
