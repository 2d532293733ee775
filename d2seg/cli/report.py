"""``d2seg report``: one self-contained report.html for a run folder."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report", help="one self-contained report.html for a run (curves, metrics, errors, "
                       "worst images, config)",
        description="Read a run folder (metrics.json, config.yaml, report/ from eval, analysis/ "
                    "from analyze) and write one offline HTML file.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run's OUTPUT_DIR")
    p.add_argument("--out", metavar="FILE", help="default: RUN_DIR/report.html")
    p.add_argument("--analysis", metavar="DIR", help="analyze's output folder (default: "
                   "RUN_DIR/analysis or RUN_DIR/report/analysis)")
    p.add_argument("--title", help="page title")
    p.set_defaults(run=run)


def run(args) -> int:
    from d2seg.report import write_report

    path = write_report(args.run_dir, args.out, args.analysis, args.title)
    print(f"written: {path}")
    return 0
