"""What ``suggest`` and ``next`` share: the image list and the model's instances per image."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from d2seg.errors import D2SegError


def image_files(sources) -> list[Path]:
    """Image files from paths, folders and globs (``d2seg predict``'s rules); videos are refused
    and an empty list is an error naming the sources."""
    from d2seg.engine.predict import VIDEO_EXTS, expand_sources

    files = expand_sources(sources)
    videos = [f for f in files if f.suffix.lower() in VIDEO_EXTS]
    if videos:
        raise D2SegError("labels are made for images, not videos", file=str(videos[0]),
                         hint="extract frames first (e.g. ffmpeg -i clip.mp4 frames/%06d.png)")
    return files


def predicted_instances(model, files: list[Path], batch_size: int = 4,
                        progress: bool | None = None, desc: str = "predict"
                        ) -> Iterator[tuple[Path, np.ndarray, dict]]:
    """``(file, BGR image, instance arrays)`` per file, in order; ``instance arrays`` as
    ``d2seg.engine.predict.instance_arrays`` gives them (masks (N, H, W) bool). An unreadable
    image is one D2SegError naming it; a model output without instances or masks too."""
    from tqdm import tqdm

    from d2seg.io.images import read_image
    from d2seg.engine.predict import instance_arrays

    if not isinstance(batch_size, int) or batch_size < 1:
        raise D2SegError(f"must be at least 1, got {batch_size}", where="--batch-size")
    bar = tqdm(total=len(files), desc=desc, unit="img",
               disable=(not sys.stderr.isatty()) if progress is None else not progress)
    try:
        for start in range(0, len(files), batch_size):
            chunk = files[start:start + batch_size]
            images = [read_image(f, "BGR") for f in chunk]
            for f, image, output in zip(chunk, images, model.predict_batch(images)):
                if "instances" not in output:
                    raise D2SegError("the model predicts no instances (a semantic model?)",
                                     where="--config-file/--model",
                                     hint="use an instance segmentation model (Mask R-CNN)")
                arrays = instance_arrays(output["instances"])
                if arrays["masks"] is None:
                    raise D2SegError("the model predicts no masks",
                                     where="--config-file/--model",
                                     hint="use a Mask R-CNN (MODEL.MASK_ON True)")
                arrays["masks"] = arrays["masks"].astype(bool)
                yield f, image, arrays
                bar.update(1)
    finally:
        bar.close()
