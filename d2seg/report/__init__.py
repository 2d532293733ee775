"""``report.html``: one self-contained, offline page per run (training curves, metrics, per-class
table, PR curves, confusion matrix, error breakdown, worst images, config, environment)."""

from d2seg.report.html import build_html, write_report
from d2seg.report.run import RunFolder, read_run

__all__ = ["write_report", "build_html", "read_run", "RunFolder"]
