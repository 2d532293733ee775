"""``d2seg export``: write a trained model as a folder that serves without detectron2: ONNX
(onnxruntime/OpenVINO, no torch) or TorchScript (torch + torchvision)."""

from __future__ import annotations

import sys

FORMATS = ("onnx", "torchscript")


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a trained Mask R-CNN, Panoptic FPN or semantic "
                                      "model to ONNX (no torch to serve it) or TorchScript (no "
                                      "detectron2), served by d2seg predict --model / "
                                      "d2seg.deploy.load")
    p.add_argument("--config-file", required=True, metavar="YAML")
    p.add_argument("--weights", required=True, metavar="FILE", help="trained checkpoint (.pth)")
    p.add_argument("--dataset", metavar="NAME",
                   help="registered dataset whose classes the model has (names, category ids "
                        "and the class count when the config leaves it to the data)")
    p.add_argument("--format", default="onnx", choices=FORMATS,
                   help="onnx: model.onnx, served by onnxruntime or OpenVINO (default); "
                        "torchscript: model.ts, served by torch + torchvision")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for the model file, model.json and config.yaml")
    p.add_argument("--min-score", type=float, default=None, metavar="S",
                   help="the lowest detection score the export keeps (sets "
                        "MODEL.ROI_HEADS.SCORE_THRESH_TEST; d2seg predict --min-score can raise "
                        "it when serving, not lower it)")
    p.add_argument("--no-check", action="store_true",
                   help="skip running the written model against PyTorch on a test picture")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY VALUE")
    p.set_defaults(run=run)


def run(args) -> int:
    from d2seg.config.classes import load_model_config
    from d2seg.data.register import register_datasets
    from d2seg.deploy.export import export_model

    register_datasets()
    opts = list(args.opts) + ["MODEL.DEVICE", "cpu"]
    if args.min_score is not None:
        opts += ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(args.min_score)]
    cfg, classes = load_model_config(args.config_file, opts, args.dataset)
    meta = export_model(cfg, args.weights, args.out, fmt=args.format, class_names=classes.names,
                        category_ids=classes.category_ids, colors_rgb=classes.colors,
                        stuff_names=classes.stuff_names, stuff_colors_rgb=classes.stuff_colors,
                        dataset=classes.dataset, check=not args.no_check)
    count = (meta.get("classes") or meta["semantic_classes"])["count"]
    print(f"exported {meta['architecture']} ({count} classes) to "
          f"{args.out}/{meta['model_file']} and model.json")
    if classes.note:
        print(classes.note, file=sys.stderr)
    return 0
