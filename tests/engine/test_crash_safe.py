"""Crash-safe training: SIGKILL then ``--resume`` equals an uninterrupted run, bit for bit; a
corrupt newest checkpoint falls back to the previous good one with one line; Ctrl-C saves a
checkpoint; a save that fails half-way leaves the previous checkpoint and tag intact.

References: an uninterrupted run of the same command (torch.equal on every tensor), detectron2's
own train loader, the tensors and random draws taken when a checkpoint was saved, the bytes of
files before a failed save.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tiny_squares import tiny_config, write_squares_dataset

from d2seg.engine.checkpoint import RECORD_FILE, TAG_FILE, SafeCheckpointer
from d2seg.errors import D2SegError
from d2seg.io.files import is_leftover_temporary

# the same command as `d2seg train`, with deterministic kernels and one thread per process
TRAIN = """
import sys, torch
torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)
from d2seg.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


# ------------------------------------------------------------------ a tiny dataset and model

def _config():
    """9 MB checkpoints, fast to fsync; a checkpoint after every iteration."""
    cfg = tiny_config("crashsafe_train")
    cfg.SOLVER.MAX_ITER = 6
    cfg.SOLVER.CHECKPOINT_PERIOD = 1
    return cfg


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("crashsafe")
    write_squares_dataset(root / "data", "crashsafe")
    (root / "config.yaml").write_text(_config().dump())
    env = dict(os.environ, D2SEG_DATASETS=str(root / "data"), PYTHONUNBUFFERED="1")
    return root, env


def _train(setup, out: Path, *opts: str, resume: bool = False) -> subprocess.Popen:
    root, env = setup
    cmd = [sys.executable, "-c", TRAIN, "train", "--config-file", str(root / "config.yaml"),
           "--output", str(out), "--seed", "1", *(["--resume"] if resume else []), *opts]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _finish(proc: subprocess.Popen, code: int = 0) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == code, out[-4000:]
    return out


def _wait_for_tag(proc: subprocess.Popen, folder: Path, name: str) -> None:
    """Poll until the ``last_checkpoint`` tag names ``name``; the run must still be going."""
    tag = folder / TAG_FILE
    while not (tag.exists() and tag.read_text().strip() == name):
        assert proc.poll() is None, f"ended before saving {name}: {proc.stdout.read()[-3000:]}"
        time.sleep(0.01)


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _started_at(log: str) -> int:
    return int(re.search(r"Starting training from iteration (\d+)", log).group(1))


def _temporaries(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if is_leftover_temporary(p.name)]


# ------------------------------------------------------------------ SIGKILL, then --resume

@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(setup, tmp_path):
    # evaluating after every iteration too: evaluation must not shift the training's randomness
    opts = ("DATASETS.TEST", "('crashsafe_train',)", "TEST.EVAL_PERIOD", "1",
            "D2SEG.BEST_METRIC", "")
    reference = _train(setup, tmp_path / "whole", *opts)  # the two runs share the 2 cores
    victim = _train(setup, tmp_path / "killed", *opts)
    _wait_for_tag(victim, tmp_path / "killed", "model_0000002.pth")
    victim.send_signal(signal.SIGKILL)  # wherever it is: mid-step, mid-evaluation or mid-save
    victim.wait()
    assert not (tmp_path / "killed" / "model_final.pth").exists()

    log = _finish(_train(setup, tmp_path / "killed", *opts, resume=True))
    assert _started_at(log) >= 3  # really resumed, from the checkpoint of iteration >= 2
    _finish(reference)
    assert _temporaries(tmp_path / "killed") == []

    whole = _weights(tmp_path / "whole" / "model_final.pth")
    resumed = _weights(tmp_path / "killed" / "model_final.pth")
    assert whole.keys() == resumed.keys()
    different = [k for k in whole if not torch.equal(whole[k], resumed[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


# ------------------------------------------------------------------ Ctrl-C

@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_a_corrupt_one_falls_back(setup, tmp_path):
    out = tmp_path / "run"
    proc = _train(setup, out, "SOLVER.MAX_ITER", "100000", "SOLVER.CHECKPOINT_PERIOD", "2")
    _wait_for_tag(proc, out, "model_0000003.pth")  # periodic checkpoints at 1, 3, 5 ...
    proc.send_signal(signal.SIGINT)
    log = _finish(proc, 130)

    stopped = int(re.search(r"training stopped at iteration (\d+)", log).group(1))
    tagged = (out / TAG_FILE).read_text().strip()
    assert tagged == f"model_{stopped:07d}.pth" and stopped >= 3
    saved = torch.load(out / tagged, map_location="cpu", weights_only=True)
    assert saved["iteration"] == stopped and "optimizer" in saved["trainer"]["_trainer"]

    # truncate the newest checkpoint: --resume names it in one line and takes the one before
    data = (out / tagged).read_bytes()
    (out / tagged).write_bytes(data[: len(data) // 2])
    record = json.loads((out / RECORD_FILE).read_text())["checkpoints"]
    previous = [e for e in record if e["file"] != tagged][-1]
    log = _finish(_train(setup, out, "SOLVER.MAX_ITER", str(previous["iteration"] + 2),
                         "SOLVER.CHECKPOINT_PERIOD", "2", resume=True))
    resuming = log[:log.index("Starting training from iteration")]  # later saves may reuse the name
    lines = [line for line in resuming.splitlines() if tagged in line]
    assert len(lines) == 1 and "truncated" in lines[0], lines
    assert previous["file"] in lines[0]
    assert _started_at(log) == previous["iteration"] + 1


# ------------------------------------------------------------------ fallback, in process

class _Counter(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(4, 3))


def _saved_run(folder: Path, n: int = 3):
    """Checkpoints of iterations 1..n, each with different weights; returns each one's weights
    and the random numbers drawn right after saving it."""
    model = _Counter()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    checkpointer = SafeCheckpointer(model, str(folder), optimizer=optimizer)
    weights, draws = {}, {}
    for it in range(1, n + 1):
        model.w.grad = torch.randn(4, 3)
        optimizer.step()
        checkpointer.save(f"model_{it:07d}", iteration=it)
        weights[it] = model.w.detach().clone()
        draws[it] = (torch.rand(3), np.random.rand(3), random.random())
    return weights, draws


def _resume(folder: Path):
    model = _Counter()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    checkpointer = SafeCheckpointer(model, str(folder), optimizer=optimizer)
    return model, optimizer, checkpointer.resume_or_load("", resume=True)


@pytest.mark.parametrize("damage", ["truncate", "flip a byte"])
def test_corrupt_newest_checkpoint_falls_back_with_one_line(tmp_path, damage, caplog):
    weights, draws = _saved_run(tmp_path)
    newest = tmp_path / "model_0000003.pth"
    data = bytearray(newest.read_bytes())
    if damage == "truncate":
        del data[len(data) // 3:]
    else:
        data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))

    torch.manual_seed(123), np.random.seed(123), random.seed(123)  # resuming must undo these
    with caplog.at_level("WARNING"):
        model, optimizer, extra = _resume(tmp_path)
    assert extra["iteration"] == 2
    assert torch.equal(model.w.detach(), weights[2])
    assert optimizer.state_dict()["state"][0]["momentum_buffer"].abs().sum() > 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and str(newest) in warnings[0], warnings
    assert "model_0000002.pth" in warnings[0]
    # the random streams continue exactly where they were when iteration 2 was saved
    t, n, p = draws[2]
    assert torch.equal(torch.rand(3), t) and np.array_equal(np.random.rand(3), n)
    assert random.random() == p


def test_every_checkpoint_unreadable_is_one_error(tmp_path):
    _saved_run(tmp_path, n=2)
    for name in ("model_0000001.pth", "model_0000002.pth"):
        (tmp_path / name).write_bytes(b"not a checkpoint")
    with pytest.raises(D2SegError, match="no readable checkpoint") as info:
        _resume(tmp_path)
    assert "model_0000001.pth" in str(info.value) and "model_0000002.pth" in str(info.value)


def test_unrecorded_truncated_checkpoint_is_one_error(tmp_path):
    """A folder written by plain detectron2 (no record): the file itself is judged."""
    from detectron2.checkpoint import DetectionCheckpointer

    DetectionCheckpointer(_Counter(), str(tmp_path)).save("model_0000000")
    path = tmp_path / "model_0000000.pth"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(D2SegError, match="truncated or corrupt") as info:
        _resume(tmp_path)
    assert str(path) in str(info.value)


# ------------------------------------------------------------------ atomic save

def _save_that_fails_half_way(error):

    def save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 the first bytes of a checkpoint")
        raise error

    return save


@contextlib.contextmanager
def _file_size_limit(nbytes: int):
    """A real write failure: files cannot grow past ``nbytes`` (EFBIG) while it is active."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills us
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


@pytest.mark.parametrize("failure", ["disk error", "bug", "file size limit"])
def test_failed_save_leaves_previous_checkpoint_and_tag(tmp_path, monkeypatch, failure):
    _saved_run(tmp_path, n=1)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()}
    model = torch.nn.Linear(1000, 1000)  # a 4 MB checkpoint
    checkpointer = SafeCheckpointer(model, str(tmp_path))
    if failure == "disk error":
        monkeypatch.setattr(torch, "save", _save_that_fails_half_way(
            OSError(errno.ENOSPC, "No space left on device")))
        with pytest.raises(D2SegError, match="No space left on device"):
            checkpointer.save("model_0000002", iteration=2)
    elif failure == "bug":
        monkeypatch.setattr(torch, "save", _save_that_fails_half_way(RuntimeError("a bug")))
        with pytest.raises(RuntimeError, match="a bug"):
            checkpointer.save("model_0000002", iteration=2)
    else:  # the real torch.save, stopped by the operating system half-way
        with _file_size_limit(1 << 20), pytest.raises(D2SegError, match="cannot write checkpoint"):
            checkpointer.save("model_0000002", iteration=2)
    monkeypatch.undo()

    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()}
    assert after == before  # no model_0000002.pth, no temporary file, tag and record unchanged
    assert (tmp_path / TAG_FILE).read_text() == "model_0000001.pth"
    assert _resume(tmp_path)[2]["iteration"] == 1


# ------------------------------------------------------------------ the data stream

@pytest.mark.parametrize("grouping", [True, False])
def test_loader_started_at_iteration_k_equals_detectron2_stream(grouping):
    """Batches from iteration k on are the ones detectron2's own loader yields at k, k+1 ...
    (one image orientation: the aspect-ratio grouping then holds nothing back)."""
    from detectron2.data import build_detection_train_loader
    from detectron2.data.samplers import TrainingSampler

    from d2seg.engine.sampler import ResumableTrainLoader

    dicts = [{"id": i, "width": 60, "height": 50} for i in range(7)]
    kwargs = dict(mapper=dict, total_batch_size=2, aspect_ratio_grouping=grouping, num_workers=0)

    def ids(batches):
        return [[d["id"] for d in batch] for batch in batches]

    reference = build_detection_train_loader(dicts, sampler=TrainingSampler(7, seed=5), **kwargs)
    expected = ids(itertools.islice(reference, 4, 9))
    loader = ResumableTrainLoader(dicts, sampler=TrainingSampler(7, seed=5), **kwargs)
    loader.start_at(4)
    assert ids(itertools.islice(loader, 5)) == expected
    assert ids(itertools.islice(loader, 5)) == expected  # each pass starts there again


# ------------------------------------------------------------------ a diverged loss

def test_diverged_training_ends_in_one_line_and_keeps_checkpoints(setup, tmp_path):
    """A learning rate far too high makes the loss NaN: one error line naming the iteration
    and what to change, no traceback on the console (log.txt keeps it), checkpoints kept."""
    out = tmp_path / "diverged"
    log = _finish(_train(setup, out, "SOLVER.BASE_LR", "1e12"), code=2)
    assert "Traceback" not in log
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "training diverged" in errors[0], log[-3000:]
    iteration = int(re.search(r"at iteration (\d+)", errors[0]).group(1))
    assert 0 <= iteration < 6
    assert "Traceback" in (out / "log.txt").read_text()  # the full story stays in the log
    saved = sorted(p.name for p in out.glob("model_*.pth"))
    assert len(saved) == iteration  # CHECKPOINT_PERIOD 1: every finished iteration was saved
