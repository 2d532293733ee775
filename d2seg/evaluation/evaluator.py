"""detectron2's COCOEvaluator, scored by d2seg's COCO evaluation (identical to pycocotools).

detectron2 gathers the predictions, converts them to COCO results and writes
``coco_instances_results.json`` as always; the bbox/segm scoring goes through
:func:`d2seg.evaluation.fast_coco.evaluate` instead of ``loadRes`` + ``COCOeval_opt``, and the
full report (12 numbers, per-class AP, precision/recall arrays) is kept beside the results
(``coco_report.json`` + ``coco_report.npz``) so that ``d2seg eval --config-file`` reports it
without scoring the same results a second time. Keypoints and non-default ``maxDets`` fall back to
detectron2's own path.
"""

from __future__ import annotations

import contextlib
import itertools
import os

import numpy as np
from detectron2.evaluation import COCOEvaluator, SemSegEvaluator
from detectron2.utils import comm

from d2seg.evaluation import coco as coco_report
from d2seg.evaluation import fast_coco
from d2seg.io.files import write_json_atomic

RESULTS_JSON = "coco_instances_results.json"


class _Scored:
    """What detectron2's ``_derive_coco_results`` reads from a COCOeval: stats, eval, params."""

    def __init__(self, evaluation):
        self.stats = evaluation.stats
        self.eval = evaluation.eval
        self.params = evaluation.params


class CocoEvaluator(COCOEvaluator):
    """COCOEvaluator whose bbox/segm AP comes from d2seg's fast, pycocotools-exact path."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.report: dict | None = None  # the d2seg report of the last evaluate()

    def _eval_predictions(self, predictions, img_ids=None):
        results = list(itertools.chain(*[x["instances"] for x in predictions]))
        tasks = self._tasks or self._tasks_from_predictions(results)
        if "keypoints" in tasks or list(self._max_dets_per_image) != [1, 10, 100]:
            return super()._eval_predictions(predictions, img_ids=img_ids)
        self._logger.info("Preparing results for COCO format ...")
        if self._output_dir:  # never leave a report of earlier results beside new ones
            for name in (coco_report.REPORT_JSON, coco_report.REPORT_ARRAYS):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self._output_dir, name))
        to_dataset_id = getattr(self._metadata, "thing_dataset_id_to_contiguous_id", None)
        if to_dataset_id:
            reverse = {v: k for k, v in to_dataset_id.items()}
            for r in results:
                if r["category_id"] not in reverse:
                    raise ValueError(f"a prediction has class {r['category_id']}, but the dataset "
                                     f"has {len(reverse)} classes")
                r["category_id"] = reverse[r["category_id"]]
        if self._output_dir:
            path = os.path.join(self._output_dir, RESULTS_JSON)
            self._logger.info("Saving results to %s", path)
            write_json_atomic(path, results)
        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return
        self._logger.info("Evaluating predictions with d2seg's COCO evaluation (pycocotools-exact) ...")
        report = {}
        for task in sorted(tasks):
            key = "segmentation" if task == "segm" else "bbox"
            dets = [r for r in results if key in r]
            if not dets:
                self._results[task] = self._derive_coco_results(None, task)
                report[task] = {"stats": {n: -1.0 for n in coco_report.STAT_NAMES},
                                "per_class": {}, "per_class_by_id": {}, "num_detections": 0}
                continue
            evaluation = fast_coco.evaluate(self._coco_api, dets, task, image_ids=img_ids)
            self._results[task] = self._derive_coco_results(
                _Scored(evaluation), task, class_names=self._metadata.get("thing_classes"))
            report[task] = coco_report.report_from_evaluation(self._coco_api, evaluation, len(dets))
        self.report = report
        if self._output_dir:
            coco_report.save_report(report, self._output_dir)


class SemSegReportEvaluator(SemSegEvaluator):
    """detectron2's SemSegEvaluator (same numbers), plus what the report needs: each image's
    mIoU and pixel accuracy and the class confusion matrix, kept as ``sem_seg_report.json`` in
    the output folder (d2seg.evaluation.semantic_report), and the predicted label maps of the
    worst images by mIoU (``sem_seg_worst/*.png``), so that the report can draw them."""

    def __init__(self, *args, worst: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        from detectron2.data import MetadataCatalog

        from d2seg.evaluation import semantic_report

        self._worst_count = semantic_report.WORST if worst is None else worst
        meta = MetadataCatalog.get(self._dataset_name)
        colours = meta.get("stuff_colors", None)
        self._class_colors = [list(map(int, c)) for c in colours] \
            if colours is not None and len(colours) == self._num_classes else None

    def reset(self):
        super().reset()
        self._per_image: list[dict] = []
        self._worst: list[tuple] = []  # (sort key, input file name, predicted label map)

    def process(self, inputs, outputs):
        from d2seg.evaluation.semantic_report import image_scores, worst_key

        n = self._num_classes
        for inp, out in zip(inputs, outputs):
            before = self._conf_matrix.copy()
            super().process([inp], [out])
            # detectron2's matrix: rows prediction, columns ground truth, last row/column the
            # ignore label; this image's share, turned to rows ground truth
            image = (self._conf_matrix - before)[:n, :n].T
            row = {"file_name": os.path.basename(inp.get("file_name", "")), **image_scores(image)}
            self._per_image.append(row)
            key = worst_key(row)
            if self._worst_count > 0 and (len(self._worst) < self._worst_count
                                          or key < self._worst[-1][0]):
                pred = out["sem_seg"].argmax(dim=0).to(self._cpu_device).numpy()
                self._worst.append((key, inp["file_name"], pred.astype(
                    np.uint8 if n <= 256 else np.uint16)))
                self._worst.sort(key=lambda w: w[0])
                del self._worst[self._worst_count:]

    def evaluate(self):
        from d2seg.evaluation import semantic_report

        if self._distributed:
            per_image = list(itertools.chain(*comm.all_gather(self._per_image)))
            worst = sorted(itertools.chain(*comm.all_gather(self._worst)), key=lambda w: w[0])
        else:
            per_image, worst = self._per_image, self._worst
        results = super().evaluate()  # gathers the confusion matrix; None on other ranks
        if results is None or not comm.is_main_process():
            return results
        n = self._num_classes
        files = self._save_worst(worst[:self._worst_count]) if self._output_dir else {}
        report = semantic_report.build_report(
            self._conf_matrix[:n, :n].T, self._class_names, per_image, worst=self._worst_count,
            worst_files=files, class_colors=self._class_colors, ignore_label=self._ignore_label)
        if self._output_dir:
            write_json_atomic(os.path.join(self._output_dir, semantic_report.REPORT_JSON), report,
                              indent=1)
        return results

    def _save_worst(self, worst: list) -> dict:
        """The worst images' predicted label maps as PNGs under the output folder; returns
        file name -> {"image", "ground_truth", "prediction"} for the report."""
        from d2seg.evaluation.semantic_report import WORST_PREDICTIONS
        from d2seg.io.files import write_png_atomic

        folder = os.path.join(self._output_dir, WORST_PREDICTIONS)
        if os.path.isdir(folder):  # the previous evaluation's worst images
            for old in os.listdir(folder):
                if old.endswith(".png"):
                    os.remove(os.path.join(folder, old))
        files = {}
        for rank, (key, file_name, pred) in enumerate(worst, 1):
            name = f"{rank:02d}_{os.path.splitext(os.path.basename(file_name))[0]}.png"
            write_png_atomic(os.path.join(folder, name), pred)
            files[key[1]] = {"image": file_name, "ground_truth": self.input_file_to_gt_file[file_name],
                             "prediction": f"{WORST_PREDICTIONS}/{name}"}
        return files
