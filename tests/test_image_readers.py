"""compare, visualize's dataset drawing and the demo's panoptic export read images through
d2seg.io.images.read_image: a corrupt file is one D2SegError line naming it, not a crash."""

import uuid

import numpy as np
import pytest
from PIL import Image

from d2seg.errors import D2SegError


def _bad_images(tmp_path):
    """A text file named .jpg, and a PNG cut to half its bytes."""
    text = tmp_path / "text.jpg"
    text.write_text("not an image\n")
    png = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(png)
    png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    return [text, png]


def _assert_one_line(error: D2SegError, path) -> None:
    assert error.file == str(path)
    assert "\n" not in str(error) and str(error).startswith(f"{path}: ")
    assert ("not an image file" in error.reason or "truncated" in error.reason
            or "corrupt" in error.reason), error.reason


def test_compare_reader(tmp_path):
    """compare._read_bgr: a good PNG reads as BGR; each bad file is one error line."""
    from d2seg.runners.compare import _read_bgr

    good = tmp_path / "good.png"
    Image.fromarray(np.array([[[10, 20, 30]]], np.uint8)).save(good)
    assert _read_bgr(str(good)).tolist() == [[[30, 20, 10]]]
    for path in _bad_images(tmp_path):
        with pytest.raises(D2SegError) as info:
            _read_bgr(str(path))
        _assert_one_line(info.value, path)


def test_visualize_dataset_reader(tmp_path):
    """visualize.datasets._read_image: bad files as above; a missing one keeps the manifest
    hint."""
    from d2seg.visualize.datasets import _read_image

    for path in _bad_images(tmp_path):
        with pytest.raises(D2SegError) as info:
            _read_image(path)
        _assert_one_line(info.value, path)
    with pytest.raises(D2SegError, match="image file not found; check the dataset's images"):
        _read_image(tmp_path / "gone.jpg")


def test_demo_panoptic_export_reader(tmp_path, monkeypatch):
    """export_panoptic_predictions on a registered dataset whose image is corrupt stops with the
    reader's error before the (stand-in) model is called."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    import d2seg.engine.predict as predict
    from d2seg.runners.demo import export_panoptic_predictions

    calls = []
    monkeypatch.setattr(predict, "BatchPredictor",
                        lambda cfg, weights: lambda images: calls.append(images))
    bad = _bad_images(tmp_path)[1]
    gt = tmp_path / "panoptic.json"
    gt.write_text('{"images": [], "annotations": [], "categories": []}')
    name = f"bad_images_{uuid.uuid4().hex[:8]}"
    DatasetCatalog.register(name, lambda: [{"file_name": str(bad), "image_id": 1}])
    MetadataCatalog.get(name).set(panoptic_json=str(gt), thing_dataset_id_to_contiguous_id={},
                                  stuff_dataset_id_to_contiguous_id={})
    try:
        with pytest.raises(D2SegError) as info:
            export_panoptic_predictions(None, "w.pth", name, tmp_path / "out" / "p.json")
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    _assert_one_line(info.value, bad)
    assert calls == []
