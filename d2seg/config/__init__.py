"""d2seg's configuration: detectron2's CfgNode plus d2seg's keys, loaded with clear errors."""

from d2seg.config.defaults import add_d2seg_config
from d2seg.config.loading import get_cfg, load_config

__all__ = ["add_d2seg_config", "get_cfg", "load_config"]
