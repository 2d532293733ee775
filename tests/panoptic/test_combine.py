"""combine_panoptic against detectron2's own combine_semantic_and_instance_outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from d2seg.panoptic.combine import InstancePredictions, combine_panoptic

d2_panoptic = pytest.importorskip("detectron2.modeling.meta_arch.panoptic_fpn")


def _random_case(seed: int):
    """Random blobs and boxes (often overlapping), random scores with ties, random stuff."""
    g = np.random.default_rng(seed)
    h, w = int(g.integers(1, 90)), int(g.integers(1, 90))
    n = int(g.integers(0, 25))
    yy, xx = np.mgrid[:h, :w]
    masks = np.zeros((n, h, w), dtype=bool)
    for k in range(n):
        kind = g.integers(0, 4)
        if kind == 0:  # ellipse
            cy, cx = g.uniform(0, h), g.uniform(0, w)
            ry, rx = g.uniform(1, h), g.uniform(1, w)
            masks[k] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        elif kind == 1:  # box
            y0, x0 = g.integers(0, h), g.integers(0, w)
            masks[k, y0:y0 + g.integers(1, h + 1), x0:x0 + g.integers(1, w + 1)] = True
        elif kind == 2:  # scattered pixels
            masks[k] = g.random((h, w)) < g.uniform(0, 0.5)
        # kind 3: empty mask
    scores = g.choice([0.2, 0.5, 0.7, 0.9, 0.95], size=n) if g.random() < 0.5 \
        else g.random(n)
    classes = g.integers(0, 5, size=n)
    n_labels = int(g.integers(1, 8))
    style = g.integers(0, 3)
    if style == 0:  # all things
        sem = np.zeros((h, w), dtype=np.int64)
    elif style == 1:  # blocks of labels
        sem = np.kron(g.integers(0, n_labels, size=(h // 8 + 1, w // 8 + 1)),
                      np.ones((8, 8), dtype=np.int64))[:h, :w]
    else:
        sem = g.integers(0, n_labels, size=(h, w))
    if g.random() < 0.2:  # all stuff: no instances at all
        masks, scores, classes = masks[:0], scores[:0], classes[:0]
    inst = InstancePredictions(torch.tensor(scores, dtype=torch.float32),
                               torch.tensor(classes), torch.from_numpy(masks))
    thresholds = dict(overlap_threshold=float(g.choice([0.0, 0.3, 0.5, 1.0])),
                      stuff_area_thresh=float(g.choice([0, 1, 20, 200, 4096])),
                      instances_score_thresh=float(g.choice([0.0, 0.5, 0.8])))
    return inst, torch.from_numpy(sem), thresholds


def _reference(inst, sem, t):
    from detectron2.structures import Instances

    d2_inst = Instances(tuple(sem.shape))
    d2_inst.scores, d2_inst.pred_classes, d2_inst.pred_masks = \
        inst.scores, inst.pred_classes, inst.pred_masks
    return d2_panoptic.combine_semantic_and_instance_outputs(
        d2_inst, sem, t["overlap_threshold"], t["stuff_area_thresh"], t["instances_score_thresh"])


def _ours(inst, sem, t):
    return combine_panoptic(inst, sem, score_threshold=t["instances_score_thresh"],
                            overlap_threshold=t["overlap_threshold"],
                            stuff_area_threshold=t["stuff_area_thresh"])


@pytest.mark.parametrize("seed", range(300))
def test_identical_to_detectron2_on_random_cases(seed):
    inst, sem, t = _random_case(seed)
    ref_map, ref_info = _reference(inst, sem, t)
    out = _ours(inst, sem, t)
    assert out.panoptic_seg.dtype == ref_map.dtype
    assert torch.equal(out.panoptic_seg, ref_map)
    assert out.segments_info == ref_info


def test_empty_instances_and_default_thresholds():
    g = np.random.default_rng(0)
    sem = torch.from_numpy(np.kron(g.integers(0, 4, size=(4, 4)), np.ones((64, 64), np.int64)))
    inst = InstancePredictions(torch.zeros(0), torch.zeros(0, dtype=torch.int64),
                               torch.zeros((0, 256, 256), dtype=torch.bool))
    ref = d2_panoptic.combine_semantic_and_instance_outputs(inst, sem, 0.5, 4096, 0.5)
    out = combine_panoptic(inst, sem)
    assert torch.equal(out.panoptic_seg, ref[0]) and out.segments_info == ref[1]
    assert all(not s["isthing"] for s in out.segments_info)


def test_logits_give_the_argmax_labels():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 40, 50, generator=g)
    masks = torch.rand(3, 40, 50, generator=g) > 0.6
    inst = InstancePredictions(torch.tensor([0.9, 0.8, 0.7]), torch.tensor([1, 2, 3]), masks)
    a = combine_panoptic(inst, logits, stuff_area_threshold=10)
    b = combine_panoptic(inst, logits.softmax(0), stuff_area_threshold=10)
    ref = d2_panoptic.combine_semantic_and_instance_outputs(inst, logits.argmax(0), 0.5, 10, 0.5)
    assert torch.equal(a.panoptic_seg, ref[0]) and a.segments_info == ref[1]
    assert torch.equal(b.panoptic_seg, ref[0])


def _brute_force_full_label_map(masks, scores, classes, sem, skip, score_t, overlap_t, area_t):
    """The heuristic written pixel by pixel from its description (panopticapi's semantics)."""
    h, w = sem.shape
    pan = np.zeros((h, w), np.int64)
    info = []
    for k in sorted(range(len(scores)), key=lambda i: -scores[i]):
        if scores[k] < score_t or masks[k].sum() == 0:
            continue
        taken = sum(1 for y in range(h) for x in range(w) if masks[k][y, x] and pan[y, x])
        if taken / masks[k].sum() > overlap_t:
            continue
        info.append((len(info) + 1, int(classes[k]), True))
        for y in range(h):
            for x in range(w):
                if masks[k][y, x] and not pan[y, x]:
                    pan[y, x] = len(info)
    for label in sorted(set(sem.flatten().tolist()) - set(skip)):
        free = [(y, x) for y in range(h) for x in range(w) if sem[y, x] == label and not pan[y, x]]
        if len(free) < area_t:
            continue
        info.append((len(info) + 1, label, False))
        for y, x in free:
            pan[y, x] = len(info)
    return pan, info


@pytest.mark.parametrize("seed", range(20))
def test_full_label_map_never_fills_stuff_with_things(seed):
    g = np.random.default_rng(100 + seed)
    h, w = 24, 30
    things, void = {3, 4}, 255
    sem = g.choice([1, 2, 3, 4, void], size=(h, w))
    masks = g.random((4, h, w)) < 0.3
    scores = g.random(4)
    classes = g.choice(sorted(things), size=4)
    inst = InstancePredictions(torch.tensor(scores, dtype=torch.float32), torch.tensor(classes),
                               torch.from_numpy(masks))
    out = combine_panoptic(inst, torch.from_numpy(sem), score_threshold=0.3,
                           overlap_threshold=0.5, stuff_area_threshold=15,
                           skip_semantic_labels=sorted(things | {void}))
    pan, info = _brute_force_full_label_map(masks, np.float32(scores), classes, sem,
                                            things | {void}, 0.3, 0.5, 15)
    assert np.array_equal(out.panoptic_seg.numpy(), pan)
    assert [(s["id"], s["category_id"], s["isthing"]) for s in out.segments_info] == info
    stuff_ids = [s["id"] for s in out.segments_info if not s["isthing"]]
    painted_stuff = np.isin(out.panoptic_seg.numpy(), stuff_ids)
    assert not np.isin(sem[painted_stuff], list(things | {void})).any()
