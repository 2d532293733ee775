"""The model ``d2seg label`` runs: a checkpoint with its config (PyTorch) or an export folder
(on its format's backend: onnxruntime, or torchscript), with the classes it predicts and their
dataset category ids."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from d2seg.errors import D2SegError


@dataclass
class LabelModel:
    predict_batch: Callable      # list of BGR images -> one output dict per image
    class_names: list[str]       # by class index
    category_ids: list[int]      # by class index: the dataset's category id

    @property
    def contiguous_to_category(self) -> dict:
        return dict(enumerate(self.category_ids))

    def categories(self) -> list[dict]:
        return [{"id": int(c), "name": n, "supercategory": n}
                for c, n in sorted(zip(self.category_ids, self.class_names))]


def load_model(config_file=None, weights=None, model_dir=None, dataset=None, opts=(),
               score_thresh: float | None = None, command: str = "d2seg label") -> LabelModel:
    """A :class:`LabelModel` from ``config_file`` + ``weights`` or from ``model_dir``.

    The classes of a PyTorch model come from ``dataset`` (a registered dataset), else from the
    config's first training dataset (a run folder's config.yaml names it). ``score_thresh``
    lowers the model's own test threshold to it when that is higher, so no detection the
    caller wants is dropped inside the model. A model that predicts no masks is an error."""
    if model_dir:
        if config_file or weights or dataset or opts:
            raise D2SegError("--model takes the classes and the config from the export folder",
                             where="--model",
                             hint="drop --config-file/--weights/--dataset/--opts, or --model")
        from d2seg.deploy import load

        model = load(model_dir)
        names = model.class_names
        if not names:
            raise D2SegError("the export folder names no classes", file=str(model_dir),
                             hint="export with --dataset NAME (the training dataset)")
        ids = model.category_ids or list(range(1, len(names) + 1))
        if model.score_thresh is not None and score_thresh is not None and \
                float(model.score_thresh) > score_thresh:
            raise D2SegError(f"the model was exported with score threshold {model.score_thresh}"
                             f", above the requested {score_thresh}", file=str(model_dir),
                             hint="raise --score-thresh or re-export with a lower "
                                  "MODEL.ROI_HEADS.SCORE_THRESH_TEST")
        return LabelModel(model.predict_batch, list(names), [int(i) for i in ids])
    if not (config_file and weights):
        raise D2SegError("which model? pass --config-file YAML --weights FILE, or --model DIR "
                         "(an export folder)", where=command)
    from d2seg.config import load_config
    from d2seg.config.classes import dataset_classes
    from d2seg.engine.predict import BatchPredictor
    from d2seg.data.register import register_datasets
    from d2seg.config.prepare import prepare_config

    register_datasets()
    cfg = load_config(config_file, list(opts))
    dataset = dataset or (cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else None)
    if not dataset:
        raise D2SegError("the config names no training dataset, so the classes are unknown",
                         file=str(config_file), hint="pass --dataset NAME (the training dataset)")
    cfg.defrost()
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (dataset,), ()
    cfg = prepare_config(cfg)
    if not cfg.MODEL.MASK_ON:
        raise D2SegError("the model predicts no masks (MODEL.MASK_ON is False)",
                         file=str(config_file), hint="pre-annotations need a Mask R-CNN")
    if score_thresh is not None and cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST > score_thresh:
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = float(score_thresh)
    classes = dataset_classes(dataset)
    names = classes.names
    if not names:
        raise D2SegError("the dataset has no thing classes", where=dataset,
                         hint="pass --dataset NAME (an instances dataset)")
    ids = classes.category_ids or list(range(1, len(names) + 1))
    cfg.freeze()
    return LabelModel(BatchPredictor(cfg, weights), list(names), ids)
