"""Everything that adapts detectron2 v0.6 to today's torch, numpy, Pillow and setuptools.

- :mod:`installer`: fetches the verified sdist and installs it as ``detectron2`` with no compiler;
- :mod:`source_fixes`: the listed source rewrites applied at install time, each with its reason;
- :mod:`c_extension` and :mod:`torch_ops`: PyTorch/numpy stand-ins for ``detectron2._C``.

Nothing else in d2seg knows these details.
"""
