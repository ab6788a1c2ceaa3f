"""dualalign.modeling: the detector (meta-architecture, ROI heads) and the metric-space parts."""

from .memory_bank import PrototypeMemoryBank
from .meta_arch import DualAlignRCNN
from .projection_head import ClassProxies, ProjectionHead
from .roi_heads import DualAlignROIHeads
from .semi_rcnn import SemiSupervisedRCNN
from .teacher import EMATeacher

__all__ = [
    "ClassProxies",
    "DualAlignRCNN",
    "DualAlignROIHeads",
    "EMATeacher",
    "ProjectionHead",
    "PrototypeMemoryBank",
    "SemiSupervisedRCNN",
]
