"""Which unlabelled images to label next: rank a pool by the model's uncertainty
(``d2seg.label.uncertainty``), write the ranked list and a contact sheet of the top images."""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np

from d2seg.errors import D2SegError
from d2seg.io.files import write_json_atomic, write_png_atomic, write_text_atomic
from d2seg.label.common import image_files, predicted_instances
from d2seg.label.uncertainty import MIN_SCORE, binary_entropy, image_uncertainty

__all__ = ["score_pool", "rank_pool", "contact_sheet"]


def _labelled_names(labelled) -> set[str]:
    """File names (and their base names) listed in COCO files of already labelled images."""
    from d2seg.io.json import read_json

    names: set[str] = set()
    for path in labelled or ():
        data = read_json(path, "labelled COCO file")
        images = data.get("images") if isinstance(data, dict) else None
        if not isinstance(images, list):
            raise D2SegError("'images' is missing or not a list", file=str(path), where="images")
        for im in images:
            if isinstance(im, dict) and isinstance(im.get("file_name"), str):
                names.add(Path(im["file_name"]).as_posix())
                names.add(Path(im["file_name"]).name)
    return names


def score_pool(model, files, measure: str = "sum", batch_size: int = 4,
               progress: bool | None = None, keep_detections: bool = False) -> list[dict]:
    """One row per image, in ``files`` order: ``file``, ``uncertainty``, ``detections`` (scored
    >= MIN_SCORE) and ``undecided`` (scored 0.3-0.7); with ``keep_detections`` also the arrays
    above MIN_SCORE (for drawing)."""
    image_uncertainty([], measure)  # an unknown measure fails before the model runs
    rows = []
    for f, _, arrays in predicted_instances(model, list(files), batch_size, progress,
                                            desc="rank"):
        scores = arrays["scores"].astype(float)
        keep = scores >= MIN_SCORE
        row = {"file": str(f), "uncertainty": image_uncertainty(scores, measure),
               "detections": int(keep.sum()),
               "undecided": int(((scores >= 0.3) & (scores <= 0.7)).sum()),
               "entropy": round(float(binary_entropy(scores[keep]).sum()), 6)}
        if keep_detections:
            row["arrays"] = {k: (v[keep] if v is not None else None) for k, v in arrays.items()}
        rows.append(row)
    return rows


#: detections drawn on the contact sheet: those scored at least this (all of them would bury
#: a small picture under labels)
SHEET_MIN_SCORE = 0.3


def contact_sheet(rows: list[dict], class_names, columns: int = 6, thumb: int = 200) -> np.ndarray:
    """A grid (BGR) of the ranked images with their detections scored >= SHEET_MIN_SCORE drawn
    (d2seg's renderer), each titled "#rank  uncertainty"."""
    from d2seg.io.images import read_image
    from d2seg.visualize.render import draw_instances

    columns = max(1, min(columns, len(rows)))
    tiles = []
    for rank, row in enumerate(rows, start=1):
        image = read_image(row["file"], "BGR")
        a = row.get("arrays")
        if a is not None:
            keep = a["scores"] >= SHEET_MIN_SCORE
            a = {k: (v[keep] if v is not None else None) for k, v in a.items()}
        if a is not None and len(a["scores"]):
            image = draw_instances(image, masks=a["masks"], boxes=a["boxes"].astype(np.float64),
                                   classes=a["classes"].tolist(),
                                   scores=a["scores"].astype(float).tolist(),
                                   class_names=class_names)
        h, w = image.shape[:2]
        s = thumb / max(h, w)
        small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))),
                           interpolation=cv2.INTER_AREA)
        tile = np.full((thumb + 24, thumb, 3), 255, np.uint8)
        tile[24:24 + small.shape[0], :small.shape[1]] = small
        cv2.putText(tile, f"#{rank}  {row['uncertainty']:.2f}", (4, 17),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(tile)
    rows_n = math.ceil(len(tiles) / columns)
    sheet = np.full((rows_n * (thumb + 28), columns * (thumb + 4), 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[r * (thumb + 28):r * (thumb + 28) + tile.shape[0],
              c * (thumb + 4):c * (thumb + 4) + tile.shape[1]] = tile
    return sheet


def rank_pool(model, pool, out_dir, n: int = 50, measure: str = "sum", labelled=None,
              batch_size: int = 4, sheet_size: int = 24, progress: bool | None = None) -> dict:
    """Rank the images of ``pool`` (folders, files, globs) by uncertainty, most uncertain first,
    leaving out those whose file name a COCO file in ``labelled`` lists. Writes into
    ``out_dir``: ``ranking.json`` (every image: rank, file, uncertainty, detections,
    undecided), ``next.txt`` (the top ``n`` paths, one a line) and ``contact_sheet.png`` (the
    top ``min(n, sheet_size)`` with their detections). Returns a summary."""
    if n < 1:
        raise D2SegError(f"must be at least 1, got {n}", where="-n")
    files = image_files(pool)
    skip = _labelled_names(labelled)
    if skip:
        roots = [Path(p) for p in pool if os.path.isdir(p)]

        def listed(f: Path) -> bool:
            rels = [f.relative_to(r).as_posix() for r in roots if f.is_relative_to(r)]
            return f.name in skip or any(r in skip for r in rels)

        files = [f for f in files if not listed(f)]
        if not files:
            raise D2SegError("every image of the pool is already labelled",
                             file=", ".join(map(str, pool)), where="--labelled")
    rows = score_pool(model, files, measure, batch_size, progress, keep_detections=True)
    order = sorted(range(len(rows)), key=lambda i: (-rows[i]["uncertainty"], rows[i]["file"]))
    ranked = [rows[i] for i in order]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    public = [{"rank": r + 1, **{k: v for k, v in row.items() if k != "arrays"}}
              for r, row in enumerate(ranked)]
    write_json_atomic(out / "ranking.json", {"measure": measure, "min_score": MIN_SCORE,
                                             "images": public}, indent=1)
    top = ranked[:n]
    write_text_atomic(out / "next.txt", "".join(r["file"] + "\n" for r in top))
    sheet = contact_sheet(top[:sheet_size], model.class_names)
    write_png_atomic(out / "contact_sheet.png", sheet)
    return {"pool": len(rows), "chosen": len(top), "ranking": str(out / "ranking.json"),
            "next": str(out / "next.txt"), "sheet": str(out / "contact_sheet.png"),
            "top": public[:n]}
