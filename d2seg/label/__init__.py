"""Label faster with a model: pre-annotations written as a dataset (``suggest``), and which
unlabelled images to label next (``next``, ranked by ``uncertainty``). Runs models, so it sits
above the engine; ``d2seg data merge`` (reviewed labels back into one dataset) is a pure data
operation and lives in ``d2seg.data.merge``."""
