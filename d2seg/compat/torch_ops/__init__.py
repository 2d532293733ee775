"""PyTorch/numpy implementations of the operators of detectron2's compiled extension ``detectron2._C``."""
