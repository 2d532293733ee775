"""The torch-free combination (d2seg panoptic combine) gives what combine_panoptic gives."""

from __future__ import annotations

import numpy as np
import pytest

from d2seg.panoptic.combine_numpy import combine_panoptic_numpy

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("seed", range(25))
def test_numpy_combination_equals_the_torch_one(seed):
    from d2seg.panoptic.combine import InstancePredictions, combine_panoptic

    g = np.random.default_rng(seed)
    h, w = int(g.integers(8, 40)), int(g.integers(8, 40))
    n = int(g.integers(0, 7))
    labels = [0, 1, 2, 3, 7, 255] if seed % 3 else [-5, 0, 2, 1 << 22]
    sem = g.choice(labels, size=(h, w)).astype(np.int64)
    masks = g.random((n, h, w)) < g.uniform(0.05, 0.6)
    scores = g.permutation(np.linspace(0.05, 0.95, n)).astype(np.float32)  # distinct scores
    classes = g.integers(0, 5, size=n)
    skip = [0] if seed % 2 else sorted({0, 255} | {int(v) for v in g.choice(labels, 2)})
    kw = dict(score_threshold=float(g.uniform(0.1, 0.6)), overlap_threshold=float(g.uniform(0.2, 0.8)),
              stuff_area_threshold=int(g.integers(1, 30)), skip_semantic_labels=skip)
    ref = combine_panoptic(InstancePredictions(torch.from_numpy(scores), torch.from_numpy(classes),
                                               torch.from_numpy(masks)), torch.from_numpy(sem), **kw)
    pan, segments = combine_panoptic_numpy(scores, classes, masks, sem, **kw)
    assert pan.dtype == np.int32 and np.array_equal(pan, ref.panoptic_seg.numpy())
    assert segments == ref.segments_info
