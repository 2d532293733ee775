"""``d2seg predict``'s outputs, with a stand-in model that returns a hand-made semantic output:
colours as the metadata gives them (RGB) and as ``d2seg visualize`` draws them, one output per
input even when two inputs share a file name, and the results file written without following a
planted symlink; a failed picture write is one error line naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from d2seg.engine import predict as predict_mod
from d2seg.errors import D2SegError
from d2seg.io.files import is_leftover_temporary

NAMES = ["road", "sky"]
COLORS_RGB = [(128, 0, 0), (0, 0, 200)]  # detectron2 metadata order: RGB
H, W = 60, 80


def _label_map() -> np.ndarray:
    """Class 0 on the left half, class 1 on the right half."""
    labels = np.zeros((H, W), np.int64)
    labels[:, W // 2:] = 1
    return labels


def _logits(labels: np.ndarray) -> torch.Tensor:
    """(C, H, W) scores whose argmax is ``labels``, as a semantic model's ``sem_seg``."""
    return torch.nn.functional.one_hot(torch.as_tensor(labels), len(NAMES)).permute(2, 0, 1).float()


class _StandInPredictor:
    """Takes the place of ``BatchPredictor``: every image gets the hand-made label map."""

    def __init__(self, cfg, weights=None):
        pass

    def __call__(self, images):
        return [{"sem_seg": _logits(_label_map())} for _ in images]


def _run_predict(tmp_path, monkeypatch, sources, **kwargs):
    monkeypatch.setattr(predict_mod, "BatchPredictor", _StandInPredictor)
    out = tmp_path / "out"
    summary = predict_mod.predict(None, [str(s) for s in sources], out, progress=False,
                                  stuff_names=NAMES, stuff_colors=COLORS_RGB, **kwargs)
    return out, summary


def _no_leftovers(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if is_leftover_temporary(p.name)
                or p.name.endswith(".tmp")]


def test_semantic_picture_has_the_metadata_rgb_colours_and_equals_visualize(tmp_path, monkeypatch):
    """On a black image with alpha 0.5, the interior of a class whose metadata colour is RGB
    (128, 0, 0) reads back (through PIL, which gives RGB) as (64, 0, 0), and (0, 0, 200) as
    (0, 0, 100): hand-computed blends. The whole written picture equals, pixel for pixel, what
    ``d2seg visualize`` draws for the same label map as ground truth with the same metadata."""
    from d2seg.visualize.datasets import ClassSpace, draw_ground_truth

    (tmp_path / "in").mkdir()
    black = np.zeros((H, W, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "in" / "im.png"), black)
    out, _ = _run_predict(tmp_path, monkeypatch, [tmp_path / "in" / "im.png"])
    written_rgb = np.asarray(Image.open(out / "rendered" / "im.png").convert("RGB"))
    assert tuple(written_rgb[3, 3]) == (64, 0, 0)            # class 0, left half, corner
    assert tuple(written_rgb[H - 4, W - 4]) == (0, 0, 100)   # class 1, right half, corner

    label_png = tmp_path / "labels.png"
    cv2.imwrite(str(label_png), _label_map().astype(np.uint8))
    reference_bgr, _ = draw_ground_truth(black, {"sem_seg_file_name": str(label_png)}, "semantic",
                                         ClassSpace(NAMES, COLORS_RGB))
    assert np.array_equal(written_rgb, reference_bgr[:, :, ::-1])


def test_draw_output_equals_visualize_for_a_model_output():
    """``_draw_output`` on a model-style ``sem_seg`` (scores) equals ``draw_semantic`` with the
    colours visualize's ClassSpace derives from the same RGB metadata, on a non-uniform image."""
    from d2seg.visualize.datasets import ClassSpace
    from d2seg.visualize.render import draw_semantic

    image = np.random.default_rng(0).integers(0, 255, (H, W, 3), np.uint8)
    drawn = predict_mod._draw_output(image, {"sem_seg": _logits(_label_map())}, 0.5, None,
                                     NAMES, COLORS_RGB)
    space = ClassSpace(NAMES, COLORS_RGB)
    assert np.array_equal(drawn, draw_semantic(image, _label_map(), space.names, space.colors))


def test_same_file_name_in_two_folders_gives_two_outputs(tmp_path, monkeypatch):
    """``a/x.png`` and ``b/x.png`` (different pictures): two rendered pictures and two label PNGs,
    ``x`` and ``x_2`` in input order, each drawn from its own input, and images.json says which
    input each came from."""
    inputs = []
    for folder, value in (("a", 0), ("b", 255)):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "x.png"), np.full((H, W, 3), value, np.uint8))
        inputs.append(tmp_path / folder / "x.png")
    out, summary = _run_predict(tmp_path, monkeypatch, inputs)
    assert summary["images"] == 2
    assert sorted(p.name for p in (out / "rendered").iterdir()) == ["x.png", "x_2.png"]
    assert sorted(p.name for p in (out / "semantic").iterdir()) == ["x.png", "x_2.png"]
    first = cv2.imread(str(out / "rendered" / "x.png"))
    second = cv2.imread(str(out / "rendered" / "x_2.png"))
    assert not np.array_equal(first, second)
    assert first[3, 3, 2] == 64 and second[3, 3, 2] == round(0.5 * 255 + 0.5 * 128)  # red, BGR
    index = json.loads((out / "images.json").read_text())
    assert [(e["source"], e["rendered_file_name"], e["sem_seg_file_name"]) for e in index] == [
        (str(inputs[0]), "rendered/x.png", "semantic/x.png"),
        (str(inputs[1]), "rendered/x_2.png", "semantic/x_2.png")]
    assert _no_leftovers(out)


def test_output_stems_are_unique():
    """Hand-checked cases: a repeated stem gets _2, _3 in input order (also across extensions
    and case), a stem that an earlier suffix took moves on, videos keep theirs, and an image
    named like a video's frame output moves away from it."""
    stems = predict_mod.output_stems([Path(p) for p in [
        "a/x.png", "b/x.png", "c/x.jpg", "x_2.png", "d/X.png", "clip.mp4", "e/clip.mp4",
        "clip_000003.png", "clip.png", "y.png"]])
    assert stems == ["x", "x_2", "x_3", "x_2_2", "X_4", "clip", "clip_2", "clip_000003_2",
                     "clip", "y"]


def test_results_writer_does_not_follow_a_planted_symlink(tmp_path, monkeypatch):
    """A symlink planted at the old fixed temporary name (``results.json.tmp``), and one at the
    name the writer draws first: the file they point to is untouched, the results file is a
    regular file holding the list, and no temporary file is left."""
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    (out / "results.json.tmp").symlink_to(victim)
    draws = iter(["aaaaaaaa", "bbbbbbbb"])
    monkeypatch.setattr("d2seg.io.files.secrets.token_hex", lambda n: next(draws))
    (out / ".results.json.aaaaaaaa.d2seg-tmp").symlink_to(victim)

    writer = predict_mod._JsonListWriter(out / "results.json")
    writer.extend([{"image_id": 1}, {"image_id": 2}])
    writer.commit()
    writer.discard()
    assert victim.read_text() == "untouched"
    assert not (out / "results.json").is_symlink()
    assert json.loads((out / "results.json").read_text()) == [{"image_id": 1}, {"image_id": 2}]
    assert sorted(p.name for p in out.iterdir()) == [".results.json.aaaaaaaa.d2seg-tmp",
                                                     "results.json", "results.json.tmp"]


def test_two_writers_of_one_results_file_do_not_mix(tmp_path):
    """Two runs writing the same results file at once: each has its own temporary file, so the
    file is one run's complete list, never a mix."""
    first = predict_mod._JsonListWriter(tmp_path / "results.json")
    second = predict_mod._JsonListWriter(tmp_path / "results.json")
    first.extend([1, 2, 3])
    second.extend(["a"])
    first.commit()
    assert json.loads((tmp_path / "results.json").read_text()) == [1, 2, 3]
    second.commit()
    assert json.loads((tmp_path / "results.json").read_text()) == ["a"]


def test_failed_picture_write_is_one_line_naming_the_file(tmp_path, monkeypatch):
    """The output's ``rendered`` place is a file, so the picture cannot be written: one
    D2SegError line naming the picture's path (OpenCV's imwrite only returned False)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "rendered").write_text("not a folder")
    frame = predict_mod.Frame(1, "im.png", np.zeros((H, W, 3), np.uint8), stem="im")
    with pytest.raises(D2SegError) as info:
        predict_mod._write_rendered(out, frame, frame.image, {})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{out / 'rendered' / 'im.png'}: could not write the image")
