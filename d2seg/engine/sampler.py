"""A training data stream that resumes where it stopped, instead of replaying from the start.

detectron2's ``TrainingSampler`` draws an infinite, seeded shuffle. A resumed run builds a new
sampler with the same seed and so sees again the images it already trained on, in the same
order. :class:`ResumableSampler` wraps whichever sampler detectron2 builds and skips the
indices the finished iterations consumed (``start_iter * IMS_PER_BATCH / world_size`` on each
rank), so a resumed run sees exactly what the uninterrupted run would have seen.

:class:`ResumableTrainLoader` defers building the ``DataLoader`` to the first batch, when the
start iteration is known, and gives it its own ``torch.Generator``: creating a ``DataLoader``
iterator otherwise draws from the global torch RNG, which would shift a resumed run's random
stream (proposal sampling, augmentations) by one draw.

Exact resume needs ``DATALOADER.NUM_WORKERS 0`` (workers are reseeded on every start) and
images that the aspect-ratio grouping puts in one bucket (or ``ASPECT_RATIO_GROUPING False``):
images waiting in the other bucket when the run stopped are not carried over.

Images that cannot be read (missing, empty, truncated, not an image) are replaced by others and
reported once each, and :attr:`ResumableTrainLoader.skipped` lists them for the end of training
(``d2seg.data.mappers``); the replacement of an image depends only on its index, so exact
resume still holds.
"""

from __future__ import annotations

import itertools
import operator

import torch
from detectron2.data import build_detection_train_loader
from detectron2.data.build import trivial_batch_collator, worker_init_reset_seed
from detectron2.data.common import (
    AspectRatioGroupedDataset,
    DatasetFromList,
    ToIterableDataset,
)
from detectron2.utils import comm
from torch.utils.data import DataLoader, Sampler

from d2seg.data.mappers import D2SegDatasetMapper, SkipLog, SkipUnreadableDataset
from d2seg.errors import D2SegError


class ResumableSampler(Sampler):
    """Any detectron2 training sampler, started ``skip`` indices into this rank's stream."""

    def __init__(self, sampler: Sampler, skip: int = 0):
        if skip < 0:
            raise ValueError(f"skip must be >= 0, got {skip}")
        self.sampler = sampler
        self.skip = int(skip)

    def __iter__(self):
        yield from itertools.islice(iter(self.sampler), self.skip, None)


class ResumableTrainLoader:
    """Batches for training, from any iteration on: call :meth:`start_at` before iterating."""

    def __init__(self, dataset, *, mapper, sampler, total_batch_size: int,
                 aspect_ratio_grouping: bool = True, num_workers: int = 0):
        world = comm.get_world_size()
        if total_batch_size <= 0 or total_batch_size % world:
            raise D2SegError(f"SOLVER.IMS_PER_BATCH {total_batch_size} is not a positive multiple "
                             f"of the {world} processes", where="SOLVER.IMS_PER_BATCH")
        if isinstance(dataset, list):
            dataset = DatasetFromList(dataset, copy=False)
        self.dataset = SkipUnreadableDataset(dataset, mapper) if mapper is not None else dataset
        self.skip_log = SkipLog()  # unreadable images met so far, warned about once each
        self.sampler = sampler
        self.batch_size = total_batch_size // world  # per process
        self.aspect_ratio_grouping = aspect_ratio_grouping
        self.num_workers = num_workers
        self.start_iter = 0

    @classmethod
    def from_config(cls, cfg) -> "ResumableTrainLoader":
        """Same dataset and sampler as ``build_detection_train_loader(cfg)``; detectron2's
        mapper, reading images with ``d2seg.io.images.read_image``."""
        return cls(**build_detection_train_loader.from_config(
            cfg, mapper=D2SegDatasetMapper(cfg, is_train=True)))

    @property
    def skipped(self) -> dict[str, str]:
        """Unreadable images skipped so far in this process: file -> reason."""
        return dict(self.skip_log.skipped)

    def start_at(self, iteration: int) -> None:
        """The first batch will be the one iteration ``iteration`` of an uninterrupted run saw."""
        self.start_iter = int(iteration)

    def __iter__(self):
        # a generator: nothing is built until the first batch is asked for, after resuming
        yield from self._build()

    def _build(self):
        sampler = ResumableSampler(self.sampler, self.start_iter * self.batch_size)
        stream = ToIterableDataset(self.dataset, sampler)
        # seeds the workers only; kept off the global RNG so that resuming does not shift it
        generator = torch.Generator()
        generator.manual_seed(int(getattr(self.sampler, "_seed", 0)) + self.start_iter)
        if self.aspect_ratio_grouping:
            singles = DataLoader(stream, num_workers=self.num_workers,
                                 collate_fn=operator.itemgetter(0),
                                 worker_init_fn=worker_init_reset_seed, generator=generator)
            screened = _Iterable(self.skip_log.screen_all, singles)
            return iter(AspectRatioGroupedDataset(screened, self.batch_size))
        return self.skip_log.screen_batches(
            DataLoader(stream, batch_size=self.batch_size, drop_last=True,
                       num_workers=self.num_workers, collate_fn=trivial_batch_collator,
                       worker_init_fn=worker_init_reset_seed, generator=generator))


class _Iterable(torch.utils.data.IterableDataset):
    """``fn(source)`` as a re-iterable dataset (AspectRatioGroupedDataset wants one)."""

    def __init__(self, fn, source):
        self.fn, self.source = fn, source

    def __iter__(self):
        return iter(self.fn(self.source))
