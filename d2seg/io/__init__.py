"""d2seg's bottom layer: reading JSON, COCO masks and panoptic ids the same way everywhere.

Modules here import only the standard library, numpy, pycocotools, OpenCV/Pillow (and orjson
when installed) and, from d2seg, only :mod:`d2seg.errors` and each other, so every other package
can use them (``tests/test_layers.py`` checks this).
"""
