"""detectron2 works without importing d2seg first, in any import order, in a fresh interpreter."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

MODULES = ("detectron2.layers", "detectron2.modeling", "detectron2.evaluation")


@pytest.mark.parametrize("order", list(itertools.permutations(MODULES)), ids="->".join)
def test_any_import_order_without_d2seg(order):
    code = "\n".join(
        ["import sys", "assert 'd2seg' not in sys.modules"]
        + [f"import {m}" for m in order]
        + [
            "import torch",
            "boxes = torch.tensor([[5., 5, 4, 2, 30], [5., 5, 4, 2, 30], [20., 20, 2, 2, 0]])",
            "keep = torch.ops.detectron2.nms_rotated(boxes, torch.tensor([.9, .8, .7]), 0.5)",
            "assert keep.tolist() == [0, 2], keep",
            "from detectron2.layers import DeformConv, ModulatedDeformConv",
            "from detectron2.evaluation.fast_eval_api import COCOeval_opt",
        ]
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_collect_env_reports_the_pytorch_operators():
    from detectron2.utils.collect_env import collect_env_info

    info = collect_env_info()
    assert "d2seg PyTorch operators" in info
    assert "not built correctly" not in info
