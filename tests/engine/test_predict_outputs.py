"""``d2seg predict``'s outputs, with a stand-in model that returns a hand-made semantic output:
colours as the metadata gives them (RGB) and as ``d2seg visualize`` draws them."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from PIL import Image

from d2seg.engine import predict as predict_mod

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
