"""detectron2's COCOPanopticEvaluator, scored by d2seg's PQ and keeping what it scored.

The numbers are identical to panopticapi's (tests/panoptic compare them to the last bit), but
panopticapi's pq_compute opens a multiprocessing.Pool it never closes; inside a training
process its idle worker can outlive the run and block the interpreter's exit.

detectron2 writes the predicted PNGs to a temporary folder and deletes it. With an output
folder this evaluator keeps them, in the COCO panoptic layout, beside the full results:

    <output_dir>/predictions.json   COCO panoptic JSON (the ground truth's images, categories)
    <output_dir>/predictions/       one PNG per image
    <output_dir>/pq.json            PQ/SQ/RQ for All/Things/Stuff, per class, tp/fp/fn counts
    <output_dir>/pq.md              the same as a Markdown table
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
from collections import OrderedDict

from detectron2.evaluation import COCOPanopticEvaluator
from detectron2.evaluation.panoptic_evaluation import _print_panoptic_results
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from d2seg.evaluation.panoptic_quality import pq_compute_folders, write_pq_report
from d2seg.io.files import write_bytes_atomic, write_json_atomic
from d2seg.io.json import read_json

PREDICTIONS_JSON = "predictions.json"
PREDICTIONS_DIR = "predictions"
PQ_JSON = "pq.json"
PQ_MD = "pq.md"


def summary_metrics(pq: dict) -> dict:
    """detectron2's ``panoptic_seg`` numbers (percent) from a PQ result."""
    res = {}
    for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        for key in ("pq", "sq", "rq"):
            res[key.upper() + suffix] = 100 * pq[group][key]
    return res


class PanopticEvaluator(COCOPanopticEvaluator):
    """Everything as detectron2's evaluator (PNG encoding, gathering, the summary), PQ by d2seg,
    the predictions and the per-class results kept in the output folder."""

    def __init__(self, dataset_name: str, output_dir: str | None = None):
        super().__init__(dataset_name, output_dir)
        self.pq_results: dict | None = None  # the full result of the last evaluate()

    def evaluate(self):
        comm.synchronize()
        predictions = list(itertools.chain(*comm.gather(self._predictions)))
        if not comm.is_main_process():
            return None

        gt_json = PathManager.get_local_path(self._metadata.panoptic_json)
        gt_folder = PathManager.get_local_path(self._metadata.panoptic_root)
        data = read_json(gt_json, "panoptic ground-truth JSON file")
        with contextlib.ExitStack() as stack:
            if self._output_dir:
                pred_json = os.path.join(self._output_dir, PREDICTIONS_JSON)
                pred_dir = os.path.join(self._output_dir, PREDICTIONS_DIR)
                os.makedirs(pred_dir, exist_ok=True)
            else:
                pred_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="panoptic_eval"))
                pred_json = os.path.join(pred_dir, PREDICTIONS_JSON)
            annotations = []
            for p in predictions:  # atomic: an interrupted run leaves no half-written file
                p = dict(p)
                write_bytes_atomic(os.path.join(pred_dir, p["file_name"]), p.pop("png_string"))
                annotations.append(p)
            data["annotations"] = annotations
            write_json_atomic(pred_json, data)
            pq = pq_compute_folders(gt_json, gt_folder, pred_json, pred_dir, progress=False)

        self.pq_results = pq
        if self._output_dir:
            write_pq_report(pq, data.get("categories") or [], self._output_dir)
        _print_panoptic_results(pq)
        return OrderedDict({"panoptic_seg": summary_metrics(pq)})
