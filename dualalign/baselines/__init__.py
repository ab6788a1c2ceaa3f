"""Semi-supervised baselines of the paper's Table 2 (CSD, Mean Teacher) on the same trainer."""

from .csd import CSDRCNN
from .mean_teacher import MeanTeacherRCNN

__all__ = ["CSDRCNN", "MeanTeacherRCNN"]
