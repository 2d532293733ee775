#!/usr/bin/env python
"""Evaluate with d2seg: ``python tools/eval.py --results R.json --gt GT.json --out DIR``."""
import sys

from d2seg.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
