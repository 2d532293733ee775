"""Dataset mappers and loader pieces that keep a run going past unreadable images.

:class:`D2SegDatasetMapper` is detectron2's ``DatasetMapper`` reading images with
:func:`d2seg.io.images.read_image` (EXIF applied, greyscale/RGBA/16-bit converted, one-line
errors). :class:`SkipUnreadableDataset` takes the place of detectron2's ``MapDataset`` in the
training loader: a record whose image cannot be read is replaced by another image (chosen by a
generator seeded with the index, so the replacement does not depend on what was read before)
and reported once; when every image is unreadable the run stops with one line instead of
retrying forever. DataLoader workers are separate processes, so a worker does not log: it
attaches what it skipped (``SKIPPED_KEY``) or the error that must stop the run (``ERROR_KEY``)
to the record it returns, and :class:`SkipLog` in the main process warns once per file, keeps
the count for the end of training, and raises the error as a one-line ``D2SegError``.
"""

from __future__ import annotations

import copy
import logging
import random

import numpy as np
import torch
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.utils.serialize import PicklableWrapper
from torch.utils.data import Dataset, get_worker_info

from d2seg.io.images import UnreadableImageError, read_image
from d2seg.io.labels import read_label_png
from d2seg.errors import D2SegError

SKIPPED_KEY = "_d2seg_skipped"  # [(file, reason)] skipped while producing this record
ERROR_KEY = "_d2seg_error"      # (reason, file, where, hint) of an error that ends the run

logger = logging.getLogger("d2seg")


def _size_mismatch(dataset_dict: dict, image: np.ndarray) -> D2SegError:
    h, w = image.shape[:2]
    return D2SegError(f"image is {w}x{h} but the annotation file says "
                      f"{dataset_dict.get('width')}x{dataset_dict.get('height')}",
                      file=str(dataset_dict.get("file_name")),
                      where=f"image_id {dataset_dict.get('image_id')}",
                      hint="correct width/height (d2seg data check --fix takes the file's size, "
                           "EXIF rotation included)")


class D2SegDatasetMapper(DatasetMapper):
    """detectron2 v0.6's ``DatasetMapper`` with images read by ``d2seg.io.images.read_image``.

    v0.6 decodes inside ``__call__`` with no hook for the reader, so ``__call__`` here reads the
    files itself (:meth:`_read`) and hands the decoded arrays to detectron2's own pieces
    (``AugInput``, the mapper's augmentations, ``transform_proposals``,
    ``_transform_annotations``) in :meth:`_to_model_input`. Raises
    :class:`UnreadableImageError` for an image or label PNG that cannot be read and
    ``D2SegError`` when the image's size contradicts the annotation file.
    """

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        """detectron2's, except that a training crop honours ``INPUT.CROP.SINGLE_CATEGORY_MAX_AREA``
        (the DeepLab key d2seg's semantic configs add; detectron2's mapper ignores it): below
        1.0 the crop is detectron2's ``RandomCrop_CategoryAreaConstraint``, which retries crops
        where one class covers more than that share of the labelled pixels."""
        ret = super().from_config(cfg, is_train)
        area = cfg.INPUT.CROP.get("SINGLE_CATEGORY_MAX_AREA", 1.0)
        if is_train and cfg.INPUT.CROP.ENABLED and area < 1.0:
            ignore = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
            ret["augmentations"] = [
                T.RandomCrop_CategoryAreaConstraint(a.crop_type, a.crop_size, area, ignore)
                if type(a) is T.RandomCrop else a for a in ret["augmentations"]]
        return ret

    def __call__(self, dataset_dict):
        record = copy.deepcopy(dataset_dict)  # the catalog's record stays as it was
        image, labels = self._read(record)
        return self._to_model_input(record, image, labels)

    def _read(self, record: dict):
        """The image (in the model's format) and, if the record has one, its label map."""
        image = read_image(record["file_name"], format=self.image_format)
        try:
            utils.check_image_size(record, image)
        except utils.SizeMismatchError:
            raise _size_mismatch(record, image) from None
        label_file = record.pop("sem_seg_file_name", None)
        if label_file is None:
            return image, None
        labels = read_label_png(label_file)  # class ids, as every d2seg reader reads them
        # detectron2 resizes uint8 maps with PIL and others with torch, which has no nearest
        # resize for uint16/int32: float32 holds every id below 2^24 exactly
        return image, labels if labels.dtype == np.uint8 else labels.astype(np.float32)

    def _to_model_input(self, record: dict, image: np.ndarray, labels) -> dict:
        """Augment, then tensors (shared memory between loader processes), proposals, and in
        training the annotations; evaluation drops them."""
        augmented = T.AugInput(image, sem_seg=labels)
        transforms = self.augmentations(augmented)
        size = augmented.image.shape[:2]
        record["image"] = torch.as_tensor(np.ascontiguousarray(augmented.image.transpose(2, 0, 1)))
        if augmented.sem_seg is not None:
            record["sem_seg"] = torch.as_tensor(augmented.sem_seg.astype("long"))
        if self.proposal_topk is not None:
            utils.transform_proposals(record, size, transforms, proposal_topk=self.proposal_topk)
        if not self.is_train:
            record.pop("annotations", None)
        elif "annotations" in record:
            self._transform_annotations(record, transforms, size)
        return record


def _in_worker() -> bool:
    return get_worker_info() is not None


def _error_record(error: D2SegError) -> dict:
    return {ERROR_KEY: (error.reason, error.file, error.where, error.hint)}


class SkipUnreadableDataset(Dataset):
    """detectron2's ``MapDataset`` for training, replacing records whose image is unreadable.

    ``mapper`` raises :class:`UnreadableImageError` (or returns None) for a record to skip.
    The replacement for index ``i`` is the first readable index drawn by ``random.Random(i)``,
    so it is the same whatever was read before (resuming a run replays the same stream).
    """

    def __init__(self, dataset, mapper):
        self._dataset = dataset
        self._map = PicklableWrapper(mapper)  # as detectron2's MapDataset: lambdas work too
        self._bad: dict[int, tuple[str, str]] = {}  # index -> (file, reason), this process

    def __len__(self) -> int:
        return len(self._dataset)

    def _file(self, idx: int) -> str:
        record = self._dataset[idx]
        return str(record.get("file_name", f"record {idx}")) if isinstance(record, dict) \
            else f"record {idx}"

    def __getitem__(self, idx):
        n = len(self._dataset)
        skipped: list[tuple[str, str]] = []
        draws = None
        cur = int(idx)
        try:
            while True:
                if cur not in self._bad:
                    try:
                        data = self._map(self._dataset[cur])
                    except UnreadableImageError as e:
                        data = None
                        self._bad[cur] = (e.file or self._file(cur),
                                          e.reason + (f"; {e.hint}" if e.hint else ""))
                    else:
                        if data is None:  # detectron2's convention for "skip this one"
                            self._bad[cur] = (self._file(cur), "the mapper skipped it")
                    if data is not None:
                        if skipped:
                            data[SKIPPED_KEY] = skipped
                        return data
                    skipped.append(self._bad[cur])
                if len(self._bad) >= n:
                    file, reason = self._bad[min(self._bad)]
                    raise D2SegError(f"none of the {n} training images can be read (this one: "
                                     f"{reason})", file=file, where="DATASETS.TRAIN",
                                     hint="run d2seg data check on the training data")
                if draws is None:
                    draws = random.Random(int(idx))
                cur = draws.randrange(n)
        except D2SegError as e:
            if not _in_worker():
                raise
            return {**_error_record(e), SKIPPED_KEY: skipped}


class ErrorsAsRecords:
    """Wrap a mapper so that a ``D2SegError`` in a DataLoader worker reaches the main process
    as a record (``ERROR_KEY``), to be raised there as one line by :class:`SkipLog`."""

    def __init__(self, mapper):
        self.mapper = mapper

    def __call__(self, dataset_dict):
        try:
            return self.mapper(dataset_dict)
        except D2SegError as e:
            if not _in_worker():
                raise
            return _error_record(e)


class SkipLog:
    """Main-process side: warn once per skipped file, count them, raise errors from workers."""

    def __init__(self):
        self.skipped: dict[str, str] = {}  # file -> reason, in the order first seen

    def screen(self, record):
        """The record without d2seg's keys; raises the error a worker sent instead."""
        if not isinstance(record, dict):
            return record
        for file, reason in record.pop(SKIPPED_KEY, ()):
            if file not in self.skipped:
                self.skipped[file] = reason
                logger.warning("skipping unreadable image %s: %s", file, reason)
        if ERROR_KEY in record:
            reason, file, where, hint = record[ERROR_KEY]
            raise D2SegError(reason, file=file, where=where, hint=hint)
        return record

    def screen_all(self, records):
        """``screen`` every record of an iterable, lazily."""
        for record in records:
            yield self.screen(record)

    def screen_batches(self, batches):
        """``screen`` every record of an iterable of lists, lazily."""
        for batch in batches:
            yield [self.screen(r) for r in batch]

    def summary(self, limit: int = 10) -> str | None:
        """"skipped K unreadable image(s): a, b, ..." or None when nothing was skipped."""
        if not self.skipped:
            return None
        files = list(self.skipped)
        shown = ", ".join(files[:limit]) + (f", ... ({len(files) - limit} more)"
                                            if len(files) > limit else "")
        return f"skipped {len(files)} unreadable image(s): {shown}"


class ScreenedLoader:
    """A data loader whose records go through a :class:`SkipLog` (keeps ``len``)."""

    def __init__(self, loader, log: SkipLog | None = None):
        self.loader = loader
        self.log = log or SkipLog()

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        return self.log.screen_batches(self.loader)


def build_test_loader(cfg, dataset_name):
    """detectron2's test loader with :class:`D2SegDatasetMapper`; errors are one line."""
    from detectron2.data import build_detection_test_loader

    mapper = ErrorsAsRecords(D2SegDatasetMapper(cfg, is_train=False))
    return ScreenedLoader(build_detection_test_loader(cfg, dataset_name, mapper=mapper))
