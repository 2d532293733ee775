"""Draw ground truth and/or predictions side by side; same as ``d2seg visualize``.

    python tools/visualize.py --dataset demo_instances_val --out vis/ -n 8
    python tools/visualize.py --dataset demo_instances_val --pred results.json --out vis/
    python tools/visualize.py --dataset demo_instances_val --config-file CFG --weights model.pth --out vis/
    python tools/visualize.py --images DIR --gt coco.json --pred results.json --out vis/
"""

import sys

from d2seg.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["visualize", *sys.argv[1:]]))
