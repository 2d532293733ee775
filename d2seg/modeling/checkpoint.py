"""``D2SegCheckpointer``: detectron2's checkpointer, loading every MODEL.WEIGHTS form safely.

Accepted ``MODEL.WEIGHTS`` values:

* ``imagenet:<arch>``: torchvision's ImageNet weights, found locally (see :mod:`.weights`);
* a detectron2 / Detectron ``.pkl`` (model-zoo dict with ``model``, ``__author__``,
  ``matching_heuristics``, or a plain/``blobs`` dict of Caffe2 arrays), read by a restricted
  unpickler;
* a ``.pth``: a detectron2 checkpoint (``{"model": ...}``), a bare state dict, or a torchvision
  classifier state dict (ResNet, MobileNet ...), renamed on the fly for the model's backbone;
  read with ``torch.load(weights_only=True)``.

Every load records a :class:`LoadReport` (``checkpointer.last_report``) and logs it in one
summary: how many of the model's tensors were loaded, which are missing, which file tensors
had no place. Loading that fills none of the model's tensors is an error, not a warning.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from detectron2.checkpoint import DetectionCheckpointer

from d2seg.errors import D2SegError
from d2seg.modeling.convert import convert_torchvision_classifier, looks_like_torchvision_classifier
from d2seg.modeling.safe_load import load_pickle_safely, load_torch_safely
from d2seg.modeling.weights import is_named_weights, resolve_named_weights

logger = logging.getLogger(__name__)

# torchvision's normalisation, in 0-255 RGB: what its ImageNet weights expect to see
TORCHVISION_PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass
class LoadReport:
    """What a load did: the file, its format, and the fate of every tensor."""

    source: str
    file: str
    format: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    wrong_shape: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)

    def summary(self, limit: int = 8) -> str:
        def few(names):
            names = list(names)
            return ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")

        total = len(self.loaded) + len(self.missing) + len(self.wrong_shape)
        lines = [f"loaded {len(self.loaded)}/{total} model tensors from {self.source} "
                 f"[{self.format}{'; into ' + ', '.join(self.targets) if self.targets else ''}]"]
        if self.missing:
            lines.append(f"  not in the file (kept their initial values): {few(_group(self.missing))}")
        if self.wrong_shape:
            lines.append("  skipped, shape differs: " + few(
                f"{k} {tuple(a)} in file vs {tuple(b)} in model" for k, a, b in self.wrong_shape))
        unused = [k for k in self.unexpected if not k.endswith("num_batches_tracked")]
        if unused:
            lines.append(f"  in the file but not used: {few(_group(unused))}")
        return "\n".join(lines)


def _group(keys):
    """Collapse keys to their module names (``a.b.weight``, ``a.b.bias`` -> ``a.b.*``)."""
    seen = {}
    for key in keys:
        seen.setdefault(key.rsplit(".", 1)[0] + ".*" if "." in key else key, None)
    return list(seen)


class D2SegCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that never unpickles code and understands more weight formats."""

    last_report: LoadReport | None = None

    def load(self, path, *args, **kwargs):
        self._source = path
        if path and is_named_weights(path):
            found = resolve_named_weights(path)
            self._named = found
            path = str(found.path)
        else:
            self._named = None
            if path and "://" in path:  # detectron2://, https:// ...: fetched by iopath
                try:
                    path = self.path_manager.get_local_path(path)
                except Exception as e:  # any download/handler failure is the user's to fix
                    first = (str(e).splitlines() or [""])[0][:200]
                    raise D2SegError(f"cannot fetch checkpoint ({type(e).__name__}: {first})",
                                     file=self._source, where="MODEL.WEIGHTS",
                                     hint="download it once and give the local path") from e
            if path and not os.path.isfile(path):
                raise D2SegError("checkpoint file not found", file=path, where="MODEL.WEIGHTS")
        return super().load(path, *args, **kwargs)

    def _load_file(self, filename):
        self._loaded_file = filename
        if filename.endswith(".pkl"):
            return self._normalise_pickle(load_pickle_safely(filename), filename)
        data = load_torch_safely(filename)
        if not isinstance(data, dict):
            raise D2SegError(f"checkpoint holds a {type(data).__name__}, not a dict of tensors",
                             file=filename)
        if "model" in data and isinstance(data["model"], dict):
            return {**data, "__format__": "detectron2 checkpoint"}
        if "model_state" in data:  # pycls (.pyth), as detectron2 reads it
            state = {k: v for k, v in data["model_state"].items()
                     if not k.endswith("num_batches_tracked")}
            return {"model": state, "__author__": "pycls", "matching_heuristics": True,
                    "__format__": "pycls checkpoint"}
        if looks_like_torchvision_classifier(data):
            named = getattr(self, "_named", None)
            fmt = f"torchvision ImageNet ({named.origin})" if named else "torchvision classifier"
            return {"model": data, "__format__": fmt, "__torchvision__": True}
        return {"model": data, "__format__": "state dict"}

    @staticmethod
    def _normalise_pickle(data, filename):
        """detectron2 model-zoo pickles carry their own metadata; Detectron/Caffe2 ones don't."""
        if not isinstance(data, dict):
            raise D2SegError(f"pickle holds a {type(data).__name__}, not a dict of arrays",
                             file=filename)
        if "model" in data and "__author__" in data:
            return {**data, "__format__": f"detectron2 pickle by {data['__author__']}"}
        blobs = data.get("blobs", data)
        arrays = {k: v for k, v in blobs.items() if not str(k).endswith("_momentum")}
        return {"model": arrays, "__author__": "Caffe2", "matching_heuristics": True,
                "__format__": "Detectron/Caffe2 pickle"}

    def _load_model(self, checkpoint):
        fmt = checkpoint.pop("__format__", "checkpoint")
        targets, conversion = [], None
        source_keys = list(checkpoint["model"])
        if checkpoint.pop("__torchvision__", False):
            conversion = convert_torchvision_classifier(checkpoint["model"], self.model)
            checkpoint["model"] = conversion.state_dict
            targets = conversion.targets
            self._warn_if_caffe2_normalisation()
        try:
            incompatible = super()._load_model(checkpoint)
        except ValueError as e:  # fvcore: a value in the state dict is not an array or tensor
            raise D2SegError(f"not a weights file: {e}", file=str(self._source),
                             where="MODEL.WEIGHTS") from e
        model_keys = list(self.model.state_dict())
        wrong = list(incompatible.incorrect_shapes)
        wrong_keys = {k for k, _, _ in wrong}
        # what the file really provided: FrozenBatchNorm2d quietly fills absent running stats
        provided = {k[len("module."):] if k.startswith("module.") else k for k in self._provided}
        loaded = [k for k in model_keys if k in provided and k not in wrong_keys]
        missing = {k for k in model_keys if k not in provided} - {"pixel_mean", "pixel_std"}
        unexpected = list(incompatible.unexpected_keys)
        if conversion is not None:
            unexpected += [f"(file) {k}" for k in conversion.unused]
        report = LoadReport(str(self._source), getattr(self, "_loaded_file", ""), fmt,
                            loaded, sorted(missing), unexpected, wrong, targets)
        self.last_report = report
        if not loaded and source_keys:
            raise D2SegError(f"none of the {len(source_keys)} tensors in the file (e.g. "
                             f"{', '.join(source_keys[:2])}) match the model's (e.g. "
                             f"{', '.join(model_keys[:2])})",
                             file=str(self._source), where="MODEL.WEIGHTS",
                             hint="is this checkpoint for this architecture "
                                  "(MODEL.BACKBONE.NAME, MODEL.TORCHVISION.ARCH)?")
        self.logger.info(report.summary())
        return None  # fvcore would log missing/unexpected keys again; the summary said it once

    def _convert_ndarray_to_tensor(self, state_dict):
        # called last on the exact dict handed to load_state_dict: remember its keys
        self._provided = list(state_dict)
        super()._convert_ndarray_to_tensor(state_dict)

    def _warn_if_caffe2_normalisation(self):
        std = getattr(self.model, "pixel_std", None)
        if std is not None and float(std.min()) < 10:
            self.logger.warning(
                "torchvision weights expect RGB input normalised by torchvision's mean/std, but "
                "MODEL.PIXEL_STD is %s; set INPUT.FORMAT RGB, MODEL.PIXEL_MEAN [123.675, 116.28, "
                "103.53], MODEL.PIXEL_STD %s", [round(float(s), 3) for s in std.flatten()],
                list(TORCHVISION_PIXEL_STD))

