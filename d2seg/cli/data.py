"""``d2seg data list|check|stats|show|convert|merge``: look at a dataset before training on it."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path


def _target_args(p, images_help="image folder (when TARGET is a JSON file)"):
    p.add_argument("target", metavar="NAME|MANIFEST|JSON",
                   help="a dataset manifest name or YAML path, or a COCO JSON file")
    p.add_argument("--split", help="only this split of the manifest (default: all)")
    p.add_argument("--images", help=images_help)
    p.add_argument("--panoptic-root", help="panoptic PNG folder (when TARGET is a JSON file)")


def add_parser(sub) -> None:
    data = sub.add_parser("data", help="check, describe, show and convert datasets")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    p = dsub.add_parser("list", help="the datasets d2seg registered (datasets/, $D2SEG_DATASETS)")
    p.set_defaults(run=run_list)

    p = dsub.add_parser("check", help="find problems that would break or degrade training")
    _target_args(p)
    p.add_argument("--fix", metavar="OUT", help="write a cleaned copy of the JSON to OUT "
                   "(with one split) and OUT's .report.json listing every change")
    p.add_argument("--no-decode", action="store_true",
                   help="read image headers only (faster; misses truncated files)")
    p.add_argument("--tolerance", type=float, default=1.0,
                   help="pixels a polygon/box may leave the image (default 1)")
    p.add_argument("--max-lines", type=int, default=20,
                   help="print at most this many lines per kind of problem (default 20; "
                   "0 = all)")
    p.set_defaults(run=run_check)

    p = dsub.add_parser("stats", help="class counts, masks per image, COCO size buckets")
    _target_args(p)
    p.add_argument("--out", metavar="DIR", help="write stats JSON and PNG here")
    p.set_defaults(run=run_stats)

    p = dsub.add_parser("show", help="draw ground-truth overlays")
    _target_args(p)
    p.add_argument("--out", metavar="DIR", required=True, help="folder for the overlays")
    p.add_argument("-n", type=int, default=8, help="number of images per split (default 8)")
    p.set_defaults(run=run_show)

    p = dsub.add_parser("convert", help="labelme / mask PNGs -> COCO instances JSON")
    csub = p.add_subparsers(dest="convert_from", metavar="FORMAT", required=True)
    c = csub.add_parser("labelme", help="a folder of labelme JSON files")
    c.add_argument("src", help="folder with labelme *.json")
    c.add_argument("out", help="output COCO JSON")
    c.add_argument("--labels", help="class order: comma-separated names, or a labels file with "
                   "one name a line (labelme's labels.txt); __ignore__ is never a class "
                   "(default: sorted names)")
    c.set_defaults(run=run_convert)
    for name, what in (("masks", "instance-id PNGs: class_index*divisor + instance"),
                       ("semantic", "semantic PNGs: pixel = class index")):
        c = csub.add_parser(name, help=what)
        c.add_argument("src", help="folder of label PNGs")
        c.add_argument("out", help="output COCO JSON")
        c.add_argument("--images", required=True, help="folder with the images (same stems)")
        c.add_argument("--classes", required=True, help="comma-separated class names")
        if name == "masks":
            c.add_argument("--divisor", type=int, default=1000)
        else:
            c.add_argument("--ignore-label", type=int, default=255)
        c.set_defaults(run=run_convert)

    p = dsub.add_parser("merge", help="join COCO instances files (reviewed labels, new batches)")
    p.add_argument("inputs", nargs="+", metavar="JSON", help="COCO instances files, in order")
    p.add_argument("--out", required=True, metavar="JSON", help="the merged COCO file")
    p.add_argument("--images", nargs="+", metavar="DIR",
                   help="each input's image folder, in order (inputs from different folders); "
                        "file names then become relative to --root")
    p.add_argument("--root", metavar="DIR",
                   help="with --images: the merged file's image folder (default: their common "
                        "folder)")
    p.add_argument("--prefer", metavar="JSON|first|last",
                   help="whose labels win for an image in two inputs (default: an error)")
    p.add_argument("--drop-score", action="store_true",
                   help="remove the 'score' field pre-annotations carry")
    p.set_defaults(run=run_merge)


def _splits(args, *, semantic_ok=False):
    from d2seg.data.splits import resolve_splits
    from d2seg.errors import D2SegError

    splits = resolve_splits(args.target, split=args.split, images=args.images,
                            panoptic_root=args.panoptic_root)
    if not semantic_ok and any(s.kind == "sem_seg" for s in splits):
        raise D2SegError(f"'{args.data_command}' covers COCO instances and panoptic datasets",
                         where=args.target, hint="for sem_seg manifests use d2seg data check")
    return splits


def _out_name(label: str) -> str:
    """A file name for a split: the JSON's stem, or "<dataset>_<split>"."""
    return Path(label).stem if label.endswith(".json") else label.replace("/", "_")


def _need_images(s):
    from d2seg.errors import D2SegError

    if s.image_root is None:
        raise D2SegError("the image folder is unknown", file=str(s.json_path),
                         hint="pass --images DIR")


def run_list(args) -> int:
    """One line per dataset declared by a manifest: name, task, classes. Reads the manifests
    and each JSON's categories only (cached; no torch, no whole-JSON parse)."""
    from d2seg.data import catalog
    from d2seg.data.manifest import BROKEN_MANIFESTS

    names = catalog.scan_names()
    for error in BROKEN_MANIFESTS.values():
        print(f"not registered: {error.one_line()}", file=sys.stderr)
    if not names:
        print("no datasets registered: add a manifest to a folder listed in $D2SEG_DATASETS (or to datasets/ in a checkout)")
        return 0
    width = max(len(n) for n in names)
    for name in names:
        meta = catalog.dataset_info(name).base
        classes = meta.get("thing_classes", None) or meta.get("stuff_classes", None) or []
        print(f"{name:<{width}}  {meta.get('evaluator_type', '?'):<17}  {len(classes)} classes")
    return 0


def run_check(args) -> int:
    from d2seg.data.check import check_coco
    from d2seg.data.check_semantic import check_sem_seg
    from d2seg.data.fix import fix_coco
    from d2seg.errors import D2SegError

    splits = _splits(args, semantic_ok=True)
    if args.fix and len(splits) != 1:
        raise D2SegError("--fix needs exactly one split", hint="add --split NAME")
    if args.fix and splits[0].kind == "sem_seg":
        raise D2SegError("--fix rewrites COCO JSON; label PNGs are not changed",
                         where=args.target, hint="fix the PNGs the lines above name")
    failed = False
    for s in splits:
        _need_images(s)
        if s.kind == "sem_seg":
            result = check_sem_seg(s.image_root, s.sem_seg_root, num_classes=s.num_classes,
                                   ignore_label=s.ignore_label, decode=not args.no_decode)
        else:
            result = check_coco(s.json_path, s.image_root, panoptic_root=s.panoptic_root,
                                decode=not args.no_decode, tolerance=args.tolerance)
        c = result.counts
        what = ("label PNGs", "classes", "without a label") if s.kind == "sem_seg" else (
            "annotations", "categories", "without annotations")
        print(f"{s.label} ({result.kind}): {c['images']} images, {c['annotations']} {what[0]}, "
              f"{c['categories']} {what[1]}, {c['images_without_annotations']} images "
              f"{what[2]}")
        by_kind = result.by_kind()
        if by_kind:
            width = max(map(len, by_kind)) + 2
            print(f"  {'problem':<{width}}{'severity':<10}count")
            for kind, n in sorted(by_kind.items()):
                sev = next(p.severity for p in result.problems if p.kind == kind)
                print(f"  {kind:<{width}}{sev:<10}{n}")
        shown = Counter()
        for p in sorted(result.problems, key=lambda p: p.severity != "error"):
            shown[p.kind] += 1
            if args.max_lines and shown[p.kind] > args.max_lines:
                continue
            img = "-" if p.image_id is None else p.image_id
            ann = "-" if p.annotation_id is None else p.annotation_id
            print(f"{p.severity}: {p.file}: image {img}: annotation {ann}: {p.kind}: "
                  f"{p.message}; {p.fix}")
        for kind, n in sorted(shown.items()):
            if args.max_lines and n > args.max_lines:
                print(f"... {n - args.max_lines} more {kind} (see --max-lines)")
        status = "ok" if result.ok else "FAILED"
        print(f"{s.label}: {status}: {c['errors']} errors, {c['warnings']} warnings")
        failed |= not result.ok
        if args.fix:
            out, report, changes = fix_coco(s.json_path, args.fix, s.image_root,
                                            panoptic_root=s.panoptic_root,
                                            tolerance=args.tolerance,
                                            decode=not args.no_decode)
            print(f"wrote {out} ({len(changes)} changes, listed in {report})")
            after = check_coco(out, s.image_root, panoptic_root=s.panoptic_root, decode=False,
                               tolerance=args.tolerance)
            left = ", ".join(f"{k} x{n}" for k, n in sorted(after.by_kind().items()))
            print(f"{out}: {'ok' if after.ok else 'FAILED'}: {len(after.errors)} errors, "
                  f"{len(after.warnings)} warnings" + (f" ({left})" if left else ""))
    return 1 if failed else 0


def run_stats(args) -> int:
    from d2seg.data.stats import dataset_stats, write_stats

    for s in _splits(args):
        st = dataset_stats(s.json_path)
        mpi = st["masks_per_image"]
        imb = st["class_imbalance"]
        print(f"{s.label} ({st['kind']}): {st['images']} images, {st['instances']} instances "
              f"({st['crowd']} crowd), {st['categories']} categories")
        print(f"  masks per image: min {mpi['min']}, mean {mpi['mean']:.1f}, median "
              f"{mpi['median']:g}, max {mpi['max']}; {mpi['images_without_annotations']} "
              "images without annotations")
        sz = st["sizes"]
        print(f"  sizes (COCO): {sz['small']} small, {sz['medium']} medium, {sz['large']} large")
        print(f"  class imbalance (max/min over present classes): "
              f"{'-' if imb is None else f'{imb:.1f}x'}; classes without instances: "
              f"{len(st['classes_without_instances'])}")
        width = max(map(len, st["instances_per_class"]), default=5) + 2
        for name, n in sorted(st["instances_per_class"].items(), key=lambda kv: -kv[1]):
            print(f"  {name:<{width}}{n}")
        if args.out:
            stem = _out_name(s.label)
            j, png = write_stats(st, args.out, stem=f"{stem}_stats")
            print(f"  wrote {j} and {png}")
    return 0


def run_show(args) -> int:
    from d2seg.visualize.ground_truth import render_ground_truth

    for s in _splits(args):
        _need_images(s)
        sub = Path(args.out) / _out_name(s.label)
        paths = render_ground_truth(s.json_path, s.image_root, sub, n=args.n,
                                    panoptic_root=s.panoptic_root)
        print(f"{s.label}: wrote {len(paths)} overlays to {sub}")
    return 0


def run_convert(args) -> int:
    from d2seg.data import converters

    if args.convert_from == "labelme":
        labels = args.labels or None
        if labels and not os.path.isfile(labels):
            labels = labels.split(",")
        summary = converters.labelme_to_coco(args.src, args.out, labels=labels)
    elif args.convert_from == "masks":
        summary = converters.instance_masks_to_coco(
            args.src, args.out, image_dir=args.images, classes=args.classes.split(","),
            divisor=args.divisor)
    else:
        summary = converters.semantic_masks_to_coco(
            args.src, args.out, image_dir=args.images, classes=args.classes.split(","),
            ignore_label=args.ignore_label)
    skipped = summary.get("skipped_shapes")
    print(f"wrote {args.out}: {summary['images']} images, {summary['annotations']} "
          f"annotations, {summary['categories']} categories"
          + (f"; skipped shapes: {skipped}" if skipped else ""))
    return 0


def run_merge(args) -> int:
    from d2seg.data.merge import merge_coco

    s = merge_coco(args.inputs, args.out, images=args.images, root=args.root,
                   prefer=args.prefer, drop_score=args.drop_score)
    for note in s["notes"]:
        print(f"note: {note}")
    print(f"wrote {s['out']}: {s['images']} images, {s['annotations']} annotations, "
          f"{s['categories']} categories"
          + (f"; images relative to {s['image_root']}" if s["image_root"] else ""))
    return 0
