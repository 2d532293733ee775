"""``report.html``: one self-contained page per run (inline CSS, JS, SVG charts and base64 PNGs;
no network access at all, enforced by its Content-Security-Policy), readable at phone width."""

from __future__ import annotations

import base64
import html
import math
import time
from pathlib import Path

from d2seg.report.run import RunFolder, environment, finite, read_run

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
              "ARl")
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")

CSS = """
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;
background:#f6f7f9}
header{background:#263238;color:#fff;padding:12px 16px}
header h1{font-size:1.25em;margin:0}
header p{margin:4px 0 0;color:#cfd8dc;font-size:.85em;word-break:break-all}
nav{display:flex;flex-wrap:wrap;gap:6px 14px;padding:8px 16px;background:#eceff1;font-size:.9em}
main{max-width:1100px;margin:0 auto;padding:8px 12px 40px}
section{background:#fff;border:1px solid #dde1e5;border-radius:6px;margin:14px 0;padding:10px 14px}
h2{font-size:1.1em;margin:4px 0 10px}
h3{font-size:1em;margin:12px 0 6px}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;font-size:.85em;white-space:nowrap}
th,td{border-bottom:1px solid #e3e6e8;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}
thead th{background:#f1f3f4;position:sticky;top:0}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th::after{content:" \\2195";color:#9aa}
table.sortable th[aria-sort=ascending]::after{content:" \\25B2";color:#333}
table.sortable th[aria-sort=descending]::after{content:" \\25BC";color:#333}
img{max-width:100%;height:auto;display:block;margin:6px 0}
figure{margin:8px 0}
figcaption{font-size:.8em;color:#555}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:10px}
svg{width:100%;height:auto;background:#fff}
.legend{font-size:.8em;display:flex;flex-wrap:wrap;gap:4px 12px}
.legend span::before{content:"";display:inline-block;width:12px;height:3px;margin-right:4px;
vertical-align:middle;background:var(--c)}
.bar{height:14px;background:var(--c);display:inline-block;vertical-align:middle}
pre{background:#f4f5f6;padding:8px;overflow:auto;max-height:480px;font-size:.8em}
.muted{color:#666;font-size:.85em}
.gallery figure{border-top:1px solid #eee;padding-top:6px}
@media (max-width:600px){body{font-size:14px}main{padding:4px 6px 30px}
section{padding:8px}th,td{padding:3px 5px}}
"""

JS = """
(function(){
  function key(cell){
    var v = cell.getAttribute('data-value');
    if (v === null) v = cell.textContent.trim();
    if (v === '' || v === '-') return null;
    var n = Number(v);
    return isNaN(n) ? v.toLowerCase() : n;
  }
  function sortBy(table, th, col){
    var asc = th.getAttribute('aria-sort') !== 'ascending';
    var heads = table.tHead.rows[0].cells;
    for (var i = 0; i < heads.length; i++) heads[i].removeAttribute('aria-sort');
    th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function(a, b){
      var x = key(a.cells[col]), y = key(b.cells[col]);
      if (x === null || y === null) return (x === null) - (y === null);  /* blanks last */
      var c;
      if (typeof x === typeof y) c = x < y ? -1 : (x > y ? 1 : 0);
      else c = typeof x === 'number' ? -1 : 1;
      return asc ? c : -c;
    });
    rows.forEach(function(r){ body.appendChild(r); });
  }
  var tables = document.querySelectorAll('table.sortable');
  Array.prototype.forEach.call(tables, function(table){
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function(th, col){
      th.setAttribute('tabindex', '0');
      th.addEventListener('click', function(){ sortBy(table, th, col); });
      th.addEventListener('keydown', function(e){
        if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sortBy(table, th, col); }
      });
    });
  });
})();
"""


def esc(v) -> str:
    return html.escape(str(v), quote=True)


def _fmt(v, digits: int = 2, scale: float = 1.0) -> str:
    if not finite(v):
        return "-"
    if scale == 100 and v < 0:  # pycocotools' -1: no object of that size
        return "-"
    return f"{v * scale:.{digits}f}"


def data_uri(path: Path) -> str | None:
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
            ".svg": "image/svg+xml"}.get(Path(path).suffix.lower(), "image/png")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def figure(path: Path, caption: str) -> str:
    uri = data_uri(path)
    if uri is None:
        return ""
    return (f'<figure><img src="{uri}" alt="{esc(caption)}" loading="eager">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


# ------------------------------------------------------------------ SVG line charts

def line_chart(title: str, series: dict, *, log_y: bool = False, y_label: str = "") -> str:
    """``series``: name -> list of (x, y). An inline SVG with axes, ticks and a legend."""
    series = {k: [(x, y) for x, y in v if finite(x) and finite(y) and (y > 0 or not log_y)]
              for k, v in series.items()}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return ""
    W, H, L, R, T, B = 480, 260, 52, 12, 22, 34
    xs = [x for v in series.values() for x, _ in v]
    ys = [y for v in series.values() for _, y in v]
    tf = (lambda y: math.log10(y)) if log_y else (lambda y: y)
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(tf(y) for y in ys), max(tf(y) for y in ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - (abs(y0) * 0.1 or 1), y1 + (abs(y1) * 0.1 or 1)
    if not log_y and y0 > 0 and y0 < 0.5 * y1:
        y0 = 0.0

    def px(x):
        return L + (x - x0) / (x1 - x0) * (W - L - R)

    def py(y):
        return H - B - (tf(y) - y0) / (y1 - y0) * (H - T - B)

    parts = [f'<svg viewBox="0 0 {W} {H}" role="img" aria-label="{esc(title)}" '
             f'xmlns="http://www.w3.org/2000/svg">',
             f'<text x="{W / 2}" y="14" text-anchor="middle" font-size="12">{esc(title)}</text>',
             f'<rect x="{L}" y="{T}" width="{W - L - R}" height="{H - T - B}" fill="none" '
             f'stroke="#ccc"/>']
    for k in range(5):
        fy = y0 + (y1 - y0) * k / 4
        yv = 10 ** fy if log_y else fy
        yy = H - B - (H - T - B) * k / 4
        parts.append(f'<line x1="{L}" x2="{W - R}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/>'
                     f'<text x="{L - 4}" y="{yy + 4:.1f}" text-anchor="end" font-size="10">'
                     f"{_tick(yv)}</text>")
        xv = x0 + (x1 - x0) * k / 4
        xx = L + (W - L - R) * k / 4
        parts.append(f'<text x="{xx:.1f}" y="{H - B + 14}" text-anchor="middle" '
                     f'font-size="10">{_tick(xv)}</text>')
    parts.append(f'<text x="{(W + L) / 2}" y="{H - 4}" text-anchor="middle" font-size="10">'
                 f"iteration</text>")
    if y_label:
        parts.append(f'<text x="10" y="{(H - B + T) / 2}" font-size="10" text-anchor="middle" '
                     f'transform="rotate(-90 10 {(H - B + T) / 2})">{esc(y_label)}</text>')
    legend = []
    for i, (name, pts) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        pts = sorted(pts)
        if len(pts) == 1:
            parts.append(f'<circle cx="{px(pts[0][0]):.1f}" cy="{py(pts[0][1]):.1f}" r="3" '
                         f'fill="{colour}"/>')
        else:
            coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
            parts.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" '
                         f'stroke-width="1.5"/>')
        legend.append(f'<span style="--c:{colour}">{esc(name)}</span>')
    parts.append("</svg>")
    return f'<div>{"".join(parts)}<div class="legend">{"".join(legend)}</div></div>'


def _tick(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1000:
        return f"{v:.0f}"
    if a >= 1:
        return f"{v:.3g}"
    return f"{v:.2g}"


def _series(rows: list, keys) -> dict:
    out = {}
    for k in keys:
        pts = [(r.get("iteration"), r[k]) for r in rows if k in r]
        if pts:
            out[k] = pts
    return out


def training_section(run: RunFolder) -> str:
    rows = run.metrics
    if not rows:
        return ""
    keys = sorted({k for r in rows for k in r})
    losses = [k for k in keys if k == "total_loss"] + [k for k in keys if k.startswith("loss")]
    val = [k for k in keys if "/" in k and k.split("/")[0] in ("bbox", "segm", "sem_seg",
                                                                 "panoptic_seg")
           and k.split("/")[1] in ("AP", "AP50", "AP75", "mIoU", "fwIoU", "PQ", "SQ", "RQ")]
    charts = [line_chart("losses", _series(rows, losses), y_label="loss"),
              line_chart("learning rate", _series(rows, ["lr"]), y_label="lr")]
    # TEST.VAL_LOSS_PERIOD's losses on the test split (d2seg.engine.hooks.ValidationLoss)
    if "val_total_loss" in keys:
        charts.append(line_chart("training and validation loss",
                                 _series(rows, ["total_loss", "val_total_loss"]), y_label="loss"))
    val_parts = [k for k in keys if k.startswith("val_loss")]
    if val_parts:
        charts.append(line_chart("validation losses", _series(rows, val_parts), y_label="loss"))
    by_task = {}
    for k in val:
        by_task.setdefault(k.split("/")[0], []).append(k)
    for task, ks in by_task.items():
        charts.append(line_chart(f"validation {task}", _series(rows, ks), y_label="%"))
    charts = [c for c in charts if c]
    if not charts:
        return ""
    last = rows[-1].get("iteration")
    return (f'<section id="training"><h2>Training curves</h2><p class="muted">{len(rows)} rows of '
            f"metrics.json, last iteration {esc(last)}</p>"
            f'<div class="charts">{"".join(charts)}</div></section>')


# ------------------------------------------------------------------ tables

def _table(headers, rows, sortable=False, table_id=None) -> str:
    cls = ' class="sortable"' if sortable else ""
    tid = f' id="{esc(table_id)}"' if table_id else ""
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in headers)
    body = []
    for row in rows:
        cells = []
        for c in row:
            if isinstance(c, tuple):  # (text, sort value)
                text, value = c
                sv = "" if value is None or (isinstance(value, float) and not math.isfinite(value)) \
                    else str(value)
                cells.append(f'<td data-value="{esc(sv)}">{esc(text)}</td>')
            else:
                cells.append(f"<td>{esc(c)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table{cls}{tid}><thead><tr>{head}</tr></thead><tbody>'
            f'{"".join(body)}</tbody></table></div>')


def _cell(v, digits=2, scale=1.0):
    return (_fmt(v, digits, scale), v * scale if finite(v) else None)


def metrics_section(run: RunFolder) -> str:
    parts = []
    em = run.eval_metrics or {}
    typed = {t: r for t, r in em.items() if isinstance(r, dict) and "stats" in r}
    if typed:
        rows = [[t] + [_fmt(r["stats"].get(n), 1, 100) for n in STAT_NAMES]
                for t, r in typed.items()]
        parts.append("<h3>COCO metrics (%)</h3>" + _table(["type", *STAT_NAMES], rows))
    elif run.metrics:
        last = {}
        for r in run.metrics:
            last.update({k: v for k, v in r.items() if finite(v) and k.split("/")[0] in (
                "bbox", "segm", "sem_seg", "panoptic_seg") and "/" in k})
        if last:
            rows = [[k, _fmt(v, 2)] for k, v in sorted(last.items())]
            parts.append("<h3>last validation metrics</h3>" + _table(["metric", "value"], rows))
    sem = em.get("sem_seg") if isinstance(em.get("sem_seg"), dict) else None
    if sem and "mIoU" in sem:
        parts.append("<h3>semantic segmentation (%)</h3>" + _table(
            ["mIoU", "fwIoU", "mACC", "pACC", "images"],
            [[_fmt(sem.get(k), 1) for k in ("mIoU", "fwIoU", "mACC", "pACC")] + [sem.get("num_images")]]))
    if run.pq:
        rows = [[g] + [_fmt(run.pq[g].get(k), 1, 100) for k in ("pq", "sq", "rq")] + [run.pq[g].get("n")]
                for g in ("All", "Things", "Stuff") if isinstance(run.pq.get(g), dict)]
        parts.append("<h3>panoptic quality (%)</h3>" + _table(["segments", "PQ", "SQ", "RQ", "classes"], rows))
    a = run.analysis
    if a:
        rows = []
        for t, s in a["iou_types"].items():
            o = s.get("overall", {})
            rows.append([t, _fmt(s["ap50"], 2), s["num_objects"], s["num_detections"],
                         _fmt(o.get("best_f1"), 3), _fmt(o.get("best_threshold"), 3),
                         _fmt(o.get("precision"), 3), _fmt(o.get("recall"), 3),
                         _fmt(o.get("f1"), 3)])
        thr = a.get("score_threshold")
        parts.append(f"<h3>detection summary (IoU {esc(a.get('pos_iou'))}, all classes)</h3>"
                     + _table(["type", "AP50 (TIDE)", "objects", "detections", "best F1",
                               "at score", f"P@{thr}", f"R@{thr}", f"F1@{thr}"], rows))
    if not parts:
        return ""
    return f'<section id="metrics"><h2>Metrics</h2>{"".join(parts)}</section>'


def per_class_section(run: RunFolder) -> str:
    a = run.analysis
    em = run.eval_metrics or {}
    parts = []
    if a:
        thr = a.get("score_threshold")
        for t, s in a["iou_types"].items():
            coco_ap = (em.get(t) or {}).get("per_class", {}) if isinstance(em.get(t), dict) else {}
            headers = ["class", "objects", "detections", "AP (COCO)", "AP50", "best F1",
                       "at score", "P", "R", f"P@{thr}", f"R@{thr}", f"F1@{thr}",
                       *[e for e in a["error_types"]]]
            rows = []
            for r in s["per_class"]:
                ap = coco_ap.get(r["name"])
                rows.append([r["name"], (str(r["num_objects"]), r["num_objects"]),
                             (str(r["num_detections"]), r["num_detections"]),
                             (_fmt(ap, 1, 100), ap * 100 if finite(ap) and ap >= 0 else None),
                             _cell(r["ap50"], 1), _cell(r["best_f1"], 3),
                             _cell(r["best_threshold"], 3), _cell(r["precision_at_best"], 3),
                             _cell(r["recall_at_best"], 3), _cell(r["precision"], 3),
                             _cell(r["recall"], 3), _cell(r["f1"], 3),
                             *[(str(r["errors"][e]), r["errors"][e]) for e in a["error_types"]]])
            parts.append(f"<h3>{esc(t)}</h3>" + _table(headers, rows, sortable=True,
                                                       table_id=f"per-class-{t}"))
        parts.insert(0, '<p class="muted">Click a column header to sort. AP50, P/R/F1 at IoU '
                        f'{esc(a.get("pos_iou"))}; "best F1" at the score threshold maximising F1; '
                        'error columns: false positives (by predicted class) and missed objects '
                        "of each TIDE type.</p>")
    elif em:
        for t, r in em.items():
            if t == "sem_seg" and isinstance(r, dict) and r.get("per_class"):
                rows = [[n, _cell(c["IoU"], 1), _cell(c["ACC"], 1), (str(c["gt_pixels"]), c["gt_pixels"]),
                         (str(c["pred_pixels"]), c["pred_pixels"])] for n, c in r["per_class"].items()]
                parts.append("<h3>sem_seg (%)</h3>" + _table(
                    ["class", "IoU", "ACC", "ground-truth pixels", "predicted pixels"], rows,
                    sortable=True, table_id="per-class-sem_seg"))
            elif isinstance(r, dict) and r.get("per_class"):
                rows = [[n, _cell(v, 1, 100) if finite(v) and v >= 0 else ("-", None)]
                        for n, v in r["per_class"].items()]
                parts.append(f"<h3>{esc(t)}</h3>" + _table(["class", "AP"], rows, sortable=True,
                                                           table_id=f"per-class-{t}"))
    if run.pq and isinstance(run.pq.get("per_class"), dict):
        parts.append(_pq_per_class(run.pq))
    parts = [p for p in parts if p]
    if not parts:
        return ""
    return f'<section id="per-class"><h2>Per class</h2>{"".join(parts)}</section>'


def _pq_per_class(pq: dict) -> str:
    """PQ/SQ/RQ and tp/fp/fn of each class with a segment in the ground truth or prediction."""
    names, kinds, counts = (pq.get("category_names") or {}), (pq.get("category_isthing") or {}), \
        (pq.get("counts") or {})
    rows = []
    for cat, r in pq["per_class"].items():
        c = counts.get(str(cat)) or counts.get(cat) or {}
        if not sum(c.values()):
            continue
        kind = {1: "thing", 0: "stuff"}.get(kinds.get(str(cat)), "-")
        rows.append([names.get(str(cat)) or str(cat), kind, _cell(r.get("pq"), 1, 100),
                     _cell(r.get("sq"), 1, 100), _cell(r.get("rq"), 1, 100),
                     *[(str(c.get(k, 0)), c.get(k, 0)) for k in ("tp", "fp", "fn")]])
    if not rows:
        return ""
    return ("<h3>panoptic quality per class (%)</h3>" + _table(
        ["class", "kind", "PQ", "SQ", "RQ", "TP", "FP", "FN"], rows, sortable=True,
        table_id="per-class-panoptic"))


def plots_section(run: RunFolder) -> str:
    figs = []
    if run.eval_dir is not None:
        for p in sorted(run.eval_dir.glob("pr_curves_*.png")):
            figs.append(figure(p, f"precision-recall ({p.stem.split('_')[-1]}, COCO)"))
    if run.analysis_dir is not None:
        for p in sorted(run.analysis_dir.glob("pr_f1_*.png")):
            figs.append(figure(p, f"precision-recall at IoU 0.5 with the best-F1 point "
                                  f"({p.stem.split('_')[-1]})"))
    conf = [figure(p, f"confusion matrix ({p.stem.split('_')[-1]})")
            for p in sorted(run.eval_dir.glob("confusion_*.png"))] if run.eval_dir else []
    out = ""
    if any(figs):
        out += f'<section id="pr"><h2>Precision-recall curves</h2>{"".join(figs)}</section>'
    if any(conf):
        out += f'<section id="confusion"><h2>Confusion matrix</h2>{"".join(conf)}</section>'
    return out


def errors_section(run: RunFolder) -> str:
    a = run.analysis
    if not a:
        return ""
    from d2seg.analysis.draw import colour_hex

    parts = ['<p class="muted">TIDE error breakdown: dAP is the AP50 gained when every error of '
             "that type is fixed (classification: right place, wrong class; localization: right "
             f"class, IoU {esc(a['bg_iou'])}-{esc(a['pos_iou'])}; both: wrong class and badly "
             "placed; duplicate: the object was already found; background: nothing there; "
             "missed: object never detected). false_positive / false_negative: AP with perfect "
             "precision / perfect recall.</p>"]
    for t, s in a["iou_types"].items():
        values = [(e, s["dAP"][e], s["counts"].get(e), colour_hex(e)) for e in a["error_types"]]
        values += [(e, s["special_dAP"][e], None, "#607d8b") for e in a["special_types"]]
        top = max([v for _, v, _, _ in values] + [1e-9])
        rows = []
        for e, v, n, c in values:
            width = max(0.0, v) / top * 100
            rows.append(f'<tr><td>{esc(e)}</td><td>{_fmt(v, 2)}</td>'
                        f'<td>{"-" if n is None else n}</td><td style="width:50%">'
                        f'<span class="bar" style="--c:{c};width:{width:.1f}%"></span></td></tr>')
        parts.append(f"<h3>{esc(t)}: AP50 {_fmt(s['ap50'], 2)}</h3><div class=\"scroll\">"
                     f'<table class="errors"><thead><tr><th>error type</th><th>dAP</th>'
                     f'<th>count</th><th>dAP</th></tr></thead><tbody>{"".join(rows)}'
                     "</tbody></table></div>")
    if a.get("hints"):
        items = "".join(f"<li>{esc(h['text'])}</li>" for h in a["hints"])
        parts.append('<h3>What the data says about the largest errors</h3><ul id="hints">'
                     + items + "</ul>")
    return f'<section id="errors"><h2>Error breakdown</h2>{"".join(parts)}</section>'


def worst_section(run: RunFolder) -> str:
    a = run.analysis
    if not a or not a.get("worst"):
        return _semantic_worst(run) + _panoptic_worst(run)
    from d2seg.analysis.draw import COLOURS, TAGS, colour_hex

    legend = "".join(f'<span style="--c:{colour_hex(k)}">{esc(TAGS[k])}: {esc(k)}</span>'
                     for k in COLOURS)
    figs = []
    for w in a["worst"]:
        errs = ", ".join(f"{k} {v}" for k, v in w["errors"].items() if v) or "no errors"
        caption = (f"{w.get('file_name') or w['image_id']}: AP50 {_fmt(w['ap50'], 1)}, "
                   f"{w['num_objects']} objects, {w['num_detections']} detections; {errs}")
        if w.get("png") and run.analysis_dir is not None:
            figs.append(figure(run.analysis_dir / w["png"], caption))
        else:
            figs.append(f"<p class=\"muted\">{esc(caption)} (not drawn"
                        f"{': ' + esc(w['skipped']) if w.get('skipped') else ''})</p>")
    return (f'<section id="worst" class="gallery"><h2>Worst images ({esc(a.get("worst_iou_type"))}'
            f", lowest AP50 first)</h2><div class=\"legend\">{legend}</div>"
            f'<p class="muted">left: ground truth, false negatives labelled "FN type"; right: '
            f"predictions scored at least {_fmt(a.get('draw_threshold'), 2)}, false positives "
            f"labelled with their error type.</p>{''.join(figs)}</section>" + _panoptic_worst(run))


def _panoptic_worst(run: RunFolder) -> str:
    """A panoptic run's worst images by PQ: their scores and, where drawn, ground truth |
    prediction."""
    rows = (run.pq or {}).get("worst_images")
    if not rows or run.pq_dir is None:
        return ""
    table = [[w.get("file_name") or w.get("image_id"), _cell(w.get("pq"), 1, 100),
              _cell(w.get("sq"), 1, 100), _cell(w.get("rq"), 1, 100), w.get("tp"), w.get("fp"),
              w.get("fn")] for w in rows]
    figs = [figure(run.pq_dir / w["png"], f"{w.get('file_name') or w.get('image_id')}: PQ "
                   f"{_fmt(w.get('pq'), 1, 100)}, {w.get('tp')} matched, {w.get('fp')} false "
                   f"positive, {w.get('fn')} missed segments")
            for w in rows if w.get("png")]
    return ('<section id="worst-panoptic" class="gallery"><h2>Worst images (panoptic, lowest PQ '
            'first)</h2><p class="muted">PQ of each image alone (the mean over the classes with '
            "a segment in its ground truth or prediction).</p>"
            + _table(["image", "PQ", "SQ", "RQ", "TP", "FP", "FN"], table, table_id="worst-pq")
            + ('<p class="muted">left: ground truth, right: prediction.</p>' + "".join(figs)
               if any(figs) else "") + "</section>")


def _semantic_worst(run: RunFolder) -> str:
    """A semantic run's worst images by mIoU: their scores, and each drawn as ground truth |
    prediction where the report folder has the picture."""
    sem = (run.eval_metrics or {}).get("sem_seg")
    if not isinstance(sem, dict) or not sem.get("worst_images"):
        return ""
    rows = [[w.get("file_name"), _cell(w.get("mIoU"), 1), _cell(w.get("pACC"), 1)]
            for w in sem["worst_images"]]
    figs = []
    for w in sem["worst_images"]:
        if w.get("png") and run.eval_dir is not None:
            figs.append(figure(run.eval_dir / w["png"],
                               f"{w.get('file_name')}: mIoU {_fmt(w.get('mIoU'), 1)}, "
                               f"pixel accuracy {_fmt(w.get('pACC'), 1)}"))
    return ('<section id="worst" class="gallery"><h2>Worst images (sem_seg, lowest mIoU first)'
            '</h2>' + _table(["image", "mIoU", "pixel accuracy"], rows, table_id="worst-sem_seg")
            + ('<p class="muted">left: ground truth, right: prediction, each class in its colour '
               "and named once.</p>" + "".join(figs) if any(figs) else "") + "</section>")


def config_section(run: RunFolder) -> str:
    env = _table(["package", "version"], environment())
    cfg = (f"<details><summary>config.yaml ({run.config.count(chr(10))} lines)</summary>"
           f"<pre>{esc(run.config)}</pre></details>") if run.config else \
        '<p class="muted">no config.yaml in the run folder</p>'
    return (f'<section id="config"><h2>Config and environment</h2>{cfg}'
            f"<h3>environment (when the report was made)</h3>{env}</section>")


def build_html(run: RunFolder, title: str | None = None) -> str:
    title = title or f"d2seg run report: {run.path.name}"
    sections = [training_section(run), metrics_section(run), per_class_section(run),
                plots_section(run), errors_section(run), worst_section(run), config_section(run)]
    sections = [s for s in sections if s]
    names = {"training": "Training", "metrics": "Metrics", "per-class": "Per class",
             "pr": "PR curves", "confusion": "Confusion", "errors": "Errors",
             "worst": "Worst images", "worst-panoptic": "Worst (PQ)", "config": "Config"}
    nav = "".join(f'<a href="#{k}">{v}</a>' for k, v in names.items()
                  if any(f'id="{k}"' in s for s in sections))
    csp = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
           "script-src 'unsafe-inline'")
    stamp = time.strftime("%Y-%m-%d %H:%M")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{esc(title)}</h1><p>{esc(run.path.resolve())} &middot; made {stamp}</p>"
        f"</header><nav>{nav}</nav><main>{''.join(sections)}</main>"
        f"<script>{JS}</script></body></html>\n")


def write_report(run_dir, out=None, analysis_dir=None, title: str | None = None) -> Path:
    """Write ``out`` (default ``RUN_DIR/report.html``) for the run folder ``run_dir``."""
    from d2seg.io.files import write_text_atomic

    run = read_run(run_dir, analysis_dir)
    out = Path(out) if out else Path(run_dir) / "report.html"
    return write_text_atomic(out, build_html(run, title))
