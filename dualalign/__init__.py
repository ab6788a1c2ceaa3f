"""dualalign: semi-supervised cervical cell detection with dual alignment (Chai et al., 2022).

``import dualalign`` registers the meta-architecture and ROI heads with detectron2 and exposes
``add_dualalign_config``, so a user needs nothing else to build the models from a config.
"""

from . import baselines  # noqa: F401  (registers CSDRCNN / MeanTeacherRCNN)
from . import modeling  # noqa: F401  (registers DualAlignRCNN / DualAlignROIHeads)
from .config import add_dualalign_config, validate_dualalign_config
from .modeling import DualAlignRCNN, DualAlignROIHeads

__all__ = [
    "add_dualalign_config",
    "validate_dualalign_config",
    "DualAlignRCNN",
    "DualAlignROIHeads",
]
