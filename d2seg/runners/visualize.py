"""``d2seg visualize --dataset NAME --config-file CFG --weights W``: a model's predictions drawn
beside the dataset's ground truth. This runner builds the model (config layer, engine) and hands
it to the dataset drawer in :mod:`d2seg.visualize.datasets`, which knows nothing of models.
"""

from __future__ import annotations

from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog

from d2seg.config import load_config
from d2seg.config.prepare import prepare_config
from d2seg.engine.predict import BatchPredictor
from d2seg.errors import D2SegError
from d2seg.visualize import datasets
from d2seg.visualize.datasets import ClassSpace, draw_found
from d2seg.visualize.inputs import instances_from_detectron2
from d2seg.visualize.render import draw_panoptic, draw_semantic


def visualize_dataset(name: str, out_dir, *, config_file=None, overrides=(), cfg=None,
                      weights=None, **options) -> list[Path]:
    """:func:`d2seg.visualize.datasets.visualize_dataset` (same ``options``: ``pred``, ``n``,
    ``score_thresh``, ...), with predictions from a model when ``config_file`` (+ ``overrides``)
    or a ready ``cfg`` or ``weights`` (default the config's MODEL.WEIGHTS) is given."""
    if cfg is None and config_file is None and weights is None:
        return datasets.visualize_dataset(name, out_dir, **options)
    if options.get("pred") is not None:
        raise D2SegError("predictions from a file and from a model: give one",
                         hint="--pred RESULTS.json, or --config-file CFG --weights FILE")
    if cfg is None:
        if config_file is None:
            raise D2SegError("a model needs its config", hint="pass --config-file")
        cfg = load_config(config_file, list(overrides))

    def model(meta, space, kind):
        return ModelPredictions(model_config(name, meta, cfg), weights, space, kind)

    return datasets.visualize_dataset(name, out_dir, model=model, **options)



def _model_dataset(name: str, meta) -> str:
    """The dataset whose classes a model for ``name`` was trained on: a standard panoptic
    dataset's models train on its ``_separated`` form (Panoptic FPN)."""
    if meta.get("d2seg_form", None) == "panoptic" and f"{name}_separated" in DatasetCatalog.list():
        return f"{name}_separated"
    return name


def model_config(name: str, meta, cfg):
    """``cfg`` made ready to predict on dataset ``name`` (class counts filled in from its data,
    checked against it)."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATASETS.TRAIN = (_model_dataset(name, meta),)
    cfg.DATASETS.TEST = ()
    return prepare_config(cfg)


class ModelPredictions:
    """A model run on the dataset's images (``d2seg.engine.predict.BatchPredictor``)."""

    def __init__(self, cfg, weights, space: ClassSpace, display_kind: str | None):
        weights = weights or cfg.MODEL.WEIGHTS
        if not weights or str(weights).startswith("imagenet:"):
            raise D2SegError(f"no trained weights (MODEL.WEIGHTS is {weights!r})",
                             hint="pass --weights model_final.pth (or MODEL.WEIGHTS FILE)")
        self.predictor = BatchPredictor(cfg, weights)
        meta = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
        self.space, self.display_kind = space, display_kind
        self.things = space.table(meta.get("thing_classes", None) or [])
        self.stuff = space.table(meta.get("stuff_classes", None) or [])

    def __call__(self, images):
        return self.predictor(images)

    def draw(self, image, output, *, score_thresh: float, alpha: float, ignore_label: int):
        kind = self.display_kind
        if "panoptic_seg" in output and (kind == "panoptic" or "instances" not in output):
            pan, segments_info = output["panoptic_seg"]
            segments = []
            for s in segments_info:
                thing = bool(s.get("isthing", False))
                table = self.things if thing else self.stuff
                segments.append(dict(s, isthing=thing,
                                     category_id=int(table[int(s["category_id"])])))
            return (draw_panoptic(image, pan.cpu().numpy(), segments, self.space.names,
                                  self.space.isthing, self.space.colors, alpha),
                    f"prediction ({len(segments)} segments)")
        if "sem_seg" in output and (kind == "semantic" or "instances" not in output):
            labels = self.stuff[output["sem_seg"].argmax(dim=0).cpu().numpy()]
            return (draw_semantic(image, labels, self.space.names, self.space.colors,
                                  ignore_label, alpha), "prediction")
        found = instances_from_detectron2(output["instances"].to("cpu"))
        found.classes = [int(self.things[c]) for c in found.classes]
        return draw_found(image, found, self.space, score_thresh, alpha)
