"""``D2SEG.ON_DIVERGENCE recover``: a loss that becomes NaN/Inf reloads the last good periodic
checkpoint with a lower learning rate, says so in one line and trains on, a bounded number of
times; ``stop`` (the default) ends the same run in one error line.

The run diverges on purpose, from its config alone: SOLVER.STEPS (4,) with GAMMA 1e12 multiplies
the learning rate by 1e12 from iteration 4 on, just after the checkpoint of iteration 3
(CHECKPOINT_PERIOD 4). References: the checkpoint files and checkpoints.json the run wrote, the
learning rate detectron2's scheduler wrote to metrics.json, the tensors of model_final.pth.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_squares import tiny_config, write_squares_dataset

pytestmark = pytest.mark.slow

TRAIN = """
import sys, torch
torch.set_num_threads(1)
from d2seg.cli.main import main
sys.exit(main(sys.argv[1:]))
"""

BASE_LR, GAMMA, STEP, PERIOD, MAX_ITER = 0.01, 1e12, 4, 4, 8


def _config():
    """The tiny Mask R-CNN whose learning rate jumps x1e12 at STEP."""
    cfg = tiny_config("diverge_train")
    cfg.SOLVER.BASE_LR = BASE_LR
    cfg.SOLVER.WARMUP_ITERS = 0
    cfg.SOLVER.STEPS = (STEP,)
    cfg.SOLVER.GAMMA = GAMMA
    cfg.SOLVER.MAX_ITER = MAX_ITER
    cfg.SOLVER.CHECKPOINT_PERIOD = PERIOD
    cfg.D2SEG.PROGRESS_BAR = False
    return cfg


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("diverge")
    write_squares_dataset(root / "data", "diverge")
    (root / "config.yaml").write_text(_config().dump())
    env = dict(os.environ, D2SEG_DATASETS=str(root / "data"), PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS="1")
    return root, env


def _train(setup, out: Path, *opts: str, code: int = 0) -> str:
    root, env = setup
    cmd = [sys.executable, "-c", TRAIN, "train", "--config-file", str(root / "config.yaml"),
           "--output", str(out), "--seed", "1", *opts]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=300)
    assert proc.returncode == code, proc.stdout[-4000:]
    return proc.stdout


def _warnings(log: str) -> list[str]:
    return [line for line in log.splitlines() if "training diverged at iteration" in line]


def _last_lr(out: Path) -> float:
    lines = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    return [m for m in lines if "lr" in m][-1]["lr"]


def test_stop_ends_the_diverging_run_in_one_error_line(setup, tmp_path):
    out = tmp_path / "stop"
    log = _train(setup, out, code=2)
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "training diverged" in errors[0], log[-3000:]
    assert "D2SEG.ON_DIVERGENCE recover" in errors[0]  # the hint names the way out
    assert STEP <= int(re.search(r"at iteration (\d+)", errors[0]).group(1)) < MAX_ITER
    assert not _warnings(log) and not (out / "recoveries.json").exists()
    assert not (out / "model_final.pth").exists()


def test_recover_reloads_the_last_checkpoint_with_a_lower_lr_and_finishes(setup, tmp_path):
    out = tmp_path / "recover"
    factor = 1e-12  # undoes GAMMA: the run goes on at BASE_LR after the step
    log = _train(setup, out, "D2SEG.ON_DIVERGENCE", "recover",
                 "D2SEG.RECOVER_LR_FACTOR", str(factor))
    assert "error:" not in log
    warnings = _warnings(log)
    assert len(warnings) == 1, log[-3000:]
    (recovery,) = json.loads((out / "recoveries.json").read_text())
    failed_at = recovery["failed_at"]
    assert STEP <= failed_at < MAX_ITER
    # the newest periodic checkpoint before the failure, as checkpoints.json lists it
    record = json.loads((out / "checkpoints.json").read_text())["checkpoints"]
    periodic = [e for e in record if re.fullmatch(r"model_\d{7}\.pth", e["file"])]
    expected = max((e for e in periodic if e["iteration"] < failed_at), key=lambda e: e["iteration"])
    assert expected["file"] == "model_0000003.pth"  # the test's design: saved just before STEP
    assert recovery["reloaded"] == expected["file"] and recovery["reloaded_iteration"] == 3
    assert recovery["continued_at"] == 4
    assert f"reloaded {expected['file']} (iteration 3)" in warnings[0]
    assert "(recovery 1 of 3)" in warnings[0] and f"at iteration {failed_at}" in warnings[0]
    # the learning rate: factor x what the schedule gave at the iteration trained again
    assert recovery["lr_before"] == pytest.approx(BASE_LR * GAMMA, rel=1e-9)
    assert recovery["lr_after"] == pytest.approx(factor * recovery["lr_before"], rel=1e-9)
    assert recovery["base_lr_after"][0] == pytest.approx(factor * recovery["base_lr_before"][0])
    assert _last_lr(out) == pytest.approx(factor * BASE_LR * GAMMA, rel=1e-9)  # it persisted
    # the run finished, with finite weights and the lower LR in its final checkpoint
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert final["iteration"] == MAX_ITER - 1
    assert all(torch.isfinite(v).all() for v in final["model"].values() if v.is_floating_point())
    sched = final["trainer"]["hooks"]["LRScheduler"]
    assert sched["base_lrs"][0] == pytest.approx(factor * BASE_LR)
    assert final["trainer"]["_trainer"]["optimizer"]["param_groups"][0]["initial_lr"] == \
        pytest.approx(factor * BASE_LR)
    # every iteration after the reload was trained again (metrics.json has them from 4 on)
    assert (out / "model_0000007.pth").exists()


def test_recover_is_bounded_then_ends_in_the_error_line(setup, tmp_path):
    out = tmp_path / "bounded"
    log = _train(setup, out, "D2SEG.ON_DIVERGENCE", "recover", "D2SEG.RECOVER_LR_FACTOR", "0.5",
                 "D2SEG.RECOVER_MAX_TIMES", "2", code=2)
    warnings = _warnings(log)
    assert len(warnings) == 2, log[-3000:]
    assert "(recovery 1 of 2)" in warnings[0] and "(recovery 2 of 2)" in warnings[1]
    records = json.loads((out / "recoveries.json").read_text())
    assert [r["reloaded"] for r in records] == ["model_0000003.pth"] * 2
    # the factor compounds: 0.5, then 0.25 of the configured base LR
    assert [r["base_lr_after"][0] for r in records] == pytest.approx([BASE_LR / 2, BASE_LR / 4])
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "training diverged" in errors[0]
    assert "after 2 recoveries" in errors[0] and "Traceback" not in log


def test_recover_before_any_checkpoint_starts_over_from_the_initial_weights(setup, tmp_path):
    out = tmp_path / "start"
    log = _train(setup, out, "D2SEG.ON_DIVERGENCE", "recover", "D2SEG.RECOVER_LR_FACTOR", "1e-12",
                 "SOLVER.STEPS", "(1,)", "SOLVER.CHECKPOINT_PERIOD", "100", "SOLVER.MAX_ITER", "4")
    (recovery,) = json.loads((out / "recoveries.json").read_text())
    assert recovery["reloaded"] == "the weights training started from"
    assert recovery["reloaded_iteration"] == -1 and recovery["continued_at"] == 0
    assert len(_warnings(log)) == 1 and (out / "model_final.pth").exists()
    assert math.isclose(_last_lr(out), 1e-12 * BASE_LR * GAMMA, rel_tol=1e-9)


def test_bad_recovery_settings_are_one_line_errors(setup, tmp_path):
    log = _train(setup, tmp_path / "bad", "D2SEG.ON_DIVERGENCE", "retry", code=2)
    assert "D2SEG.ON_DIVERGENCE" in log and "Traceback" not in log
