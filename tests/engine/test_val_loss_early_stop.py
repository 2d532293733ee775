"""``TEST.VAL_LOSS_PERIOD`` (the training losses on the test split, logged as val_total_loss and
val_<loss>) and ``D2SEG.EARLY_STOP`` (stop when D2SEG.BEST_METRIC stops improving).

References: the validation loss is recomputed here from the run's model_final.pth with inputs
built by hand from the images and the COCO JSON this file writes (not through d2seg's mapper or
hook); early-stopping iterations are worked out by hand from scripted evaluation results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tiny_squares import H, W, validation_run_config, write_squares_dataset

pytestmark = pytest.mark.slow

# the training CLI; with SCRIPT set, the evaluation returns segm/AP from AP[iteration] instead
# of evaluating (the early-stopping runs: their metric is known in advance)
TRAIN = """
import os, sys, torch
torch.set_num_threads(1)
if os.environ.get("SCRIPT"):
    from detectron2.utils.events import get_event_storage
    from d2seg.engine.trainer import Trainer
    AP = {int(k): v for k, v in __import__("json").loads(os.environ["SCRIPT"]).items()}
    Trainer.test = classmethod(lambda cls, cfg, model, evaluators=None:
                               {"segm": {"AP": AP[get_event_storage().iter]}})
from d2seg.cli.main import main
sys.exit(main(sys.argv[1:]))
"""



@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("vles")
    items = write_squares_dataset(root / "data", "vles", ("train", "test"), texture=True)["test"]
    (root / "bn.yaml").write_text(validation_run_config("vles", "BN").dump())
    (root / "gn.yaml").write_text(validation_run_config("vles", "GN").dump())
    env = dict(os.environ, D2SEG_DATASETS=str(root / "data"), PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS="1")
    return SimpleNamespace(root=root, items=items, env=env)


def _train(setup, config: str, out: Path, *opts: str, script: dict | None = None,
           resume: bool = False, code: int = 0) -> str:
    env = dict(setup.env, SCRIPT=json.dumps(script) if script else "")
    cmd = [sys.executable, "-c", TRAIN, "train", "--config-file", str(setup.root / config),
           "--output", str(out), "--seed", "1", *(["--resume"] if resume else []), *opts]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600)
    assert proc.returncode == code, proc.stdout[-4000:]
    return proc.stdout


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]


def _checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# -- the validation loss, computed independently ---------------------------------------------

def _model_from(out: Path, checkpoint: str):
    """A fresh model from the run's config.yaml with the checkpoint's weights loaded."""
    import d2seg.modeling  # noqa: F401  (registers the torchvision backbone)
    from d2seg.config import load_config
    from detectron2.modeling import build_model

    cfg = load_config(str(out / "config.yaml"))
    model = build_model(cfg)
    model.load_state_dict(_checkpoint(out / checkpoint)["model"])
    return model


def _hand_made_inputs(items) -> list[dict]:
    """What the model gets for each test image: the BGR pixels (no resize at 64x80) and the
    square as box, class 0 and bit mask."""
    from detectron2.structures import BitMasks, Boxes, Instances

    inputs = []
    for img, mask, (x, y, w, h) in items:
        inst = Instances((H, W))
        inst.gt_boxes = Boxes(torch.tensor([[x, y, x + w, y + h]], dtype=torch.float32))
        inst.gt_classes = torch.tensor([0])
        inst.gt_masks = BitMasks(torch.from_numpy(mask[None].astype(bool)))
        inputs.append({"image": torch.from_numpy(img.transpose(2, 0, 1).copy()),
                       "height": H, "width": W, "instances": inst})
    return inputs


def _reference_losses(model, inputs) -> dict[str, float]:
    """Mean over images of each image's training losses: training mode, BatchNorm in eval
    mode, no gradient, the model's sampling seeded with the image's index."""
    from detectron2.utils.events import EventStorage

    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    sums: dict[str, float] = {}
    with torch.no_grad(), EventStorage(0):
        for index, inp in enumerate(inputs):
            torch.manual_seed(index)
            losses = model([inp])
            losses = {"total_loss": sum(losses.values()), **losses}
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v)
    return {k: v / len(inputs) for k, v in sums.items()}


@pytest.fixture(scope="module")
def val_run(setup, tmp_path_factory):
    """BN backbone, VAL_LOSS_PERIOD 2, MAX_ITER 3: validation losses at iterations 1 and 2."""
    out = tmp_path_factory.mktemp("val") / "run"
    log = _train(setup, "bn.yaml", out, "TEST.VAL_LOSS_PERIOD", "2")
    return out, log


def test_logged_val_loss_equals_an_independent_computation(setup, val_run):
    out, _ = val_run
    rows = [m for m in _metrics(out) if "val_total_loss" in m]
    last = rows[-1]
    assert last["iteration"] == 2  # at the end (MAX_ITER 3), on model_final's weights
    assert _checkpoint(out / "model_final.pth")["iteration"] == 2
    expected = _reference_losses(_model_from(out, "model_final.pth"),
                                 _hand_made_inputs(setup.items))
    assert set(expected) == {"total_loss", "loss_cls", "loss_box_reg", "loss_mask",
                             "loss_rpn_cls", "loss_rpn_loc"}
    for key, value in expected.items():
        assert last["val_" + key] == pytest.approx(value, rel=1e-5, abs=1e-7), key


def test_val_pass_leaves_weights_modes_and_rng_unchanged(setup, val_run, monkeypatch):
    """Calling the hook directly on a BN model in training mode: every tensor of the state dict
    (BN running statistics included), every module's mode and the torch RNG are as before, and
    the value it stores is the independent computation's. The same forward pass with BN left in
    training mode does change the running statistics (the check can fail)."""
    from detectron2.utils.events import EventStorage

    from d2seg.config import load_config
    from d2seg.engine.hooks import ValidationLoss
    from d2seg.data.register import register_datasets

    out, _ = val_run
    monkeypatch.setenv("D2SEG_DATASETS", str(setup.root / "data"))
    register_datasets()
    cfg = load_config(str(out / "config.yaml"))
    model = _model_from(out, "model_final.pth")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    rng = torch.get_rng_state()
    hook = ValidationLoss(cfg, 1, "vles_test")
    with EventStorage(5) as storage:
        hook.trainer = SimpleNamespace(model=model, iter=5, max_iter=10, storage=storage)
        hook.before_train()
        hook.after_step()
        logged = {k: v for k, (v, _) in storage.latest().items()}
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(torch.get_rng_state(), rng)
    expected = _reference_losses(_model_from(out, "model_final.pth"),
                                 _hand_made_inputs(setup.items))
    assert logged["val_total_loss"] == pytest.approx(expected["total_loss"], rel=1e-5)
    # BN in training mode would have moved the running means: the comparison above can fail
    model.train()
    with torch.no_grad(), EventStorage(0):
        model(_hand_made_inputs(setup.items)[:1])
    assert not all(torch.equal(before[k], model.state_dict()[k]) for k in before
                   if k.endswith("running_mean"))


# -- early stopping ----------------------------------------------------------------------------

# segm/AP by iteration, EVAL_PERIOD 1, PATIENCE 2, MIN_DELTA 1 (worked out by hand):
#   0: 10   first value: improvement                       best 10 @0, saved
#   1: 12   > 10 + 1: improvement                          best 12 @1, saved
#   2: 12.5 > 12 but not > 12 + 1: 1 without improvement   best 12.5 @2, saved (it is higher)
#   3: 11   2 without improvement = PATIENCE: stop at iteration 3, model_best = iteration 2
# a run that forgot the counters at a resume from iteration 2 would take 11 as its first value
# and then improve (20, 21, ...): it would not stop at 3.
AP = {0: 10.0, 1: 12.0, 2: 12.5, 3: 11.0, 4: 20.0, 5: 21.0, 6: 22.0, 7: 23.0}
EARLY = ("SOLVER.MAX_ITER", "8", "TEST.EVAL_PERIOD", "1", "D2SEG.BEST_METRIC", "segm/AP",
         "D2SEG.EARLY_STOP.PATIENCE", "2", "D2SEG.EARLY_STOP.MIN_DELTA", "1.0")


def _stop_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "early stopping at iteration" in line]


@pytest.fixture(scope="module")
def early_run(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("early") / "run"
    return out, _train(setup, "gn.yaml", out, *EARLY, script=AP)


def test_early_stop_at_the_hand_worked_iteration_keeps_the_best(early_run):
    out, log = early_run
    (line,) = _stop_lines(log)
    assert "early stopping at iteration 3: D2SEG.BEST_METRIC segm/AP" in line
    assert "best 12.5 at iteration 2" in line
    assert max(m["iteration"] for m in _metrics(out)) == 3
    assert not (out / "model_0000004.pth").exists()
    final = _checkpoint(out / "model_final.pth")
    assert final["iteration"] == 3
    assert final["trainer"]["hooks"]["BestCheckpointer"]["without_improvement"] == 2
    best = _checkpoint(out / "model_best.pth")
    assert best["iteration"] == 2
    periodic = _checkpoint(out / "model_0000002.pth")["model"]
    assert all(torch.equal(v, periodic[k]) for k, v in best["model"].items())
    # a normal end: the last evaluation's results are the run's results
    assert json.loads((out / "eval_results.json").read_text()) == {"segm": {"AP": 11.0}}


def test_resume_stops_at_the_same_iteration(setup, early_run, tmp_path):
    """Train to MAX_ITER 3 (iterations 0-2, one evaluation without improvement), then --resume
    with MAX_ITER 8: the counters come back from the checkpoint and the run stops at 3 with the
    uninterrupted run's weights; resuming the stopped run again stops before any step."""
    out = tmp_path / "resumed"
    first = _train(setup, "gn.yaml", out, *EARLY, "SOLVER.MAX_ITER", "3", script=AP)
    assert not _stop_lines(first)
    assert _checkpoint(out / "model_final.pth")["iteration"] == 2
    log = _train(setup, "gn.yaml", out, *EARLY, script=AP, resume=True)
    (line,) = _stop_lines(log)
    assert "early stopping at iteration 3:" in line and "best 12.5 at iteration 2" in line
    final = _checkpoint(out / "model_final.pth")
    assert final["iteration"] == 3
    uninterrupted = _checkpoint(early_run[0] / "model_final.pth")["model"]
    assert all(torch.equal(v, uninterrupted[k]) for k, v in final["model"].items())
    again = _train(setup, "gn.yaml", out, *EARLY, script=AP, resume=True)
    (line,) = _stop_lines(again)
    assert "early stopping at iteration 3:" in line
    assert not (out / "model_0000004.pth").exists()


# -- the decision, unit by unit, and bad settings ------------------------------------------------

class _Saves:
    def __init__(self):
        self.saved = []

    def save(self, name, **kwargs):
        self.saved.append((name, kwargs["iteration"]))


def _drive(values, *, mode, patience, min_delta, metric="val_total_loss"):
    """Feed one value per iteration (period 1) to the hook; return (saves, stop messages)."""
    from detectron2.utils.events import EventStorage

    from d2seg.engine.hooks import BestCheckpointer

    saves, stops = _Saves(), []
    hook = BestCheckpointer(1, saves, metric, mode, patience=patience, min_delta=min_delta)
    with EventStorage(0) as storage:
        trainer = SimpleNamespace(iter=0, max_iter=100, storage=storage,
                                  request_stop=lambda msg, final_pass=True: stops.append(msg))
        hook.trainer = trainer
        hook.before_train()
        for i, v in enumerate(values):
            trainer.iter = storage.iter = i
            storage.put_scalar("val_total_loss", v, smoothing_hint=False)
            hook.after_step()
            if stops:
                break
    return saves.saved, stops


def test_decision_min_mode_with_min_delta():
    # min, MIN_DELTA 0.25, PATIENCE 3; the reference is the last value that improved by > 0.25:
    # 4 (ref 4) | 3.875 no (1) | 3.5 < 3.75 yes (ref 3.5) | 3.375 no (1) | 3.25 not < 3.25 (2)
    # | 3.3 no (3): stop at iteration 5; best 3.25 at iteration 4
    saved, stops = _drive([4.0, 3.875, 3.5, 3.375, 3.25, 3.3, 1.0], mode="min", patience=3,
                          min_delta=0.25)
    assert saved == [("model_best", i) for i in range(5)]
    (msg,) = stops
    assert msg.startswith("early stopping at iteration 5: D2SEG.BEST_METRIC val_total_loss")
    assert "best 3.25 at iteration 4" in msg


def test_decision_nan_never_improves():
    saved, stops = _drive([float("nan"), 1.0], mode="max", patience=1, min_delta=0.0)
    assert saved == [] and len(stops) == 1 and "iteration 0" in stops[0]


def test_unknown_metric_at_the_first_evaluation_is_one_error_line():
    from d2seg.errors import D2SegError

    with pytest.raises(D2SegError) as e:
        _drive([1.0], mode="min", patience=2, min_delta=0.0, metric="val_totl_loss")
    text = str(e.value)
    assert "\n" not in text and "D2SEG.BEST_METRIC" in text and "val_total_loss" in text


@pytest.mark.parametrize("opts, key", [
    (("D2SEG.EARLY_STOP.PATIENCE", "-1"), "D2SEG.EARLY_STOP.PATIENCE"),
    (("D2SEG.EARLY_STOP.PATIENCE", "2", "TEST.EVAL_PERIOD", "1", "D2SEG.BEST_METRIC", "mask/AP"),
     "D2SEG.BEST_METRIC"),
    (("D2SEG.EARLY_STOP.PATIENCE", "2", "TEST.EVAL_PERIOD", "0", "D2SEG.BEST_METRIC", "segm/AP"),
     "D2SEG.EARLY_STOP.PATIENCE"),
    (("TEST.VAL_LOSS_PERIOD", "-5"), "TEST.VAL_LOSS_PERIOD"),
    (("D2SEG.BEST_METRIC", "val_total_loss"), "D2SEG.BEST_METRIC"),
])
def test_bad_settings_are_one_line_errors(setup, monkeypatch, opts, key):
    from d2seg.config import load_config
    from d2seg.data.register import register_datasets
    from d2seg.config.prepare import prepare_config
    from d2seg.errors import D2SegError

    monkeypatch.setenv("D2SEG_DATASETS", str(setup.root / "data"))
    register_datasets()
    cfg = load_config(str(setup.root / "gn.yaml"), list(opts))
    with pytest.raises(D2SegError) as e:
        prepare_config(cfg)
    assert e.value.where == key and "\n" not in str(e.value)


def test_bad_setting_through_the_cli(setup, tmp_path):
    log = _train(setup, "gn.yaml", tmp_path / "bad", "D2SEG.EARLY_STOP.PATIENCE", "-1", code=2)
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "D2SEG.EARLY_STOP.PATIENCE" in errors[0]
    assert "Traceback" not in log


def test_a_run_stopped_early_is_evaluated_once_at_its_last_iteration():
    """EvalHook (every 4 iterations, MAX_ITER 10): a stop at iteration 5 evaluates at 5; a stop
    right after the evaluation of iteration 3 does not evaluate again."""
    from detectron2.utils.events import EventStorage

    from d2seg.engine.hooks import EvalHook

    calls = []

    def evaluate():
        calls.append(trainer.iter)
        return {"segm": {"AP": float(trainer.iter)}}

    hook = EvalHook(4, evaluate)
    with EventStorage(0) as storage:
        trainer = SimpleNamespace(iter=0, max_iter=10, storage=storage)
        hook.trainer = trainer
        hook.before_train()
        for i in range(6):
            trainer.iter = storage.iter = i
            hook.after_step()
            if i == 3:
                hook.on_early_stop()
        hook.on_early_stop()
        assert calls == [3, 5] and storage.latest()["segm/AP"] == (5.0, 5)
