"""The classes a trained model predicts: names, the dataset's category ids and colours, which
``d2seg predict`` writes into results.json (``category_id``) and draws, and ``d2seg export``
records in model.json.

They come from ``--dataset`` when given, else from the config's first training dataset when it
is registered here and has the class counts the config's heads have (a run's own config.yaml
names the data it was trained on). Without either, outputs carry class indices 0..N-1, which a
COCO evaluation against the dataset would score as other categories: callers say so.
"""

from __future__ import annotations

from dataclasses import dataclass

from detectron2.data import DatasetCatalog, MetadataCatalog

from d2seg.config.prepare import num_classes, prepare_config


@dataclass(frozen=True)
class ModelClasses:
    """Class metadata of one registered dataset, as the model's outputs need it."""

    dataset: str | None = None
    names: list | None = None          # thing classes, by class index
    category_ids: list | None = None   # the dataset's category id of each class index
    colors: list | None = None         # RGB per thing class
    stuff_names: list | None = None    # semantic labels, by label index
    stuff_colors: list | None = None
    note: str | None = None            # what a user should know about these classes

    @property
    def contiguous_to_category(self) -> dict | None:
        """Class index -> category id (what COCO results use)."""
        return dict(enumerate(self.category_ids)) if self.category_ids else None


def dataset_classes(name: str) -> ModelClasses:
    """The classes of a registered dataset."""
    meta = MetadataCatalog.get(name)
    to_contiguous = meta.get("thing_dataset_id_to_contiguous_id", None)
    category_ids = None
    if to_contiguous:
        by_index = {v: k for k, v in to_contiguous.items()}
        category_ids = [int(by_index[i]) for i in range(len(by_index))]
    return ModelClasses(dataset=name, names=meta.get("thing_classes", None),
                        category_ids=category_ids, colors=meta.get("thing_colors", None),
                        stuff_names=meta.get("stuff_classes", None),
                        stuff_colors=meta.get("stuff_colors", None))


def training_dataset_classes(cfg) -> ModelClasses | None:
    """The classes of the config's first training dataset, when it is registered and its class
    counts are those of the config's heads (which must be set: ``NUM_CLASSES`` 0 is resolved by
    ``prepare_config`` with an explicit dataset); else None."""
    if not cfg.DATASETS.TRAIN or cfg.DATASETS.TRAIN[0] not in DatasetCatalog.list():
        return None
    name = cfg.DATASETS.TRAIN[0]
    need = num_classes(name)
    arch = cfg.MODEL.META_ARCHITECTURE
    heads = []
    if arch in ("GeneralizedRCNN", "PanopticFPN"):
        heads.append((cfg.MODEL.ROI_HEADS.NUM_CLASSES, need["thing"]))
    if arch in ("SemanticSegmentor", "PanopticFPN"):
        heads.append((cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, need["sem_seg_head"]))
    if not heads or any(have == 0 or have != want for have, want in heads):
        return None
    return dataset_classes(name)


def load_model_config(config_file, opts=(), dataset: str | None = None):
    """(cfg, ModelClasses) for running or exporting a trained model: with ``dataset`` the config
    is prepared for it (class counts from its data), else the classes are those of the config's
    training dataset when it fits (``training_dataset_classes``), else none (with a ``note``
    for the user: detections then carry class indices). ``NUM_CLASSES`` 0
    without a dataset is left for the model's builder to refuse (``require_class_counts``)."""
    from d2seg.config import load_config

    overrides = list(opts)
    if dataset:
        overrides += ["DATASETS.TRAIN", f"('{dataset}',)", "DATASETS.TEST", "()"]
    cfg = load_config(config_file, overrides)
    if dataset:
        return prepare_config(cfg), dataset_classes(dataset)
    classes = training_dataset_classes(cfg)
    if classes is not None:
        return cfg, classes
    if cfg.MODEL.META_ARCHITECTURE in ("GeneralizedRCNN", "PanopticFPN") \
            and cfg.MODEL.ROI_HEADS.NUM_CLASSES > 0:  # (0: the builder refuses it)
        return cfg, ModelClasses(note=(
            "note: no --dataset, and the config's training dataset is not registered here or "
            "has other classes: category_id is the class index 0..N-1, not the dataset's id; "
            "pass --dataset NAME for class names and ids"))
    return cfg, ModelClasses()
