"""What the dataset checks report: the kinds of problem with their severity, one
:class:`Problem` per finding, and a :class:`CheckResult` per dataset (``d2seg data check``)."""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

ERROR, WARNING = "error", "warning"

#: Every kind of problem ``check_coco`` reports, with its severity. An error breaks or silently
#: degrades training; a warning is legal data a user may still want to know about.
KINDS = {
    "json_structure": ERROR,
    "image_missing": ERROR,
    "image_unreadable": ERROR,
    "image_size_mismatch": ERROR,
    "duplicate_image_id": ERROR,
    "duplicate_annotation_id": ERROR,
    "duplicate_category_id": ERROR,
    "duplicate_category_name": WARNING,
    "unknown_category": ERROR,
    "unknown_image": ERROR,
    "segmentation_missing": ERROR,
    "bbox_missing": ERROR,
    "bbox_degenerate": ERROR,
    "bbox_outside": ERROR,
    "polygon_malformed": ERROR,
    "polygon_outside": ERROR,
    "rle_size_mismatch": ERROR,
    "iscrowd_invalid": ERROR,
    "crowd_not_rle": WARNING,
    "noncrowd_rle": WARNING,
    "area_missing": WARNING,
    "image_without_annotations": WARNING,
    "panoptic_png_missing": ERROR,
    "panoptic_png_size_mismatch": ERROR,
    "panoptic_duplicate_segment_id": ERROR,
    "panoptic_segment_not_in_png": ERROR,
    "panoptic_png_segment_undeclared": ERROR,
    "panoptic_area_mismatch": ERROR,
    "semseg_label_missing": ERROR,
    "semseg_image_missing": WARNING,
    "semseg_label_unreadable": ERROR,
    "semseg_label_not_single_channel": ERROR,
    "semseg_label_palette": WARNING,
    "semseg_size_mismatch": ERROR,
    "semseg_label_out_of_range": ERROR,
}


@dataclass(frozen=True)
class Problem:
    """One finding: what is wrong, where, and what would fix it."""

    kind: str
    file: str
    message: str
    fix: str
    image_id: int | None = None
    annotation_id: int | None = None

    @property
    def severity(self) -> str:
        return KINDS[self.kind]


@dataclass
class CheckResult:
    """All problems of one dataset split plus counts for the summary table."""

    json_path: Path
    kind: str  # "coco_instances" | "coco_panoptic"
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def ok(self) -> bool:
        """True when nothing would break or silently degrade training."""
        return not self.errors

    def by_kind(self) -> Counter:
        return Counter(p.kind for p in self.problems)

    def to_dict(self) -> dict:
        return {"json": str(self.json_path), "kind": self.kind, "ok": self.ok,
                "counts": self.counts, "by_kind": dict(self.by_kind()),
                "problems": [asdict(p) | {"severity": p.severity} for p in self.problems]}


def progress_bar(items, desc: str, enabled: bool | None, total: int | None = None):
    """A tqdm bar over ``items`` (not left on screen); ``enabled`` None: only on a terminal."""
    from tqdm import tqdm

    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(items, desc=desc, total=total, disable=not enabled, leave=False)
