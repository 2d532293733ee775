"""The CamVid benchmark's split (bench/bench_semantic_camvid.py): a whole sequence is held out
when the folder has several, the one-sequence folder in ../shared is split in time with a gap,
and the benchmark's settings are those of the config a user can train with. Hand-checked."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from bench_semantic_camvid import SETTINGS, _settings, split_frames  # noqa: E402


def _frames(sequence: str, n: int) -> list[str]:
    return [f"{sequence}_{i:05d}.png" for i in range(n)]


def test_several_sequences_hold_one_out_whole():
    frames = _frames("0001TP", 4) + _frames("0016E5", 3) + _frames("Seq05VD", 2)
    parts, description = split_frames(frames, 70, 26)
    assert parts["heldout"] == _frames("Seq05VD", 2)  # the last sequence by default
    assert parts["train"] == _frames("0001TP", 4) + _frames("0016E5", 3)
    assert description.startswith("by sequence: held out Seq05VD")
    parts, _ = split_frames(frames, 70, 26, heldout_sequence="0016E5")
    assert parts["heldout"] == _frames("0016E5", 3)
    assert not {f.split("_")[0] for f in parts["train"]} & {"0016E5"}


def test_one_sequence_is_split_in_time_and_says_so():
    frames = _frames("0016E5", 101)
    parts, description = split_frames(frames, 70, 26)
    assert parts["train"] == frames[:70] and parts["heldout"] == frames[75:]
    assert "within-sequence" in description and "5 between dropped" in description


def test_bad_requests_stop_with_a_reason():
    with pytest.raises(SystemExit, match="no sequence"):
        split_frames(_frames("A", 3) + _frames("B", 3), 1, 1, heldout_sequence="C")
    with pytest.raises(SystemExit, match="nothing to train on"):
        split_frames(_frames("A", 3), 1, 1, heldout_sequence="A")
    with pytest.raises(SystemExit, match="cannot take"):
        split_frames(_frames("A", 10), 8, 5)


def test_benchmark_settings_come_from_the_runnable_config():
    text = SETTINGS.read_text()
    assert "MIN_SIZE_TEST: 180" in text and "IMS_PER_BATCH: 4" in text and "MAX_ITER: 300" in text
    assert _settings() == {"size": 180, "batch": 4, "iters": 300}
