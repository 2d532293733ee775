"""``d2seg export``: write a trained model as an ONNX folder that serves without torch."""

from __future__ import annotations

FORMATS = ("onnx",)


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a trained Mask R-CNN, Panoptic FPN or semantic "
                                      "model to ONNX (served by d2seg predict --model / "
                                      "d2seg.deploy.load, no torch)")
    p.add_argument("--config-file", required=True, metavar="YAML")
    p.add_argument("--weights", required=True, metavar="FILE", help="trained checkpoint (.pth)")
    p.add_argument("--dataset", metavar="NAME",
                   help="registered dataset whose classes the model has (names, category ids "
                        "and the class count when the config leaves it to the data)")
    p.add_argument("--format", default="onnx", choices=FORMATS)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for model.onnx, model.json and config.yaml")
    p.add_argument("--no-check", action="store_true",
                   help="skip running the written graph against PyTorch on a test picture")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY VALUE")
    p.set_defaults(run=run)


def run(args) -> int:
    from detectron2.data import MetadataCatalog

    from d2seg.config import load_config
    from d2seg.deploy.export import export_onnx
    from d2seg.data.register import register_datasets
    from d2seg.config.prepare import prepare_config

    register_datasets()
    overrides = list(args.opts)
    names = category_ids = colors = stuff_names = stuff_colors = None
    if args.dataset:
        overrides += ["DATASETS.TRAIN", f"('{args.dataset}',)", "DATASETS.TEST", "()"]
    cfg = load_config(args.config_file, overrides + ["MODEL.DEVICE", "cpu"])
    if args.dataset:
        cfg = prepare_config(cfg)
        meta = MetadataCatalog.get(args.dataset)
        names = meta.get("thing_classes", None)
        colors = meta.get("thing_colors", None)
        to_contiguous = meta.get("thing_dataset_id_to_contiguous_id", None)
        if to_contiguous:
            by_index = {v: k for k, v in to_contiguous.items()}
            category_ids = [by_index[i] for i in range(len(by_index))]
        stuff_names = meta.get("stuff_classes", None)
        stuff_colors = meta.get("stuff_colors", None)
    meta = export_onnx(cfg, args.weights, args.out, class_names=names, category_ids=category_ids,
                       colors_rgb=colors, stuff_names=stuff_names, stuff_colors_rgb=stuff_colors,
                       dataset=args.dataset, check=not args.no_check)
    count = (meta.get("classes") or meta["semantic_classes"])["count"]
    print(f"exported {meta['architecture']} ({count} classes) to "
          f"{args.out}/model.onnx and model.json")
    return 0
