"""Write the demo dataset (datasets/demo/ by default); d2seg also does this on first use."""

import argparse

from d2seg.data.demo import default_demo_dir, ensure_demo

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=None, help=f"folder (default {default_demo_dir()})")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(ensure_demo(args.out, seed=args.seed))
