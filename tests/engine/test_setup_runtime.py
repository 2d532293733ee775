"""``d2seg train``'s setup applies what detectron2's ``default_setup`` would: CUDNN_BENCHMARK
reaches torch (it was silently ignored), and the run's log names the versions it used."""

from __future__ import annotations

from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def test_cudnn_benchmark_is_applied_and_versions_logged(tmp_path):
    from d2seg.engine import run

    before = torch.backends.cudnn.benchmark
    try:
        for value in (True, False):
            run.setup(REPO / "configs/instance/mask_rcnn_MNV2_FPN_cpu_quick.yaml",
                      ["CUDNN_BENCHMARK", str(value)], output_dir=tmp_path / str(value))
            assert torch.backends.cudnn.benchmark is value
    finally:
        torch.backends.cudnn.benchmark = before
    log = (tmp_path / "True" / "log.txt").read_text()
    assert f"torch {torch.__version__}" in log
