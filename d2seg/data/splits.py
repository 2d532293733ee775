"""What ``d2seg data check/stats/show`` look at: a COCO JSON path, or a manifest's splits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from d2seg.data.manifest import find_manifest
from d2seg.errors import D2SegError

@dataclass(frozen=True)
class SplitFiles:
    """The files one split of a dataset is made of, as the check/stats/show tools need them."""

    label: str  # "<manifest name>/<split>" or the JSON path
    json_path: Path | None  # None for sem_seg
    image_root: Path | None
    panoptic_root: Path | None
    kind: str = "coco"  # "coco" (instances or panoptic, told by the JSON) or "sem_seg"
    sem_seg_root: Path | None = None
    num_classes: int = 0
    ignore_label: int = 255


def resolve_splits(target: str, *, split: str | None = None, images: str | None = None,
                   panoptic_root: str | None = None) -> list[SplitFiles]:
    """A COCO JSON path (with ``images``), or a manifest name/path, to the splits to look at."""
    path = Path(target)
    if path.suffix.lower() == ".json":
        if not path.is_file():
            raise D2SegError("annotation file not found", file=target)
        return [SplitFiles(str(path), path, Path(images) if images else None,
                           Path(panoptic_root) if panoptic_root else None)]
    manifest = find_manifest(target)
    if split is not None and split not in manifest.splits:
        raise D2SegError(f"no split '{split}'", file=str(manifest.path), where="splits",
                         hint=f"choose one of {sorted(manifest.splits)}")
    chosen = [manifest.splits[split]] if split else list(manifest.splits.values())
    if manifest.kind == "sem_seg":
        return [SplitFiles(f"{manifest.name}/{s.name}", None, s.images, None, "sem_seg",
                           s.sem_seg_root, len(manifest.classes or []), manifest.ignore_label)
                for s in chosen]
    return [SplitFiles(f"{manifest.name}/{s.name}", s.annotations, s.images, s.panoptic_root)
            for s in chosen if s.annotations is not None]
