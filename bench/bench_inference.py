"""Per-image CPU latency of the demo Mask R-CNN (MobileNetV2-FPN) or a ResNet-50-FPN Mask R-CNN:
PyTorch eager, what ``d2seg predict`` runs (d2seg's BatchPredictor), against its ONNX export
served by onnxruntime or OpenVINO (``d2seg.deploy.load``), end to end: a BGR image in,
boxes/scores/classes and image-size masks out, batch 1 or ``--batch N`` (the same image N times:
one padded forward for eager, N graph runs for the export; the time is per image).

Goal (issue 15): the export at least 2x faster on this model, with the same answers.

The model is the demo config with ImageNet MobileNetV2 weights and randomly initialised heads
(seeded, saved once as a checkpoint that every variant loads), so the numbers need no training;
with untrained heads every image yields the config's maximum of 50 detections (score threshold
0.05), i.e. the most post-processing. Two input sizes: the config's own (the demo images,
192x160, short side 160) and 800 px (``INPUT.MIN_SIZE_TEST 800 MAX_SIZE_TEST 1333``, the demo
image scaled to 960x800; exported separately, as the size rule is part of the export).

Each variant runs in its own process (so its peak RSS is its own: the kernel's VmHWM after
the run, imports and model included) on the same image, with the same number of threads for torch and
onnxruntime (``--threads``, default 1), and reports the median of ``--repeat`` runs after
``--warmup`` runs. Variants: ``eager`` (BatchPredictor as d2seg predict runs it, under
torch.no_grad), ``eager-inference-mode`` (the same under torch.inference_mode),
``eager-channels-last`` (weights in channels-last memory format), ``eager-bn-folded`` (every
FrozenBatchNorm2d folded into its convolution, :func:`fold_frozen_batchnorm`), ``eager-compile``
(``torch.compile`` on the backbone), each compared with eager's answer on the image, ``onnx``
(onnxruntime), ``openvino`` (needs the openvino package), ``torchscript`` (the TorchScript
export, served by d2seg.deploy.load on torch without detectron2) and ``torchvision``
(``--model r50`` only: torchvision's ``maskrcnn_resnet50_fpn(weights=None)`` with 4 classes +
background, 800/1333 resize, eager, an independent implementation for scale).

``--model r50``: configs/instance/mask_rcnn_R50_FPN_3x.yaml (BN frozen, as that config has it),
randomly initialised (seeded) with the demo's 4 classes, at 800 px only: latency does not depend
on training. No trained R50 can be downloaded here, so its BatchNorm statistics are set from the
bench image (:func:`calibrate_batchnorm`; torchvision's model gets the same): activations then
have the scale of trained ones, the heads give the config's 100 detections at its 0.05
threshold, with masks, on both implementations, and the export passes its PyTorch check.

On the shared 2-core machine of the first measurement the spread between runs (~10-20%) was
larger than the inference_mode/no_grad difference; compare ratios from one run only.

    python bench/bench_inference.py                       # threads 1, 20 repeats
    python bench/bench_inference.py --threads 2 --repeat 10 --sizes 160
    python bench/bench_inference.py --batch 4 --variants eager onnx openvino
    python bench/bench_inference.py --sizes 160 --repeat 5 --variants eager onnx torchscript
    python bench/bench_inference.py --model r50 --sizes 800 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"mnv2": str(REPO / "configs/instance/mask_rcnn_MNV2_FPN_cpu_quick.yaml"),
           "r50": str(REPO / "configs/instance/mask_rcnn_R50_FPN_3x.yaml")}
INITIAL_WEIGHTS = {"mnv2": "imagenet:mobilenet_v2", "r50": ""}
MODEL_OPTS = {"mnv2": [], "r50": []}  # config options of each model beyond the size
DATASET = "demo_instances_train"
VARIANTS = ("eager", "eager-inference-mode", "eager-channels-last", "eager-bn-folded",
            "eager-compile", "onnx", "openvino", "torchscript", "torchvision")


def size_opts(size: int) -> list[str]:
    return [] if size == 160 else ["INPUT.MIN_SIZE_TEST", str(size), "INPUT.MAX_SIZE_TEST",
                                   str(int(size * 1333 / 800))]


def bench_image(size: int):
    """The first demo validation image, scaled so its short side is ``size`` (BGR uint8)."""
    import cv2

    from d2seg.data.demo import ensure_demo

    image = cv2.imread(str(sorted((ensure_demo() / "val" / "images").iterdir())[0]))
    h, w = image.shape[:2]
    if min(h, w) != size:
        scale = size / min(h, w)
        image = cv2.resize(image, (round(w * scale), round(h * scale)),
                           interpolation=cv2.INTER_LINEAR)
    return image


def eager_config(size: int, weights: str, model: str = "mnv2"):
    from d2seg.config import load_config
    from d2seg.data.register import register_datasets
    from d2seg.config.prepare import prepare_config

    register_datasets()
    cfg = load_config(CONFIGS[model], ["DATASETS.TRAIN", f"('{DATASET}',)", "DATASETS.TEST", "()",
                               "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", weights, *size_opts(size),
                               *MODEL_OPTS[model]])
    return prepare_config(cfg)


def fold_frozen_batchnorm(model) -> int:
    """Fold every FrozenBatchNorm2d that follows a convolution (inside an nn.Sequential, or as a
    detectron2 Conv2d's ``norm``) into that convolution's weight and bias; returns how many.
    Inference-only: the folded model computes the same function up to float rounding."""
    import torch
    from detectron2.layers import Conv2d as D2Conv2d
    from detectron2.layers import FrozenBatchNorm2d

    def fold(conv, bn) -> None:
        scale = bn.weight * (bn.running_var + bn.eps).rsqrt()
        shift = bn.bias - bn.running_mean * scale
        with torch.no_grad():
            conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
            if conv.bias is None:
                conv.bias = torch.nn.Parameter(shift.clone())
            else:
                conv.bias.mul_(scale).add_(shift)

    count = 0
    for module in model.modules():
        if isinstance(module, D2Conv2d) and isinstance(module.norm, FrozenBatchNorm2d):
            fold(module, module.norm)
            module.norm = None
            count += 1
        if isinstance(module, torch.nn.Sequential):
            children = list(module.named_children())
            for (_, conv), (name, bn) in zip(children, children[1:]):
                if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, FrozenBatchNorm2d):
                    fold(conv, bn)
                    setattr(module, name, torch.nn.Identity())
                    count += 1
    return count


def calibrate_batchnorm(model, run) -> int:
    """Set every BatchNorm's (frozen or not) statistics to the per-channel mean and variance of
    its input during one forward (``run()``), layer after layer in forward order, so that a
    randomly initialised ResNet has activations of unit scale, as trained weights have (with
    identity BatchNorms they grow ~1e4x by res5 and the heads' scores saturate); returns how many.
    """
    import torch
    from detectron2.layers import FrozenBatchNorm2d

    def set_statistics(module, inputs) -> None:
        x = inputs[0]
        module.running_mean.copy_(x.mean((0, 2, 3)))
        module.running_var.copy_(x.var((0, 2, 3)))

    layers = [m for m in model.modules() if isinstance(m, (FrozenBatchNorm2d, torch.nn.BatchNorm2d))]
    handles = [m.register_forward_pre_hook(set_statistics) for m in layers]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return len(layers)


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the
    parent that forked it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(variant: str, size: int, folder: Path, threads: int, warmup: int, repeat: int,
          batch: int = 1, model_name: str = "mnv2") -> dict:
    """One variant's timings in this process; returns what the parent prints."""
    import numpy as np

    image = bench_image(size)
    images = [image] * batch
    if variant in ("onnx", "openvino", "torchscript"):
        from d2seg.deploy import load

        if variant == "torchscript":
            model = load(folder / f"torchscript_{size}", threads=threads, backend="torchscript")
        else:
            backend = "onnxruntime" if variant == "onnx" else "openvino"
            model = load(folder / f"export_{size}", threads=threads, backend=backend)

        def run():
            return model(images)[-1]
    elif variant == "torchvision":
        import torch
        from torchvision.models.detection import maskrcnn_resnet50_fpn

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        net = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=5).eval()
        calibrate_batchnorm(net, lambda: net([torch.from_numpy(np.ascontiguousarray(
            image[:, :, ::-1].transpose(2, 0, 1))).float() / 255]))

        def run():
            with torch.no_grad():
                tensors = [torch.from_numpy(np.ascontiguousarray(im[:, :, ::-1].transpose(2, 0, 1)))
                           .float() / 255 for im in images]
                out = net(tensors)[-1]
            return {"scores": out["scores"].numpy(), "masks": (out["masks"][:, 0] >= 0.5).numpy()}
    else:
        import torch

        from d2seg.engine.predict import BatchPredictor, instance_arrays

        torch.set_num_threads(threads)
        predictor = BatchPredictor(eager_config(size, str(folder / "model.pth"), model_name))
        predictor.inference_mode = variant == "eager-inference-mode"
        if variant == "eager-channels-last":
            predictor.model.to(memory_format=torch.channels_last)
        elif variant == "eager-bn-folded":
            folded = fold_frozen_batchnorm(predictor.model)
            print(f"folded {folded} FrozenBatchNorm2d into their convolutions", file=sys.stderr)
        elif variant == "eager-compile":  # the backbone: the rest is data-dependent control flow
            predictor.model.backbone = torch.compile(predictor.model.backbone, dynamic=True)

        def run():
            return instance_arrays(predictor(images)[-1]["instances"])
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    times.sort()
    np.savez(folder / f"result_{variant}_{size}.npz", scores=np.asarray(result["scores"]),
             masks=np.asarray(result["masks"]))
    return {"variant": variant, "size": size, "image": list(image.shape[:2]), "batch": batch,
            "model": model_name,
            "median_ms": 1000 * times[len(times) // 2] / batch, "min_ms": 1000 * times[0] / batch,
            "detections": int(len(result["scores"])),
            "mask_pixels": int(result["masks"].sum()),
            "peak_rss_mb": peak_rss_mb(),
            "torch_imported": "torch" in sys.modules}


def prepare(folder: Path, sizes: list[int], model: str = "mnv2",
            torchscript: bool = False) -> None:
    """The shared checkpoint (seeded random heads, and backbone for r50) and one ONNX export per
    size (with ``torchscript``, a TorchScript export beside each)."""
    import torch
    from detectron2.checkpoint import DetectionCheckpointer

    from d2seg.deploy.export import export_onnx, export_torchscript
    from d2seg.engine.predict import BatchPredictor

    torch.manual_seed(0)
    cfg = eager_config(sizes[0], INITIAL_WEIGHTS[model], model)
    predictor = BatchPredictor(cfg)
    if model == "r50":  # no trained R50 here: BatchNorm statistics from the bench image
        calibrate_batchnorm(predictor.model, lambda: predictor([bench_image(sizes[0])]))
    DetectionCheckpointer(predictor.model, str(folder)).save("model")
    for size in sizes:
        export_onnx(eager_config(size, str(folder / "model.pth"), model),
                    str(folder / "model.pth"), folder / f"export_{size}")
        if torchscript:
            export_torchscript(eager_config(size, str(folder / "model.pth"), model),
                               str(folder / "model.pth"), folder / f"torchscript_{size}")


def same_answers(folder: Path, variant: str, size: int) -> str:
    """How the variant's answer differs from eager's on the bench image: detections, the
    largest score difference and the mask pixels that differ (same count: matched by order)."""
    import numpy as np

    a, b = folder / f"result_eager_{size}.npz", folder / f"result_{variant}_{size}.npz"
    if variant == "eager" or not a.exists():
        return ""
    a, b = np.load(a), np.load(b)
    if len(a["scores"]) != len(b["scores"]):
        return f"{len(b['scores'])} vs {len(a['scores'])} detections"
    if not len(a["scores"]):
        return "same (no detections)"
    return (f"score diff {np.abs(a['scores'] - b['scores']).max():.1e}, mask px differ "
            f"{int((a['masks'] != b['masks']).sum())}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[160, 800])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--variants", nargs="+", default=["eager", "eager-inference-mode", "onnx"],
                        choices=VARIANTS)
    parser.add_argument("--batch", type=int, default=1, help="images per call (the same image)")
    parser.add_argument("--model", choices=sorted(CONFIGS), default="mnv2")
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "SIZE", "FOLDER"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        variant, size, folder = args.child
        print("@@RESULT " + json.dumps(child(variant, int(size), Path(folder), args.threads,
                                             args.warmup, args.repeat, args.batch, args.model)))
        return 0
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        folder = Path(tmp)
        prepare(folder, args.sizes, args.model, torchscript="torchscript" in args.variants)
        rows = []
        for size in args.sizes:
            for variant in args.variants:
                proc = subprocess.run([sys.executable, __file__, "--child", variant, str(size),
                                       str(folder), "--threads", str(args.threads), "--warmup",
                                       str(args.warmup), "--repeat", str(args.repeat),
                                       "--batch", str(args.batch), "--model", args.model],
                                      capture_output=True, text=True, env=env)
                line = [x for x in proc.stdout.splitlines() if x.startswith("@@RESULT ")]
                if proc.returncode or not line:
                    raise SystemExit(f"{variant} {size} failed:\n{proc.stderr[-3000:]}")
                rows.append(json.loads(line[0][len("@@RESULT "):]))
                rows[-1]["vs_eager"] = same_answers(folder, variant, size)
                print(json.dumps(rows[-1]), flush=True)
    print(f"\n{args.model}, threads {args.threads}, median of {args.repeat} after {args.warmup} "
          f"warm-up runs, batch {args.batch}, per image, end to end (BGR image in, image-size "
          "masks out)")
    print(f"{'input':>10} {'variant':>22} {'median ms':>10} {'min ms':>8} {'images/s':>9} "
          f"{'dets':>5} {'mask px':>8} {'peak RSS MB':>12} {'vs eager':>9}")
    for size in args.sizes:
        base = next((r["median_ms"] for r in rows if r["size"] == size and r["variant"] == "eager"),
                    None)
        for r in (r for r in rows if r["size"] == size):
            ratio = f"{base / r['median_ms']:.2f}x" if base else "-"
            print(f"{'x'.join(map(str, r['image'][::-1])):>10} {r['variant']:>22} "
                  f"{r['median_ms']:>10.1f} {r['min_ms']:>8.1f} {1000 / r['median_ms']:>9.2f} "
                  f"{r['detections']:>5} "
                  f"{r['mask_pixels']:>8} {r['peak_rss_mb']:>12.0f} {ratio:>9} "
                  f"{r.get('vs_eager', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
