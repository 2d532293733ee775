#!/usr/bin/env python
"""Predict with d2seg: ``python tools/predict.py IMAGES... --config-file X --weights W``."""
import sys

from d2seg.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
