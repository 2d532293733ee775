"""The listed source rewrites that make detectron2 v0.6 work with today's numpy, Pillow, setuptools.

Applied once, at install time, by :mod:`d2seg.compat.installer` to the files of the verified
sdist, so they hold in any import order and cost nothing at run time. Each entry is
``(file, old, new, count, why)``: ``old`` must occur exactly ``count`` times, so a changed
source fails the install loudly instead of being half-fixed. Each one has a test in
``tests/compat/test_source_fixes.py`` that exercises the behaviour it repairs.

numpy's ``np.bool`` (removed in 1.24) is not rewritten: numpy 2 brought the name back, and d2seg
requires numpy >= 2.
"""

from __future__ import annotations

REWRITES: list[tuple[str, str, str, int, str]] = [
    (
        "detectron2/data/transforms/transform.py",
        "interp=Image.LINEAR",
        "interp=Image.BILINEAR",
        1,
        "Pillow 10 removed Image.LINEAR (an alias of BILINEAR): `import detectron2.data` fails",
    ),
    (
        "detectron2/evaluation/sem_seg_evaluation.py",
        "dtype=np.int)",
        "dtype=np.int64)",
        2,
        "numpy 1.24 removed np.int: SemSegEvaluator.process raises AttributeError",
    ),
    (
        "detectron2/evaluation/sem_seg_evaluation.py",
        "np.float)",
        "np.float64)",
        5,
        "numpy 1.24 removed np.float: SemSegEvaluator.evaluate raises AttributeError",
    ),
    (
        "detectron2/data/build.py",
        "dtype=np.int",
        "dtype=np.int64",
        2,
        "numpy 1.24 removed np.int: the per-class instance histogram logged when a training "
        "set is loaded silently disappears (the error is swallowed)",
    ),
    (
        "detectron2/data/datasets/pascal_voc.py",
        "dtype=np.str)",
        "dtype=str)",
        1,
        "numpy 1.24 removed np.str: the Pascal VOC loader raises AttributeError",
    ),
    (
        "detectron2/model_zoo/model_zoo.py",
        "import pkg_resources\n",
        "",
        1,
        "setuptools 81 removed pkg_resources: `import detectron2.model_zoo` fails",
    ),
    (
        "detectron2/model_zoo/model_zoo.py",
        'pkg_resources.resource_filename(\n        "detectron2.model_zoo", os.path.join("configs", config_path)\n    )',
        'os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", config_path)',
        1,
        "setuptools 81 removed pkg_resources: model_zoo.get_config_file resolves the bundled "
        "configs from the package folder instead",
    ),
    (
        "detectron2/export/__init__.py",
        "from .api import *\n",
        "try:\n    from .api import *\nexcept ModuleNotFoundError:  # no caffe2 in torch 2.x (d2seg)\n"
        "    pass\n",
        1,
        "torch 2 no longer ships caffe2: `import detectron2.export` failed, and with it "
        "TracingAdapter, torchscript export and detectron2.utils.analysis (FLOP counting); only "
        "the Caffe2 exporter stays unavailable",
    ),
    (
        "detectron2/layers/deform_conv.py",
        "if not input.is_cuda:",
        'if not input.is_cuda and not getattr(_C, "RUNS_ON_CPU", False):',
        2,
        "upstream raises NotImplementedError for deformable convolution on CPU (forward with "
        "deformable_groups > 1, modulated forward); d2seg's _C operators run on any device",
    ),
    (
        "detectron2/layers/deform_conv.py",
        "if not grad_output.is_cuda:",
        'if not grad_output.is_cuda and not getattr(_C, "RUNS_ON_CPU", False):',
        2,
        "upstream raises NotImplementedError for the backward of deformable convolution on CPU",
    ),
    (
        "detectron2/engine/defaults.py",
        '    if "device_ids" not in kwargs:\n        kwargs["device_ids"] = [comm.get_local_rank()]\n',
        '    if "device_ids" not in kwargs and next(model.parameters()).device.type == "cuda":\n'
        '        kwargs["device_ids"] = [comm.get_local_rank()]\n',
        1,
        "DistributedDataParallel refuses device_ids for a CPU model: DefaultTrainer could not "
        "train with several processes on CPU (torchrun, gloo); tested by "
        "tests/engine/test_distributed.py",
    ),
    (
        "detectron2/utils/comm.py",
        "    storage = torch.ByteStorage.from_buffer(buffer)\n"
        "    tensor = torch.ByteTensor(storage).to(device=device)\n",
        "    tensor = torch.frombuffer(bytearray(buffer), dtype=torch.uint8).to(device=device)\n",
        1,
        "torch 2 deprecates typed storages (TypedStorage, to be removed): every comm.all_gather "
        "(multi-process evaluation, checkpoint hand-over) warned on every rank",
    ),
]


class SourceChanged(Exception):
    """The sdist no longer matches what a rewrite expects."""


def apply(files: dict[str, bytes]) -> None:
    """Apply every rewrite in place to ``files`` (installed path -> content)."""
    for path, old, new, count, _why in REWRITES:
        text = files[path].decode("utf-8")
        found = text.count(old)
        if found != count:
            raise SourceChanged(f"{path}: expected {count} x {old!r}, found {found}")
        files[path] = text.replace(old, new).encode("utf-8")
