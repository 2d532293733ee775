"""report.html in a real browser: headless Chromium (Debian's ``chromium``, installed by
``make browser``) driven by Playwright: no console error, every image loaded, the per-class
table sorts on a header click, readable at phone width; screenshots in the test's tmp dir."""

from __future__ import annotations

import os
import shutil

import pytest

from d2seg.cli.main import main

pytestmark = pytest.mark.slow

LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"]


def _chromium() -> str:
    for candidate in (os.environ.get("D2SEG_CHROMIUM"), "chromium", "chromium-browser",
                      "/usr/lib/chromium/chromium"):
        if candidate and (path := shutil.which(candidate)):
            return path
    pytest.skip("no Chromium executable (Debian: `make browser`, i.e. apt-get install chromium; "
                "or set D2SEG_CHROMIUM)")


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="needs the playwright package (test extra)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=LAUNCH_ARGS)
        yield b
        b.close()


def _open(browser, url, width):
    page = browser.new_page(viewport={"width": width, "height": 900})
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "assert") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.goto(url, wait_until="load")
    return page, problems


def _column(page, table, col):
    return page.eval_on_selector(
        table, f"t => Array.from(t.tBodies[0].rows).map(r => r.cells[{col}].textContent.trim())")


def test_report_in_headless_chromium(run_folder, browser, tmp_path):
    report = tmp_path / "report.html"
    assert main(["report", str(run_folder), "--out", str(report)]) == 0
    page, problems = _open(browser, report.resolve().as_uri(), 1280)
    images = page.eval_on_selector_all(
        "img", "imgs => imgs.map(i => [i.alt, i.complete, i.naturalWidth])")
    assert len(images) >= 9
    assert all(complete and width > 0 for _, complete, width in images), images

    table = "#per-class-segm"
    headers = page.eval_on_selector(table, "t => Array.from(t.tHead.rows[0].cells).map(c => "
                                           "c.textContent)")
    col = headers.index("objects")
    page.click(f"{table} thead th:nth-child({col + 1})")
    values = [int(v) for v in _column(page, table, col)]
    assert values == sorted(values)
    assert page.get_attribute(f"{table} thead th:nth-child({col + 1})",
                              "aria-sort") == "ascending"
    page.click(f"{table} thead th:nth-child({col + 1})")
    assert [int(v) for v in _column(page, table, col)] == sorted(values, reverse=True)
    page.click(f"{table} thead th:nth-child(1)")  # text column
    names = _column(page, table, 0)
    assert names == sorted(names, key=str.lower)
    page.screenshot(path=str(tmp_path / "report_desktop.png"), full_page=True)
    assert problems == []

    phone, problems = _open(browser, report.resolve().as_uri(), 390)
    # nothing wider than the screen except inside the horizontally scrolling table boxes
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    phone.screenshot(path=str(tmp_path / "report_phone.png"), full_page=False)
    assert problems == []
    assert (tmp_path / "report_desktop.png").stat().st_size > 0


def test_a_trained_runs_report_in_headless_chromium(browser, tmp_path):
    """After a real (3-iteration) demo training, report.html is in the run folder; its COCO table
    shows the segm AP pycocotools computes from the run's results file; it has the training,
    error-breakdown and config sections and loads in Chromium with no error and every image."""
    import contextlib
    import io
    import json
    from pathlib import Path

    from detectron2.data import MetadataCatalog
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from d2seg.runners.demo import run_instance_demo

    result = run_instance_demo(tmp_path, max_iter=3, num_pictures=1,
                               overrides=["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])
    out = Path(result["output"])
    report = out / "report.html"
    assert result["written"]["html"] == str(report) and report.is_file()
    detections = json.loads((out / "eval" / "demo_instances_val" /
                             "coco_instances_results.json").read_text())
    assert detections, "the barely trained model kept no detection at score threshold 0"
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(MetadataCatalog.get("demo_instances_val").json_file)
        ev = COCOeval(gt, gt.loadRes([{k: v for k, v in d.items() if k != "bbox"}
                                      for d in detections]), "segm")
        ev.evaluate(); ev.accumulate(); ev.summarize()

    # the hints' training facts (d2seg.analysis.hints) are the training split's counts
    analysis = json.loads((out / "analysis" / "analysis.json").read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        train = COCO(MetadataCatalog.get("demo_instances_train").json_file)
    counted = {c["name"]: len(train.getAnnIds(catIds=[c["id"]], iscrowd=False))
               for c in train.loadCats(train.getCatIds())}
    assert analysis["training_facts"]["instances_per_class"] == counted
    assert analysis["training_facts"]["images"] == len(train.getImgIds())
    assert isinstance(analysis["hints"], list)

    page, problems = _open(browser, report.resolve().as_uri(), 1280)
    sections = page.eval_on_selector_all("section", "s => s.map(x => x.id)")
    assert {"training", "metrics", "errors", "config"} <= set(sections), sections
    rows = page.eval_on_selector(
        "#metrics table", "t => Array.from(t.tBodies[0].rows).map(r => "
                          "Array.from(r.cells).map(c => c.textContent.trim()))")
    segm = next(r for r in rows if r[0] == "segm")
    assert segm[1] == f"{100 * ev.stats[0]:.1f}"
    images = page.eval_on_selector_all(
        "img", "imgs => imgs.map(i => [i.alt, i.complete, i.naturalWidth])")
    assert images and all(complete and width > 0 for _, complete, width in images), images
    page.screenshot(path=str(tmp_path / "trained_run_report.png"), full_page=True)
    assert problems == []


def _fits_a_phone(browser, report, screenshot):
    """At 390 px nothing is wider than the screen (tables scroll inside their boxes) and the
    images still load."""
    phone, problems = _open(browser, report.resolve().as_uri(), 390)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    _all_images_loaded(phone)
    phone.screenshot(path=str(screenshot), full_page=False)
    assert problems == []


def _all_images_loaded(page):
    images = page.eval_on_selector_all(
        "img", "imgs => imgs.map(i => [i.alt, i.complete, i.naturalWidth])")
    assert images and all(complete and width > 0 for _, complete, width in images), images
    return images


def test_semantic_report_gallery_in_headless_chromium(semantic_run, browser, tmp_path):
    """A semantic run's report: the worst-images table lists the frames in the order of
    report/metrics.json, each worst image's ground truth | prediction drawing loads, the
    per-class IoU table sorts, no console error, and it fits a phone-width screen."""
    import json

    root, _ = semantic_run
    assert main(["report", str(root)]) == 0
    worst = json.loads((root / "report" / "metrics.json").read_text())["sem_seg"]["worst_images"]
    page, problems = _open(browser, (root / "report.html").resolve().as_uri(), 1280)
    images = _all_images_loaded(page)
    drawn = [alt for alt, _, _ in images if alt.startswith("0016E5_")]
    assert [alt.split(":")[0] for alt in drawn] == [w["file_name"] for w in worst]
    assert [r for r in _column(page, "#worst-sem_seg", 0)] == [w["file_name"] for w in worst]
    table = "#per-class-sem_seg"
    page.click(f"{table} thead th:nth-child(2)")  # IoU
    values = [float(v) for v in _column(page, table, 1) if v != "-"]
    assert values == sorted(values)
    page.screenshot(path=str(tmp_path / "semantic_report.png"), full_page=True)
    assert problems == []
    _fits_a_phone(browser, root / "report.html", tmp_path / "semantic_phone.png")


def test_panoptic_eval_report_in_headless_chromium(shared_data, browser, tmp_path):
    """d2seg eval on the panopticapi sample (ground truth against itself with one segment of
    each image dropped) with --images: report.html's worst-PQ drawings load, the per-class PQ
    table sorts by PQ, no console error, and it fits a phone-width screen."""
    import json

    import numpy as np

    from d2seg.panoptic.export import write_panoptic_png
    from d2seg.io.panoptic_png import read_panoptic_png

    root = shared_data / "panopticapi_sample" / "sample_data"
    gt = json.loads((root / "panoptic_examples.json").read_text())
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    for ann in gt["annotations"]:
        ids = read_panoptic_png(root / "panoptic_examples" / ann["file_name"]).astype(np.int64)
        dropped = ann["segments_info"].pop(0)
        ids[ids == dropped["id"]] = 0
        write_panoptic_png(pred_dir / ann["file_name"], ids)
    (tmp_path / "pred.json").write_text(json.dumps(gt))
    out = tmp_path / "o"
    assert main(["eval", "--panoptic-gt-json", str(root / "panoptic_examples.json"),
                 "--panoptic-pred-json", str(tmp_path / "pred.json"), "--images",
                 str(root / "input_images"), "--out", str(out), "--workers", "1"]) == 0
    page, problems = _open(browser, (out / "report.html").resolve().as_uri(), 1280)
    images = _all_images_loaded(page)
    assert len([alt for alt, _, _ in images if alt.startswith("000000")]) == 2
    table = "#per-class-panoptic"
    page.click(f"{table} thead th:nth-child(3)")  # PQ
    values = [float(v) for v in _column(page, table, 2)]
    assert values == sorted(values) and values[0] < 100.0
    page.screenshot(path=str(tmp_path / "panoptic_report.png"), full_page=True)
    assert problems == []
    _fits_a_phone(browser, out / "report.html", tmp_path / "panoptic_phone.png")
