"""``d2seg report``: one self-contained report.html with every section."""

from __future__ import annotations

import re

from d2seg.cli.main import main


def test_report_has_every_section_and_no_external_reference(run_folder, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["report", str(run_folder), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    page = out.read_text()
    for section in ("training", "metrics", "per-class", "pr", "confusion", "errors", "worst",
                    "config"):
        assert f'id="{section}"' in page, section
    assert 'id="per-class-segm"' in page and 'class="sortable"' in page
    assert page.count("<polyline") >= 3  # losses, lr, validation curves
    # offline: no src/href leaving the page; the CSP forbids any fetch anyway
    assert not re.findall(r'(?:src|href)="(?!data:|#)', page)
    assert "default-src 'none'" in page
    assert len(re.findall(r'<img src="data:image/png;base64,', page)) >= 3 + 2 + 2 + 2
    assert "&lt;script&gt;x&lt;/script&gt;" in page  # config text escaped
    assert "name=\"viewport\"" in page
    for package in ("numpy", "pycocotools", "torch"):
        assert f"<td>{package}</td>" in page


def test_report_defaults_to_run_folder_and_reads_a_bare_run(tmp_path, capsys):
    run = tmp_path / "bare"
    run.mkdir()
    (run / "metrics.json").write_text('{"iteration": 1, "total_loss": 1.0, "lr": 0.1}\n')
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert 'id="training"' in page and 'id="worst"' not in page
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    assert "nothing to report" in capsys.readouterr().err
