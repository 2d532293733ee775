"""``d2seg predict`` streams a video: memory does not grow with the video's length.

Behavioural, not timed: the same tiny Mask R-CNN runs over a 48-frame and a 192-frame video and
the Python heap peak (tracemalloc; numpy arrays are traced) of the second must stay close to the
first. Keeping every decoded frame, every rendered frame or every detection for the final JSON
would make the long run's peak grow with the extra 144 frames; at most a batch of frames may be
alive at any time (weak references to each decoded frame).
"""

from __future__ import annotations

import gc
import json
import tracemalloc
import weakref

import cv2
import numpy as np
import pytest
import torch

from d2seg.runners.diagnostics import tiny_mask_rcnn_cfg
from d2seg.engine import predict as predict_mod
from d2seg.io.files import is_leftover_temporary

H, W = 120, 160
BATCH = 4
SHORT, LONG = 48, 192  # frames


def _temporaries(folder) -> list[str]:
    """Temporary files left in ``folder`` (the results writers' are named as d2seg.io.files')."""
    return [p.name for p in folder.iterdir() if is_leftover_temporary(p.name)]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A random-init tiny Mask R-CNN saved once, so every run loads the same weights."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    cfg = tiny_mask_rcnn_cfg("cpu", 48)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # untrained: keep its low-score output (12 a frame)
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 100
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 30
    cfg.TEST.DETECTIONS_PER_IMAGE = 12
    root = tmp_path_factory.mktemp("video_mem_model")
    DetectionCheckpointer(build_model(cfg), save_dir=str(root)).save("model")
    return cfg, str(root / "model.pth")


def _video(path, n: int):
    rng = np.random.default_rng(n)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (W, H))
    for i in range(n):
        img = rng.integers(0, 60, (H, W, 3), dtype=np.uint8)
        x, y = 10 + (3 * i) % (W - 60), 10 + (2 * i) % (H - 50)
        cv2.rectangle(img, (x, y), (x + 40, y + 30), (0, 200, 0), -1)
        cv2.circle(img, (W - 30, H // 2), 18, (200, 60, 0), -1)
        writer.write(img)
    writer.release()
    return path


def _run(model, video, out, monkeypatch):
    """predict() over one video under tracemalloc: (heap peak bytes from the first frame on, most
    frames alive at once)."""
    cfg, weights = model
    alive: list[weakref.ref] = []
    most = 0
    real_iter_frames = predict_mod.iter_frames

    def counting_iter_frames(files):
        nonlocal most
        for index, frame in enumerate(real_iter_frames(files)):
            if index == 0:  # the model is built and its checkpoint read: measure the frame loop
                tracemalloc.reset_peak()
            alive.append(weakref.ref(frame.image))
            alive[:] = [r for r in alive if r() is not None]
            most = max(most, len(alive))
            yield frame

    monkeypatch.setattr(predict_mod, "iter_frames", counting_iter_frames)
    gc.collect()
    tracing = tracemalloc.is_tracing()  # e.g. python -X tracemalloc: leave it running
    if not tracing:
        tracemalloc.start()
    try:
        predict_mod.predict(cfg, [video], out, weights=weights, batch_size=BATCH, score_thresh=0.0,
                            progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        if not tracing:
            tracemalloc.stop()
        monkeypatch.setattr(predict_mod, "iter_frames", real_iter_frames)
    return peak, most


def _check_outputs(out, n: int):
    cap = cv2.VideoCapture(str(out / "rendered" / "clip.mp4"))
    decoded = 0
    while cap.read()[0]:
        decoded += 1
    cap.release()
    assert decoded == n
    images = json.loads((out / "images.json").read_text())
    assert [im["file_name"] for im in images] == [f"clip.mp4#{i}" for i in range(n)]
    assert all((im["height"], im["width"]) == (H, W) for im in images)
    results = json.loads((out / "results.json").read_text())
    assert {r["image_id"] for r in results} == {im["id"] for im in images}  # every frame has detections
    assert all(isinstance(r["segmentation"]["counts"], str) for r in results)
    assert not list(out.glob("*.tmp")) and not _temporaries(out)
    return len(results)


@pytest.fixture
def one_thread():
    """One torch thread: the runs are short and the CPUs shared (threads would only spin)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_video_memory_does_not_grow_with_length(model, tmp_path, monkeypatch, one_thread):
    # warm-up: lazy imports, fonts, codec and torch caches are not what is measured
    predict_mod.predict(model[0], [_video(tmp_path / "warm.mp4", 8)], tmp_path / "warm", weights=model[1],
                        batch_size=BATCH, progress=False)
    runs = {}
    for n in (SHORT, LONG):
        folder = tmp_path / str(n)
        folder.mkdir()
        video = _video(folder / "clip.mp4", n)
        peak, most = _run(model, video, folder / "out", monkeypatch)
        detections = _check_outputs(folder / "out", n)
        runs[n] = peak, most, detections
    (short_peak, short_most, short_dets), (long_peak, long_most, long_dets) = runs[SHORT], runs[LONG]

    # a batch being predicted, plus the frame the loop holds while the next one is read
    assert short_most <= BATCH + 1 and long_most <= BATCH + 1, (short_most, long_most)
    # holding the 144 extra frames (decoded or rendered, 57.6 KB each) or their ~1,700 extra
    # detections (RLE) would add several MB to the long run's peak (3x the short run's peak and
    # more, measured); streaming adds next to nothing (1.03x, under one frame's bytes)
    frame_bytes = H * W * 3
    assert long_dets > 3 * short_dets
    assert long_peak <= 1.5 * short_peak, (short_peak, long_peak)
    assert long_peak - short_peak <= 10 * frame_bytes, (short_peak, long_peak)


@pytest.mark.parametrize("items", [[], [1], [{"a": [1, 2.5], "b": "x"}, {"c": None}, "é"]])
def test_json_list_writer_writes_what_json_dumps_writes(tmp_path, items):
    writer = predict_mod._JsonListWriter(tmp_path / "r.json")
    writer.extend(items)
    assert len(writer) == len(items)
    writer.commit()
    writer.discard()  # after commit: nothing to remove
    assert (tmp_path / "r.json").read_text() == json.dumps(items)
    assert json.loads((tmp_path / "r.json").read_text()) == items
    assert not (tmp_path / "r.json.tmp").exists() and not _temporaries(tmp_path)


def test_failed_predict_leaves_earlier_results_and_no_partial_file(model, tmp_path, monkeypatch, one_thread):
    cfg, weights = model
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("[]")
    calls = 0
    real_call = predict_mod.BatchPredictor.__call__

    def failing_call(self, images):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("boom")
        return real_call(self, images)

    monkeypatch.setattr(predict_mod.BatchPredictor, "__call__", failing_call)
    with pytest.raises(RuntimeError, match="boom"):
        predict_mod.predict(cfg, [_video(tmp_path / "clip.mp4", 3 * BATCH)], out, weights=weights,
                            batch_size=BATCH, render=False, progress=False)
    assert (out / "results.json").read_text() == "[]"
    assert not list(out.glob("*.tmp")) and not _temporaries(out)
    assert not (out / "images.json").exists()
