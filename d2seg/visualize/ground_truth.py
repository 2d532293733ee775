"""Draw ground truth over images, so a user can see what the model will be taught.

Picks the images and decodes their annotations; the drawing is ``d2seg.visualize``'s renderer
(instances: masks, contours, boxes, class names; panoptic: segments coloured by class).
"""

from __future__ import annotations

import os
from pathlib import Path

from d2seg.data.coco_files import is_panoptic, load_coco_json
from d2seg.io.images import read_image
from d2seg.errors import D2SegError
from d2seg.io.panoptic_png import read_panoptic_png


def render_ground_truth(json_path: str | os.PathLike, image_root: str | os.PathLike,
                        out_dir: str | os.PathLike, *, n: int = 8,
                        panoptic_root: str | os.PathLike | None = None) -> list[Path]:
    """Write overlays of the first ``n`` images (sorted by id) into ``out_dir``; return paths."""
    from d2seg.visualize import annotations_from_coco, draw_instances, draw_panoptic
    from d2seg.io.files import write_png_atomic

    data = load_coco_json(json_path)
    panoptic = is_panoptic(data)
    if panoptic and panoptic_root is None:
        raise D2SegError("a panoptic dataset needs its PNG folder", file=str(json_path),
                         hint="set panoptic_root in the manifest (or --panoptic-root)")
    names = {c["id"]: c.get("name", str(c["id"])) for c in data["categories"]}
    isthing = {c["id"]: bool(c.get("isthing", 1)) for c in data["categories"]}
    pan_by_image = {a.get("image_id"): a for a in data["annotations"]} if panoptic else {}
    out_dir = Path(out_dir)
    written = []
    for img in sorted(data["images"], key=lambda i: i["id"])[:n]:
        path = Path(image_root) / img["file_name"]
        image = read_image(path, "BGR")  # one-line error naming the file when unreadable
        if panoptic:
            ann = pan_by_image.get(img["id"])
            drawn = image if ann is None else draw_panoptic(
                image, read_panoptic_png(Path(panoptic_root) / ann["file_name"]),
                ann.get("segments_info", []), class_names=names, isthing=isthing)
        else:
            gt = annotations_from_coco(data, img["id"])
            drawn = draw_instances(image, masks=gt.masks, boxes=gt.boxes, classes=gt.classes,
                                   class_names=names)
        written.append(write_png_atomic(out_dir / f"{Path(img['file_name']).stem}_gt.png", drawn))
    return written
