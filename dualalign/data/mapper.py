"""Dataset mapper for labelled and unlabelled images (any bit depth / channel count)."""

import copy
import logging
from typing import List, Optional

import numpy as np
import torch
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .image_io import ImageReadError, read_image

logger = logging.getLogger(__name__)


class CytologyDatasetMapper:
    """Map a dataset dict to the model's input dict, like detectron2's ``DatasetMapper``.

    Differences: images are read with :func:`read_image` (8-bit grey, RGB, RGBA, 16-bit), and an
    unreadable *unlabelled* image is skipped (returns None, so detectron2's ``MapDataset`` draws
    another one) in ``read_errors="skip"`` mode, with a warning and a running count. A labelled
    image that cannot be read always stops the run: its annotations are the training signal.
    """

    def __init__(
        self,
        augmentations: List[T.Augmentation],
        image_format: str = "BGR",
        is_train: bool = True,
        labeled: bool = True,
        read_errors: str = "skip",
    ):
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.is_train = is_train
        self.labeled = labeled
        self.read_errors = read_errors
        self.num_skipped = 0

    def __call__(self, dataset_dict: dict) -> Optional[dict]:
        dataset_dict = copy.deepcopy(dataset_dict)
        try:
            image = read_image(dataset_dict["file_name"], format=self.image_format)
        except ImageReadError as e:
            if self.labeled or self.read_errors == "strict":
                raise
            self.num_skipped += 1
            logger.warning(f"Skipping unreadable unlabelled image ({self.num_skipped} so far): {e}")
            return None
        for key in ("height", "width"):  # unknown for unlabelled pools read without headers
            if dataset_dict.get(key) is None:
                dataset_dict.pop(key, None)
        utils.check_image_size(dataset_dict, image)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        image_shape = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        annos = dataset_dict.pop("annotations", None)
        if not self.is_train or not self.labeled:
            return dataset_dict
        annos = [
            utils.transform_instance_annotations(obj, transforms, image_shape)
            for obj in annos or []
            if obj.get("iscrowd", 0) == 0
        ]
        instances = utils.annotations_to_instances(annos, image_shape)
        dataset_dict["instances"] = utils.filter_empty_instances(instances)
        return dataset_dict
