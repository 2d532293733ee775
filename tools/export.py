#!/usr/bin/env python
"""Export with d2seg: ``python tools/export.py --config-file X --weights W --out DIR``."""
import sys

from d2seg.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
