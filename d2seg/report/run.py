"""What a run folder holds, as ``d2seg train`` / ``d2seg eval`` / ``d2seg analyze`` write it.

``RUN/metrics.json``          one JSON object per line (losses, lr, validation metrics)
``RUN/config.yaml``           the config used
``RUN/report/``               eval's metrics.json / metrics.md (COCO AP, or semantic mIoU),
                              pr_curves_*.png, confusion_*.png, worst_sem_seg/*.png (semantic),
                              pq.json (panoptic quality, per image), worst_panoptic/*.png
``RUN/analysis/`` (or ``RUN/report/analysis/``)  analyze's analysis.json, plots, worst/*.png
"""

from __future__ import annotations

import json
import math
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

from d2seg.errors import D2SegError

ANALYSIS_DIRS = ("analysis", "report/analysis", "eval/analysis")
ENV_PACKAGES = ("d2seg", "torch", "torchvision", "detectron2", "numpy", "pycocotools",
                "opencv-python-headless", "Pillow", "matplotlib", "fvcore")


@dataclass
class RunFolder:
    path: Path
    metrics: list = field(default_factory=list)  # metrics.json rows
    config: str | None = None
    eval_metrics: dict | None = None              # report/metrics.json
    eval_dir: Path | None = None
    analysis: dict | None = None                  # analysis.json
    analysis_dir: Path | None = None
    summary: dict | None = None
    pq: dict | None = None                        # pq.json (panoptic quality)
    pq_dir: Path | None = None


def read_metrics_lines(path: Path) -> list[dict]:
    """metrics.json rows; a line cut short by a killed run is skipped."""
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def read_run(path, analysis_dir=None) -> RunFolder:
    path = Path(path)
    if not path.is_dir():
        raise D2SegError("no such run folder", file=str(path),
                         hint="give the OUTPUT_DIR of a d2seg train run")
    run = RunFolder(path)
    run.metrics = read_metrics_lines(path / "metrics.json")
    if (path / "config.yaml").is_file():
        run.config = (path / "config.yaml").read_text(encoding="utf-8", errors="replace")
    for candidate in (path / "report", path):  # train's report/, or an eval --out folder
        m = _json(candidate / "metrics.json")  # (a training's metrics.json is JSON lines)
        if isinstance(m, dict) and any(isinstance(v, dict) and ("stats" in v or "mIoU" in v)
                                       for v in m.values()):
            run.eval_metrics, run.eval_dir = m, candidate
            break
    if run.eval_dir is None and (path / "report").is_dir():
        run.eval_dir = path / "report"
    dirs = [Path(analysis_dir)] if analysis_dir else [path / d for d in ANALYSIS_DIRS]
    for d in dirs:
        a = _json(d / "analysis.json")
        if isinstance(a, dict):
            run.analysis, run.analysis_dir = a, d
            break
    else:
        if analysis_dir:
            raise D2SegError("no analysis.json there", file=str(analysis_dir),
                             hint="run d2seg analyze --out DIR first")
    for candidate in (path / "report", path):
        pq = _json(candidate / "pq.json")
        if isinstance(pq, dict) and isinstance(pq.get("All"), dict):
            run.pq, run.pq_dir = pq, candidate
            break
    s = _json(path / "summary.json")
    run.summary = s if isinstance(s, dict) else None
    if not (run.metrics or run.config or run.eval_metrics or run.analysis or run.pq):
        raise D2SegError("nothing to report: no metrics.json, config.yaml, report/ or analysis/",
                         file=str(path), hint="give the OUTPUT_DIR of a d2seg train run")
    return run


def environment() -> list[tuple[str, str]]:
    """Python, platform and the versions of the packages a run depends on (without importing
    them: installed metadata only)."""
    from importlib import metadata

    rows = [("python", sys.version.split()[0]), ("platform", platform.platform())]
    for name in ENV_PACKAGES:
        try:
            rows.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            candidates = {"detectron2": ("pb1-detectron2",), "Pillow": ("pillow",)}.get(name, ())
            for alt in candidates:
                try:
                    rows.append((name, metadata.version(alt)))
                    break
                except metadata.PackageNotFoundError:
                    pass
            else:
                rows.append((name, "not installed"))
    return rows


def finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
