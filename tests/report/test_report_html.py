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


def test_validation_loss_is_charted_from_metrics_json(tmp_path):
    """A run logged with TEST.VAL_LOSS_PERIOD: the training curves have a chart of training
    and validation total loss and one of the validation loss parts, each validation line with
    one point per metrics.json row that has the value, placed in iteration order."""
    import json

    run = tmp_path / "run"
    run.mkdir()
    rows = [{"iteration": it, "total_loss": 2.0 - it / 100, "loss_cls": 1.0, "lr": 0.01}
            for it in range(19, 200, 20)]
    val = {49: 1.9, 99: 1.5, 149: 1.6, 199: 1.2}
    rows += [{"iteration": it, "val_total_loss": v, "val_loss_cls": v / 2, "val_loss_mask": v / 3}
             for it, v in val.items()]
    (run / "metrics.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    chart = re.search(r'<svg[^>]*aria-label="training and validation loss".*?</svg>'
                      r'<div class="legend">(.*?)</div>', page, re.S)
    assert chart and re.findall(r">(\w+)</span>", chart.group(1)) == ["total_loss",
                                                                         "val_total_loss"]
    lines = re.findall(r'<polyline points="([^"]+)"', chart.group(0))
    assert [len(p.split()) for p in lines] == [10, 4]
    # the validation line's points: x grows with the iteration, y falls where the loss rises
    points = [tuple(map(float, xy.split(","))) for xy in lines[1].split()]
    xs, ys = [x for x, _ in points], [y for _, y in points]
    assert xs == sorted(xs)
    values = list(val.values())
    for k in range(len(values) - 1):
        assert (ys[k + 1] < ys[k]) == (values[k + 1] > values[k])  # SVG y points down
    parts = re.search(r'aria-label="validation losses".*?</svg><div class="legend">(.*?)</div>',
                      page, re.S)
    assert parts and re.findall(r">(\w+)</span>", parts.group(1)) == ["val_loss_cls",
                                                                         "val_loss_mask"]
