"""Two runs in one process (as the demo does) log each line once, to the current run's log."""

from __future__ import annotations

import logging

import pytest
from pathlib import Path

from d2seg.engine.run import setup

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "instance" / "mask_rcnn_R18_GN_FPN_cpu_quick.yaml"


def test_second_setup_replaces_first_runs_handlers(tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    setup(CONFIG, [], output_dir=first)
    logging.getLogger("d2seg").info("marker-one")
    setup(CONFIG, [], output_dir=second)
    logging.getLogger("d2seg").info("marker-two")
    for handler in logging.getLogger("d2seg").handlers:
        handler.flush()

    console = capsys.readouterr().out
    assert console.count("marker-one") == 1
    assert console.count("marker-two") == 1  # not once per earlier setup()
    first_log = (first / "log.txt").read_text()
    second_log = (second / "log.txt").read_text()
    assert "marker-one" in first_log and "marker-two" not in first_log
    assert "marker-two" in second_log and "marker-one" not in second_log


def test_handlers_added_by_the_user_are_kept(tmp_path):
    logger = logging.getLogger("d2seg")
    mine = logging.NullHandler()
    logger.addHandler(mine)
    try:
        setup(CONFIG, [], output_dir=tmp_path / "a")
        setup(CONFIG, [], output_dir=tmp_path / "b")
        assert mine in logger.handlers
    finally:
        logger.removeHandler(mine)


def test_quiet_terminal_console_keeps_full_log_file(tmp_path, monkeypatch):
    """With a progress bar on a terminal the console shows only warnings, but log.txt must
    still get every INFO line (detectron2's file handler is a StreamHandler too)."""
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    setup(CONFIG, ["D2SEG.PROGRESS_BAR", "True"], output_dir=tmp_path)
    logging.getLogger("d2seg").info("info-line")
    for handler in logging.getLogger("d2seg").handlers:
        handler.flush()
    levels = {getattr(h, "stream", None) is sys.stdout: h.level
              for h in logging.getLogger("d2seg").handlers if getattr(h, "_d2seg_run", False)}
    assert levels[True] == logging.WARNING  # console
    assert "info-line" in (tmp_path / "log.txt").read_text()


def test_evaluation_needs_no_training_dataset(tmp_path):
    """An eval-only config (DATASETS.TRAIN empty) takes its classes from the test data;
    training it is one clear error."""
    from d2seg.engine.run import train
    from d2seg.errors import D2SegError

    cfg = setup(CONFIG, ["DATASETS.TRAIN", "()", "DATASETS.TEST", "('demo_instances_val',)"],
                output_dir=tmp_path)
    from detectron2.data import MetadataCatalog

    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == len(MetadataCatalog.get("demo_instances_val").thing_classes)
    with pytest.raises(D2SegError, match="no training dataset"):
        train(cfg)
    with pytest.raises(D2SegError, match="no dataset"):
        setup(CONFIG, ["DATASETS.TRAIN", "()", "DATASETS.TEST", "()"], output_dir=tmp_path)
