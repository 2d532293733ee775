"""``d2seg predict``: run a model on images, folders, globs or videos."""

from __future__ import annotations

import sys


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="predict on images/folders/globs/videos; COCO JSON + pictures")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video files, folders, globs")
    p.add_argument("--config-file", metavar="YAML", help="the model's config (with --weights)")
    p.add_argument("--weights", metavar="FILE", help="trained checkpoint (.pth)")
    p.add_argument("--model", metavar="DIR",
                   help="an export folder from d2seg export (instead of --config-file/--weights; "
                        "an ONNX export runs without torch, a TorchScript one without detectron2)")
    p.add_argument("--backend", choices=("onnxruntime", "openvino", "torchscript"), default=None,
                   help="with --model: the runtime (default: the folder's format's, onnxruntime "
                        "for ONNX, torchscript for TorchScript; openvino needs "
                        "pip install 'd2seg[openvino]')")
    p.add_argument("--task", choices=("instances", "semantic", "panoptic"), default=None,
                   help="with --model: the task the export must be of (an error otherwise)")
    p.add_argument("--dataset", metavar="NAME", help="registered dataset whose classes the model has")
    p.add_argument("--out", default="runs/predict", metavar="DIR")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--score-thresh", type=float, default=0.5,
                   help="drawing threshold (every kept detection goes to the JSON)")
    p.add_argument("--min-score", type=float, default=None, metavar="S",
                   help="keep only detections scoring above S, in the JSON too (default: the "
                        "model's MODEL.ROI_HEADS.SCORE_THRESH_TEST, or the export's threshold, "
                        "below which an exported model cannot go)")
    p.add_argument("--no-render", action="store_true", help="only write results.json")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY VALUE")
    p.set_defaults(run=run)


def run(args) -> int:
    from d2seg.errors import D2SegError

    if args.model:
        if args.config_file or args.weights or args.dataset or args.opts:
            raise D2SegError("--model takes the classes and the config from the export folder",
                             where="--model",
                             hint="drop --config-file/--weights/--dataset/--opts, or --model")
        return run_exported(args)
    for flag, value in (("--backend", args.backend), ("--task", args.task)):
        if value:
            raise D2SegError(f"{flag} is for an exported model", where=flag,
                             hint="use it with --model DIR (an export folder)")
    if not (args.config_file and args.weights):
        raise D2SegError("which model? pass --config-file YAML --weights FILE, or --model DIR "
                         "(an export folder)", where="d2seg predict")
    from d2seg.config.classes import load_model_config
    from d2seg.data.register import register_datasets
    from d2seg.engine.predict import predict

    register_datasets()
    opts = list(args.opts)
    if args.min_score is not None:
        opts += ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(args.min_score)]
    cfg, classes = load_model_config(args.config_file, opts, args.dataset)
    if cfg.MODEL.DEVICE == "auto":
        import torch

        cfg.defrost()
        cfg.MODEL.DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    if args.min_score is not None and cfg.MODEL.META_ARCHITECTURE == "SemanticSegmentor":
        raise D2SegError("a semantic model has no detection scores to threshold",
                         where="--min-score", hint="drop --min-score")
    summary = predict(cfg, args.inputs, args.out, weights=args.weights, batch_size=args.batch_size,
                      render=not args.no_render, score_thresh=args.score_thresh,
                      class_names=classes.names,
                      contiguous_to_category=classes.contiguous_to_category,
                      stuff_names=classes.stuff_names, stuff_colors=classes.stuff_colors)
    from d2seg.engine.predict import summary_line

    print(summary_line(summary))
    if classes.note:
        print(classes.note, file=sys.stderr)
    return 0


def run_exported(args) -> int:
    """``--model DIR``: the same outputs from an exported model (an ONNX one imports no torch)."""
    from d2seg.deploy import load
    from d2seg.engine.predict import predict, summary_line

    model = load(args.model, task=args.task, backend=args.backend, min_score=args.min_score)
    summary = predict(None, args.inputs, args.out, batch_size=args.batch_size,
                      render=not args.no_render, score_thresh=args.score_thresh,
                      class_names=model.class_names,
                      contiguous_to_category=model.contiguous_to_category,
                      stuff_names=model.stuff_names, stuff_colors=model.stuff_colors,
                      predictor=model.predict_batch)
    print(summary_line(summary))
    return 0
