"""Export a trained Mask R-CNN, Panoptic FPN or semantic segmentation model to a folder that
``d2seg.deploy.load`` serves: ONNX (``model.onnx``, served by onnxruntime or OpenVINO without
torch) or TorchScript (``model.ts``, served by torch and torchvision without detectron2).

The graph is detectron2's inference up to, not including, its post-processing: pixel
normalisation, padding to the size divisibility, backbone (and FPN), then

* Mask R-CNN: RPN (with its NMS), box head (score threshold, per-class NMS, top detections)
  and mask head; outputs ``boxes`` (N, 4) at the resized size, ``classes``, ``scores`` and
  ``mask_probs`` (N, 1, 28, 28);
* a semantic model (SemanticSegmentor): the semantic head; output ``sem_seg_logits`` (K, H', W')
  at the padded resized size;
* Panoptic FPN: both of the above.

It is traced with detectron2's ``TracingAdapter`` (which flattens Instances into tensors), then
written by torch's TorchScript ONNX exporter (``dynamo=False``) or saved as the traced
TorchScript module (``torch.jit.trace``; its outputs are a tuple, model.json names them). Its
input is the resized image, CHW uint8 in the model's channel order, any height and width. The
resize before, and after it the box scaling, mask pasting, logits crop/resize/argmax and
Panoptic FPN's combination of instances and semantic labels, are d2seg's own numpy/OpenCV code
(``d2seg.deploy.runtime``, ``d2seg.panoptic.combine_numpy``), whichever the format.

model.json beside the model file records what a server needs: the task, the model's format and
file, class names, colours and dataset category ids, the input format (channel order, pixel
mean/std, the resize rule, the size divisibility), the score/NMS thresholds, the panoptic
combination's thresholds, and the d2seg/torch/detectron2 versions.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from d2seg.deploy import FORMAT
from d2seg.deploy.runtime import resize_image, resized_shape
from d2seg.errors import D2SegError
from d2seg.io.files import open_temporary_beside, write_json_atomic, write_text_atomic

OPSET = 17
# the flattened Instances fields TracingAdapter returns, in its (sorted) order, and our names
_TRACED_FIELDS = {"pred_boxes": "boxes", "pred_classes": "classes", "pred_masks": "mask_probs",
                  "scores": "scores"}
# what each task's graph returns under each key of the traced dict, besides the instances
_TRACED_TENSORS = {"sem_seg": "sem_seg_logits"}
_ARCHITECTURES = {"instances": "Mask R-CNN (GeneralizedRCNN)", "panoptic": "Panoptic FPN",
                  "semantic": "semantic segmentation (SemanticSegmentor)"}


def check_exportable(cfg) -> str:
    """The task a config's model is exported for: ``instances`` (Mask R-CNN: GeneralizedRCNN
    with masks, no keypoints), ``panoptic`` (PanopticFPN with masks) or ``semantic``
    (SemanticSegmentor); anything else is one error line."""
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch == "SemanticSegmentor":
        return "semantic"
    if arch in ("GeneralizedRCNN", "PanopticFPN") and cfg.MODEL.MASK_ON \
            and not cfg.MODEL.KEYPOINT_ON:
        return "instances" if arch == "GeneralizedRCNN" else "panoptic"
    masks = " without masks" if arch in ("GeneralizedRCNN", "PanopticFPN") and \
        not cfg.MODEL.MASK_ON else (" with keypoints" if cfg.MODEL.KEYPOINT_ON else "")
    raise D2SegError(f"d2seg export supports Mask R-CNN (GeneralizedRCNN with MASK_ON), "
                     f"Panoptic FPN and SemanticSegmentor models; this config builds "
                     f"{arch}{masks}", where="MODEL.META_ARCHITECTURE")


def sample_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A deterministic BGR test picture: smooth colour blobs, so the model finds regions."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(h // 16, 2), max(w // 16, 2), 3), dtype=np.uint8)
    import cv2

    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _model_input(image_bgr: np.ndarray, cfg):
    """The graph's input for a BGR image: resized like the test set, channel order, CHW."""
    h, w = image_bgr.shape[:2]
    resized = resize_image(image_bgr, *resized_shape(h, w, cfg.INPUT.MIN_SIZE_TEST,
                                                     cfg.INPUT.MAX_SIZE_TEST))
    if cfg.INPUT.FORMAT == "RGB":
        resized = resized[:, :, ::-1]
    return np.ascontiguousarray(resized.transpose(2, 0, 1))


def _raw_inference(model, inputs):
    """detectron2's inference without its post-processing (no resize back, no mask pasting)."""
    return [{"instances": model.inference(inputs, do_postprocess=False)[0]}]


def _raw_panoptic(model, inputs):
    """Panoptic FPN's detections and semantic logits (padded size) before post-processing: the
    resize back, mask pasting and the panoptic combination run in numpy (runtime)."""
    detections, sem_seg = model.inference(inputs, do_postprocess=False)
    return [{"instances": detections[0], "sem_seg": sem_seg[0]}]


def _raw_semantic(model, inputs):
    """SemanticSegmentor's logits at the padded input size (its forward without
    ``sem_seg_postprocess``, which crops and resizes; the runtime does that)."""
    from detectron2.structures import ImageList

    images = [(x["image"].to(model.device) - model.pixel_mean) / model.pixel_std for x in inputs]
    images = ImageList.from_tensors(images, model.backbone.size_divisibility)
    logits, _ = model.sem_seg_head(model.backbone(images.tensor), None)
    return [{"sem_seg": logits[0]}]


_INFERENCE = {"instances": _raw_inference, "panoptic": _raw_panoptic, "semantic": _raw_semantic}


def _traced_output_names(adapter) -> list[str]:
    """Our names of the adapter's flattened outputs, in order (checked, so a detectron2 that
    flattens differently fails here rather than mislabelling outputs)."""
    try:
        per_image = adapter.outputs_schema.schemas[0]
        keys, schemas = list(per_image.keys), list(per_image.schemas)
    except (AttributeError, IndexError) as e:
        raise D2SegError(f"unexpected traced output layout ({e}); this detectron2 version is not "
                         "supported by d2seg export") from None
    names: list[str] = []
    for key, schema in zip(keys, schemas):
        if key == "instances":
            fields = list(getattr(schema, "keys", []))
            if sorted(fields) != sorted(_TRACED_FIELDS) or list(schema.sizes) != [1] * len(fields):
                raise D2SegError(f"the traced model returns {fields}, expected "
                                 f"{sorted(_TRACED_FIELDS)}")
            names += [_TRACED_FIELDS[k] for k in fields] + ["image_size"]
        elif key in _TRACED_TENSORS:
            names.append(_TRACED_TENSORS[key])
        else:
            raise D2SegError(f"the traced model returns an unexpected {key!r}")
    return names


MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.ts"}
# the model.json layout each format is written with: ONNX folders stay readable by a d2seg that
# reads version 1; a TorchScript folder is version 2, so such a d2seg refuses it ("written by a
# newer d2seg") instead of handing model.ts to onnxruntime
FORMAT_VERSIONS = {"onnx": 1, "torchscript": 2}


def export_model(cfg, weights: str, out_dir, *, fmt: str = "onnx", class_names=None,
                 category_ids=None, colors_rgb=None, stuff_names=None, stuff_colors_rgb=None,
                 dataset: str | None = None, check: bool = True) -> dict:
    """Write the model file (``model.onnx`` or ``model.ts``, by ``fmt``), ``model.json`` and
    ``config.yaml`` into ``out_dir``; return model.json.

    ``cfg``: a config ready to build the model (classes resolved, e.g. by ``prepare_config``).
    Both formats hold the same trace of detectron2's ``TracingAdapter``. With ``check`` (and,
    for ONNX, onnxruntime installed) the written model is run on a picture of another aspect
    ratio than the traced one and compared with PyTorch, so a size baked into the trace fails
    the export instead of a later prediction."""
    import torch
    from detectron2.export.flatten import TracingAdapter  # the submodule: no caffe2 code

    import d2seg
    from d2seg.engine.predict import BatchPredictor

    if fmt not in MODEL_FILES:
        raise D2SegError(f"unknown export format {fmt!r}; choose one of "
                         f"{', '.join(MODEL_FILES)}", where="--format")
    task = check_exportable(cfg)
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401  (torch's ONNX exporter needs it; fail before the build)
        except ImportError:
            raise D2SegError("the onnx package is not installed (torch's ONNX exporter needs "
                             "it)", hint="pip install onnx") from None
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    model = BatchPredictor(cfg, weights).model.eval()
    h, w = 480, 640  # a 4:3 picture, resized by the test-time rule
    image = torch.as_tensor(_model_input(sample_image(h, w), cfg))
    adapter = TracingAdapter(model, [{"image": image}], _INFERENCE[task]).eval()
    with torch.no_grad():
        adapter(image)  # fills outputs_schema
    names = _traced_output_names(adapter)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / MODEL_FILES[fmt]
    tmp, handle = open_temporary_beside(model_path, "xb")
    handle.close()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # TracerWarnings on detectron2's Python-side asserts, torch.jit's deprecation notes
            warnings.simplefilter("ignore")
            if fmt == "onnx":
                _write_onnx(adapter, image, names, tmp)
            else:
                torch.jit.save(torch.jit.trace(adapter, (image,), check_trace=False),
                               os.fspath(tmp))
        os.replace(tmp, model_path)
    finally:
        tmp.unlink(missing_ok=True)
    meta = describe(cfg, weights, class_names=class_names, category_ids=category_ids,
                    colors_rgb=colors_rgb, stuff_names=stuff_names,
                    stuff_colors_rgb=stuff_colors_rgb, dataset=dataset,
                    size_divisibility=int(model.backbone.size_divisibility), fmt=fmt)
    if fmt == "torchscript":  # a traced module's outputs are a tuple: their names, in order
        meta["output_names"] = names
    meta["versions"] = {"d2seg": d2seg.__version__, "torch": torch.__version__,
                        "detectron2": _detectron2_version()}
    if fmt == "onnx":
        meta["versions"]["onnx_opset"] = OPSET
    write_text_atomic(out / "config.yaml", cfg.dump())
    write_json_atomic(out / "model.json", meta, indent=2)
    if check:
        _check_against_pytorch(model, out, cfg, task)
    return meta


def export_onnx(cfg, weights: str, out_dir, **kwargs) -> dict:
    """:func:`export_model` to ONNX: ``model.onnx``, served by onnxruntime or OpenVINO."""
    return export_model(cfg, weights, out_dir, fmt="onnx", **kwargs)


def export_torchscript(cfg, weights: str, out_dir, **kwargs) -> dict:
    """:func:`export_model` to TorchScript: ``model.ts``, served by torch (+ torchvision's ops)
    without detectron2."""
    return export_model(cfg, weights, out_dir, fmt="torchscript", **kwargs)


def _write_onnx(adapter, image, names: list[str], path: Path) -> None:
    """The traced adapter as an ONNX graph with dynamic image and detection sizes."""
    import torch

    dynamic = {"image": {1: "height", 2: "width"}}
    dynamic.update({n: {0: "detections"} for n in names if n in _TRACED_FIELDS.values()})
    if "sem_seg_logits" in names:
        dynamic["sem_seg_logits"] = {1: "padded_height", 2: "padded_width"}
    torch.onnx.export(adapter, (image,), os.fspath(path), opset_version=OPSET,
                      dynamo=False, input_names=["image"], output_names=names,
                      dynamic_axes=dynamic, do_constant_folding=True)
    _exact_integer_division(path)


def _exact_integer_division(path: Path) -> int:
    """Rewrite each integer ``Div(a, b)`` of the ONNX file as ``Div(a - Mod(a, b), b)`` with a
    C-style ``Mod`` (``fmod=1``): the same truncated quotient by ONNX's definition, but the
    division is now exact. OpenVINO's CPU plugin rounds integer quotients (its padding of a
    160-row image to a multiple of 32 gave 192 rows, not 160), which changes every output.
    Returns the number of rewritten nodes."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(os.fspath(path))
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    integer = {TensorProto.INT32, TensorProto.INT64, TensorProto.INT16, TensorProto.INT8,
               TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64}
    nodes, rewritten = [], 0
    for node in model.graph.node:
        if node.op_type == "Div" and types.get(node.input[0]) in integer \
                and types.get(node.input[1]) in integer:
            a, b = node.input
            rest, exact = f"{node.output[0]}__d2seg_rest", f"{node.output[0]}__d2seg_exact"
            nodes.append(helper.make_node("Mod", [a, b], [rest], fmod=1,
                                          name=f"{node.name}__d2seg_mod"))
            nodes.append(helper.make_node("Sub", [a, rest], [exact],
                                          name=f"{node.name}__d2seg_sub"))
            nodes.append(helper.make_node("Div", [exact, b], list(node.output), name=node.name))
            rewritten += 1
        else:
            nodes.append(node)
    if rewritten:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        onnx.checker.check_model(model)
        onnx.save(model, os.fspath(path))
    return rewritten


def _colours(colors, n: int) -> list:
    if colors is None:  # the colours d2seg draws classes with when the data names none
        from d2seg.visualize.colours import class_colors

        colors = class_colors(n)[:, ::-1].tolist()
    return [list(map(int, c)) for c in colors]


def describe(cfg, weights: str, *, class_names=None, category_ids=None, colors_rgb=None,
             stuff_names=None, stuff_colors_rgb=None, dataset: str | None = None,
             size_divisibility: int = 0, fmt: str = "onnx") -> dict:
    """model.json's content for an exportable config (``check_exportable``'s tasks) exported
    to ``fmt`` (``onnx`` or ``torchscript``)."""
    task = check_exportable(cfg)
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSIONS[fmt], "task": task,
        "architecture": _ARCHITECTURES[task], "model_format": fmt,
        "model_file": MODEL_FILES[fmt], "config_file": "config.yaml",
        "weights": os.path.basename(str(weights)) if os.path.exists(str(weights)) else str(weights),
        "dataset": dataset,
        "input": {
            "name": "image", "layout": "CHW", "dtype": "uint8", "channel_order": cfg.INPUT.FORMAT,
            "from": "the BGR image resized so its short side is min_size_test unless the long "
                    "side would pass max_size_test (then that one is max_size_test), bilinear",
            "min_size_test": int(cfg.INPUT.MIN_SIZE_TEST),
            "max_size_test": int(cfg.INPUT.MAX_SIZE_TEST),
            "pixel_mean": list(cfg.MODEL.PIXEL_MEAN), "pixel_std": list(cfg.MODEL.PIXEL_STD),
            "size_divisibility": size_divisibility,
            "inside_the_graph": "normalisation (x - pixel_mean) / pixel_std and zero padding to "
                                "the size divisibility",
        },
        "outputs": {},
    }
    if task in ("instances", "panoptic"):
        n = int(cfg.MODEL.ROI_HEADS.NUM_CLASSES)
        meta["classes"] = {"count": n, "names": list(class_names) if class_names else None,
                           "category_ids": list(category_ids) if category_ids else None,
                           "colors_rgb": _colours(colors_rgb, n)}
        meta["outputs"].update({
            "boxes": "(N, 4) XYXY at the resized size", "classes": "(N,) class index",
            "scores": "(N,)", "mask_probs": "(N, 1, M, M) mask probability in the box",
            "image_size": "the resized (height, width)"})
        meta.update({"score_thresh": float(cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST),
                     "nms_thresh": float(cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST),
                     "detections_per_image": int(cfg.TEST.DETECTIONS_PER_IMAGE),
                     "mask_threshold": 0.5})
    if task in ("semantic", "panoptic"):
        k = int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
        meta["semantic_classes"] = {"count": k, "names": list(stuff_names) if stuff_names else None,
                                    "colors_rgb": _colours(stuff_colors_rgb, k)}
        meta["outputs"]["sem_seg_logits"] = (
            "(K, H', W') class logits at the padded resized size: crop to the resized size, "
            "resize bilinearly to the image, argmax")
    if task == "panoptic":
        combine = cfg.MODEL.PANOPTIC_FPN.COMBINE
        meta["panoptic_combine"] = {
            "overlap_threshold": float(combine.OVERLAP_THRESH),
            "stuff_area_threshold": float(combine.STUFF_AREA_LIMIT),
            "score_threshold": float(combine.INSTANCES_CONFIDENCE_THRESH),
            "semantic_label_0": "things (never a stuff segment)"}
    return meta


def _detectron2_version() -> str:
    import detectron2

    return getattr(detectron2, "__version__", "unknown")


def _check_against_pytorch(model, out: Path, cfg, task: str = "instances") -> None:
    """Run the export (on its format's default backend) on a 3:4 (portrait) picture; its
    detections and semantic labels must be PyTorch's. An ONNX export is not checked when
    onnxruntime is not installed."""
    import torch

    from d2seg.deploy.runtime import TASK_OUTPUTS, load, read_model_json

    meta = read_model_json(out)
    if meta.get("model_format", "onnx") == "onnx":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return
    model_file = str(out / meta["model_file"])
    chw = _model_input(sample_image(400, 300, seed=1), cfg)
    # the backend's threads are the process's for torch: keep the caller's
    threads = torch.get_num_threads()
    try:
        session = load(out, threads=1).session
        names = list(TASK_OUTPUTS[task])
        got = dict(zip(names, session.run(names, {"image": chw})))
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        ref = _INFERENCE[task](model, [{"image": torch.as_tensor(chw)}])[0]
    if "sem_seg" in ref:
        agree = float((ref["sem_seg"].argmax(0).numpy() == got["sem_seg_logits"].argmax(0)).mean())
        if got["sem_seg_logits"].shape != tuple(ref["sem_seg"].shape) or agree < 0.999:
            raise D2SegError(f"the exported graph disagrees with PyTorch on a test picture "
                             f"(semantic labels agree on {100 * agree:.2f}% of pixels)",
                             file=model_file,
                             hint="report this with the config; d2seg export --no-check skips it")
    if "instances" not in ref:
        return
    ref = ref["instances"]
    ref_boxes, ref_scores = ref.pred_boxes.tensor.numpy(), ref.scores.numpy()
    # detections scoring within 1e-3 of the threshold may fall either side of it
    borderline = int((np.abs(ref_scores - cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST) < 1e-3).sum())
    unmatched = len(ref_boxes) if not len(got["boxes"]) else int(
        (np.abs(ref_boxes[:, None, :] - got["boxes"][None, :, :]).max(-1).min(1) > 0.1).sum())
    if abs(len(got["boxes"]) - len(ref_boxes)) > borderline or unmatched > borderline:
        raise D2SegError(f"the exported graph disagrees with PyTorch on a test picture "
                         f"({len(got['boxes'])} vs {len(ref_boxes)} detections)",
                         file=model_file,
                         hint="report this with the config; d2seg export --no-check skips it")
