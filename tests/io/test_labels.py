"""One label-PNG reader: the ids a file holds are the ids training, PQ's semantic input, and the
reader itself see, for grey, 16-bit and palette PNGs; colour PNGs and broken files are one line."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from d2seg.errors import D2SegError
from d2seg.io.labels import read_label_png

H, W = 12, 16


def _ids(high: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, high, (H, W))
    ids[0, 0] = high - 1
    return ids


def _write(tmp_path, kind: str) -> tuple:
    """A label file of ``kind`` and the ids written into it (the hand-made reference)."""
    path = tmp_path / f"{kind}.png"
    if kind == "grey":
        ids = _ids(3).astype(np.uint8)
        ids[1, 1] = 255  # the ignore label
        Image.fromarray(ids, mode="L").save(path)
    elif kind == "wide":
        ids = _ids(1000).astype(np.uint16)
        Image.fromarray(ids).save(path)  # mode I;16
    else:  # palette: ids are indices, colours chosen so grey levels differ from the ids
        ids = _ids(4).astype(np.uint8)
        im = Image.fromarray(ids, mode="P")
        im.putpalette([0, 0, 0, 200, 10, 10, 10, 200, 10, 10, 10, 200] + [0, 0, 0] * 252)
        im.save(path)
    return path, ids


@pytest.mark.parametrize("kind", ["grey", "wide", "palette"])
def test_reader_returns_the_ids_written(tmp_path, kind):
    path, ids = _write(tmp_path, kind)
    got = read_label_png(path)
    assert got.shape == (H, W)
    np.testing.assert_array_equal(got, ids)


def test_palette_ids_match_detectron2_evaluator_not_its_training_loader(tmp_path):
    """detectron2's SemSegEvaluator reads np.array(Image.open(f)) (the indices): d2seg agrees;
    its training loader's convert("L") gives grey levels of the colours, which d2seg avoids."""
    from detectron2.data.detection_utils import read_image

    path, ids = _write(tmp_path, "palette")
    with Image.open(path) as im:
        evaluator_view = np.array(im, dtype=np.int64)
    np.testing.assert_array_equal(read_label_png(path), evaluator_view)
    assert not np.array_equal(read_image(str(path), "L").squeeze(2), ids)


@pytest.mark.parametrize("kind", ["grey", "wide", "palette"])
def test_training_mapper_and_offline_panoptic_read_the_same_ids(tmp_path, kind):
    """The training mapper's sem_seg tensor and the offline panoptic combiner's semantic input
    equal the ids written, for each kind of label file."""
    from detectron2.config import get_cfg

    from d2seg.data.mappers import D2SegDatasetMapper
    from d2seg.panoptic.offline import load_semantic

    path, ids = _write(tmp_path, kind)
    Image.new("RGB", (W, H), (90, 90, 90)).save(tmp_path / "image.jpg")
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TEST = H  # resize to the same size: labels pass unchanged
    cfg.INPUT.MAX_SIZE_TEST = 1000
    mapper = D2SegDatasetMapper(cfg, is_train=False)
    record = {"file_name": str(tmp_path / "image.jpg"), "sem_seg_file_name": str(path),
              "height": H, "width": W, "image_id": 0}
    trained = mapper(record)["sem_seg"].numpy()
    np.testing.assert_array_equal(trained, ids)
    np.testing.assert_array_equal(
        load_semantic(tmp_path, {"file_name": f"{kind}.jpg"}, categories=[]), ids)


def test_colour_png_is_refused_with_one_line(tmp_path):
    path = tmp_path / "colour.png"
    Image.new("RGB", (W, H), (1, 2, 3)).save(path)
    with pytest.raises(D2SegError) as e:
        read_label_png(path)
    assert str(path) in str(e.value) and "colour channels" in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_and_broken_files_name_the_file(tmp_path):
    from d2seg.io.images import UnreadableImageError

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    for path in (tmp_path / "missing.png", broken):
        with pytest.raises(UnreadableImageError) as e:
            read_label_png(path)
        assert str(path) in str(e.value) and "label PNG unreadable" in str(e.value)
