"""``TEST.VAL_LOSS_PERIOD`` and ``D2SEG.EARLY_STOP`` with 2 CPU processes (torchrun, gloo).

References: the validation loss is recomputed here in one plain process from the run's
checkpoints, with inputs built by hand from the images this file writes (3 test images, so the
two ranks get unequal shares: 2 and 1); the early-stopping iteration is worked out by hand from
scripted evaluation results. What each rank's hooks hold is recorded by the training script
below (a wrapper around the hooks' methods that writes one JSON file per rank).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tiny_squares import H, W, validation_run_config, write_squares_dataset

pytestmark = pytest.mark.slow

# d2seg train, each rank recording its validation losses and its BestCheckpointer state into
# RECORD/rank<r>.json; with SCRIPT set, the evaluation returns segm/AP from AP[iteration]
TRAIN = """
import json, os, sys, torch
torch.set_num_threads(1)
from d2seg.engine import hooks

record = {"val": [], "best": []}
def dump():
    path = os.path.join(os.environ["RECORD"], f"rank{os.environ['RANK']}.json")
    with open(path, "w") as f:
        json.dump(record, f)

run = hooks.ValidationLoss.run
def run_recorded(self):
    losses = run(self)
    record["val"].append([self.trainer.iter, losses])
    return losses
hooks.ValidationLoss.run = run_recorded

for name in ("before_train", "after_train"):
    def wrap(method, name=name):
        def recorded(self):
            if name == "before_train":
                record["best"].append(["before_train", self.trainer.iter, self.state_dict()])
            method(self)
            if name == "after_train":
                record["best"].append(["after_train", self.trainer.iter, self.state_dict()])
                dump()
        return recorded
    setattr(hooks.BestCheckpointer, name, wrap(getattr(hooks.BestCheckpointer, name)))

if os.environ.get("SCRIPT"):
    from detectron2.utils.events import get_event_storage
    from d2seg.engine.trainer import Trainer
    AP = {int(k): v for k, v in json.loads(os.environ["SCRIPT"]).items()}
    Trainer.test = classmethod(lambda cls, cfg, model, evaluators=None:
                               {"segm": {"AP": AP[get_event_storage().iter]}})
from d2seg.cli.main import main
code = main(sys.argv[1:])
dump()
sys.exit(code)
"""

@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("vld")
    # 3 test images, so the two ranks get unequal shares (2 and 1)
    items = write_squares_dataset(root / "data", "vld", {"train": 2, "test": 3},
                                  texture=True)["test"]
    (root / "gn.yaml").write_text(validation_run_config("vld").dump())
    env = dict(os.environ, D2SEG_DATASETS=str(root / "data"), PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS="1")
    return SimpleNamespace(root=root, items=items, env=env)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train2(setup, out: Path, *opts: str, script: dict | None = None,
            resume: bool = False) -> tuple[str, list[dict]]:
    """d2seg train in 2 processes; returns the log and each rank's record."""
    record = out.parent / f"{out.name}_record{'_resume' if resume else ''}"
    record.mkdir(parents=True)
    script_file = out.parent / "train_recorded.py"
    script_file.write_text(TRAIN)
    env = dict(setup.env, SCRIPT=json.dumps(script) if script else "", RECORD=str(record))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(_free_port()), str(script_file), "train", "--config-file",
           str(setup.root / "gn.yaml"), "--output", str(out), "--seed", "1",
           *(["--resume"] if resume else []), *opts]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-5000:]
    log = (out / "log.txt").read_text()
    assert "distributed run: 2 processes, gloo backend" in log
    return proc.stdout, [json.loads((record / f"rank{r}.json").read_text()) for r in (0, 1)]


def _checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]


def _reference_losses(out: Path, checkpoint: str, items) -> dict[str, float]:
    """One plain process: a fresh model from the run's config.yaml with the checkpoint's
    weights; the mean over the test images of each image's training losses (training mode, no
    gradient, the model's sampling seeded with the image's index), on inputs built by hand."""
    import d2seg.modeling  # noqa: F401  (registers the torchvision backbone)
    from detectron2.modeling import build_model
    from detectron2.structures import BitMasks, Boxes, Instances
    from detectron2.utils.events import EventStorage

    from d2seg.config import load_config

    model = build_model(load_config(str(out / "config.yaml")))
    model.load_state_dict(_checkpoint(out / checkpoint)["model"])
    model.train()
    sums: dict[str, float] = {}
    with torch.no_grad(), EventStorage(0):
        for index, (img, mask, (x, y, w, h)) in enumerate(items):
            inst = Instances((H, W))
            inst.gt_boxes = Boxes(torch.tensor([[x, y, x + w, y + h]], dtype=torch.float32))
            inst.gt_classes = torch.tensor([0])
            inst.gt_masks = BitMasks(torch.from_numpy(mask[None].astype(bool)))
            torch.manual_seed(index)
            losses = model([{"image": torch.from_numpy(img.transpose(2, 0, 1).copy()),
                             "height": H, "width": W, "instances": inst}])
            losses = {"total_loss": sum(losses.values()), **losses}
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v)
    return {k: v / len(items) for k, v in sums.items()}


def test_two_process_val_loss_is_the_mean_over_all_images_on_every_rank(setup, tmp_path):
    """VAL_LOSS_PERIOD 1 over 3 iterations: the val losses each rank's hook computed at each
    iteration equal (to float tolerance) the one-process computation on that iteration's
    checkpoint over all 3 test images; rank 1's values are exactly rank 0's, and metrics.json
    holds rank 0's last ones (detectron2's writer keeps the latest value between its writes)."""
    out = tmp_path / "run"
    torch.set_num_threads(1)
    _, (rank0, rank1) = _train2(setup, out, "TEST.VAL_LOSS_PERIOD", "1")
    assert rank0["val"] == rank1["val"]  # the same sums reached both ranks
    computed = dict((it, losses) for it, losses in rank0["val"])
    assert sorted(computed) == [0, 1, 2]
    rows = [m for m in _metrics(out) if "val_total_loss" in m]
    assert rows and rows[-1]["iteration"] == 2
    for key, value in computed[2].items():
        assert rows[-1]["val_" + key] == value
    checkpoints = {0: "model_0000000.pth", 1: "model_0000001.pth", 2: "model_final.pth"}
    for iteration, name in checkpoints.items():
        assert _checkpoint(out / name)["iteration"] == iteration
        expected = _reference_losses(out, name, setup.items)
        assert set(expected) == {"total_loss", "loss_cls", "loss_box_reg", "loss_mask",
                                 "loss_rpn_cls", "loss_rpn_loc"}
        for key, value in expected.items():
            assert computed[iteration][key] == pytest.approx(value, rel=1e-5, abs=1e-7), \
                (iteration, key)
    # the weights changed between the checkpoints: the per-iteration comparison is not trivial
    assert len({round(computed[i]["total_loss"], 9) for i in checkpoints}) > 1


# segm/AP by iteration, EVAL_PERIOD 1, PATIENCE 2, MIN_DELTA 1 (worked out by hand):
#   0: 10 improvement; 1: 12 improvement (> 11); 2: 12.5 not > 13: 1 without, best 12.5 @2;
#   3: 11: 2 without = PATIENCE: stop at iteration 3. A resume from iteration 2 that forgot the
#   counters would take 11 as a first value, then improve (20, 21, ...) and never stop.
AP = {0: 10.0, 1: 12.0, 2: 12.5, 3: 11.0, 4: 20.0, 5: 21.0, 6: 22.0, 7: 23.0}
EARLY = ("SOLVER.MAX_ITER", "8", "TEST.EVAL_PERIOD", "1", "D2SEG.BEST_METRIC", "segm/AP",
         "D2SEG.EARLY_STOP.PATIENCE", "2", "D2SEG.EARLY_STOP.MIN_DELTA", "1.0")
STOPPED = {"best_metric": 12.5, "best_iter": 2, "reference": 12.0, "without_improvement": 2,
           "stopped_at": 3}


def test_two_process_early_stop_and_resume_agree_on_every_rank(setup, tmp_path):
    """Both ranks stop at the hand-worked iteration 3 with the same BestCheckpointer state; a
    2-process run to MAX_ITER 3 resumed with MAX_ITER 8 restores that state on both ranks from
    the checkpoint and stops at 3 too. (Its weights are not compared with the uninterrupted
    run's: only rank 0's random states travel in checkpoints, so rank 1's step 3 differs.)"""
    out = tmp_path / "whole"
    _, ranks = _train2(setup, out, *EARLY, script=AP)
    assert "early stopping at iteration 3:" in (out / "log.txt").read_text()
    for rank in ranks:
        stage, iteration, state = rank["best"][-1]
        assert (stage, iteration, state) == ("after_train", 3, STOPPED), rank["best"]
    assert _checkpoint(out / "model_final.pth")["trainer"]["hooks"]["BestCheckpointer"] == STOPPED
    assert _checkpoint(out / "model_best.pth")["iteration"] == 2

    part = tmp_path / "part"
    _, first = _train2(setup, part, *EARLY, "SOLVER.MAX_ITER", "3", script=AP)
    saved = _checkpoint(part / "model_final.pth")["trainer"]["hooks"]["BestCheckpointer"]
    assert saved["without_improvement"] == 1 and saved["stopped_at"] is None
    assert first[0]["best"][-1] == first[1]["best"][-1]
    _, resumed = _train2(setup, part, *EARLY, script=AP, resume=True)
    for rank in resumed:
        assert rank["best"][0] == ["before_train", 3, saved]  # restored from the checkpoint
        assert rank["best"][-1] == ["after_train", 3, STOPPED]
    assert "early stopping at iteration 3:" in (part / "log.txt").read_text()
    assert _checkpoint(part / "model_final.pth")["iteration"] == 3
    assert not (part / "model_0000004.pth").exists()
