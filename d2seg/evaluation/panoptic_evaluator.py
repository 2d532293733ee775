"""detectron2's COCOPanopticEvaluator, scored by d2seg's PQ instead of panopticapi's pq_compute.

The numbers are identical (tests/panoptic compare them to panopticapi's to the last bit), but
panopticapi's pq_compute opens a multiprocessing.Pool it never closes; inside a training
process its idle worker can outlive the run and block the interpreter's exit.
"""

from __future__ import annotations

from detectron2.evaluation import COCOPanopticEvaluator

from d2seg.evaluation.panoptic_quality import pq_compute_folders


def _pq_compute(gt_json_file, pred_json_file, gt_folder=None, pred_folder=None):
    """panopticapi's pq_compute signature, d2seg's implementation."""
    return pq_compute_folders(gt_json_file, gt_folder, pred_json_file, pred_folder, progress=False)


class PanopticEvaluator(COCOPanopticEvaluator):
    """Everything as detectron2's evaluator (PNG export, gathering, tables), PQ by d2seg."""

    def evaluate(self):
        import panopticapi.evaluation as reference

        original = reference.pq_compute
        reference.pq_compute = _pq_compute  # detectron2 imports it inside evaluate()
        try:
            return super().evaluate()
        finally:
            reference.pq_compute = original
