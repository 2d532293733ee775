"""Draw ground truth and/or predictions side by side; same as ``d2seg visualize``."""

import sys

from d2seg.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["visualize", *sys.argv[1:]]))
