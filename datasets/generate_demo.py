"""Write the demo dataset ($D2SEG_CACHE/demo by default); d2seg also does this on first use.

Same as ``python -m d2seg.data.demo``, which also works without a checkout.
"""

from d2seg.data.demo import main

if __name__ == "__main__":
    main()
