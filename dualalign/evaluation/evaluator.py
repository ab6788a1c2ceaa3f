"""detectron2 ``DatasetEvaluator`` reporting box AP averaged over an IoU range (default 0.1:0.7).

The numbers come from :func:`dualalign.evaluation.range_ap.evaluate_coco_range`; this class only
collects predictions (across processes), builds the ground truth, logs and saves the results.
"""

import itertools
import json
import logging
import math
import os
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BoxMode
from detectron2.utils import comm
from pycocotools.coco import COCO

from ..utils.atomic import atomic_write_json
from .range_ap import coco_from_dict, evaluate_coco_range, format_ap_table, to_jsonable

logger = logging.getLogger(__name__)

DEFAULT_IOU_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def _contiguous_to_dataset_ids(metadata: Any, num_classes: int) -> Dict[int, Any]:
    """Map contiguous class index -> dataset category id (metadata mapping, else ``i + 1``)."""
    mapping = metadata.get("thing_dataset_id_to_contiguous_id", None)
    if mapping:
        return {contiguous: dataset_id for dataset_id, contiguous in mapping.items()}
    return {i: i + 1 for i in range(num_classes)}


def dataset_dicts_to_coco(dataset_dicts: List[dict], metadata: Any) -> COCO:
    """Build an in-memory COCO ground truth from detectron2 dataset dicts.

    Args:
        dataset_dicts: detectron2 records with ``image_id``, ``height``, ``width`` and
            ``annotations`` (``bbox``, ``bbox_mode``, contiguous 0-based ``category_id``).
        metadata: provides ``thing_classes`` and optionally ``thing_dataset_id_to_contiguous_id``.

    Returns:
        An indexed ``COCO`` whose category ids are the dataset ids and names the class names.
    """
    classes = list(metadata.get("thing_classes", None) or [])
    if not classes:
        raise ValueError(f"metadata of dataset {metadata.name!r} has no thing_classes")
    to_dataset = _contiguous_to_dataset_ids(metadata, len(classes))
    images, anns = [], []
    for rec in dataset_dicts:
        images.append({"id": rec["image_id"], "height": rec["height"], "width": rec["width"]})
        for ann in rec.get("annotations", []):
            x, y, w, h = BoxMode.convert(list(ann["bbox"]), ann["bbox_mode"], BoxMode.XYWH_ABS)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": rec["image_id"],
                    "category_id": to_dataset[ann["category_id"]],
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "area": float(w) * float(h),
                    "iscrowd": int(ann.get("iscrowd", 0)),
                }
            )
    cats = [{"id": to_dataset[i], "name": name} for i, name in enumerate(classes)]
    return coco_from_dict({"images": images, "annotations": anns, "categories": cats})


def instances_to_coco_boxes(instances: Any, image_id: Any, to_dataset: Dict[int, Any]) -> List:
    """Convert predicted ``Instances`` (N boxes, XYXY) to COCO result records (XYWH).

    Args:
        instances: with ``pred_boxes`` (Boxes, [N, 4] XYXY_ABS), ``scores`` ([N]) and
            ``pred_classes`` ([N], contiguous ids).
        image_id: the input's image id.
        to_dataset: contiguous -> dataset category id.

    Returns:
        N dicts ``{image_id, category_id, bbox: [x, y, w, h], score}``.
    """
    if len(instances) == 0:
        return []
    boxes = instances.pred_boxes.tensor.detach().cpu().numpy()
    boxes = BoxMode.convert(boxes, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS).tolist()
    scores = instances.scores.detach().cpu().tolist()
    classes = instances.pred_classes.detach().cpu().tolist()
    return [
        {"image_id": image_id, "category_id": to_dataset[c], "bbox": b, "score": s}
        for b, s, c in zip(boxes, scores, classes)
    ]


class RangeAPEvaluator(DatasetEvaluator):
    """Box AP averaged over IoU thresholds (default 0.10..0.70) with plain pycocotools.

    Args:
        dataset_name: a registered dataset. If its metadata has ``json_file`` the ground truth
            is read from it; otherwise it is built from ``DatasetCatalog.get(dataset_name)``.
        iou_thresholds: IoU thresholds to average over.
        output_dir: if set, ``coco_instances_results.json`` and ``range_ap.json`` go there.
            ``range_ap.json`` names the model it scores under ``"model"``.
        model_name: which network of the model is scored: "detector" (the model as a whole),
            or "teacher" / "student" for a model with an EMA teacher. For those the files are
            also written as ``range_ap_<name>.json`` and ``coco_instances_results_<name>.json``.
        primary: whether this is the evaluated model, i.e. writes ``range_ap.json`` (a model
            with a teacher is scored twice, once per network, and one of them is primary).
        max_dets: detections kept per image.
        distributed: gather predictions from all ranks to rank 0.
    """

    def __init__(
        self,
        dataset_name: str,
        iou_thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS,
        output_dir: Optional[str] = None,
        max_dets: int = 200,
        distributed: bool = True,
        model_name: str = "detector",
        primary: bool = True,
    ):
        self._dataset_name = dataset_name
        self._iou_thresholds = [float(t) for t in iou_thresholds]
        self._output_dir = output_dir
        self._model_name = model_name
        self._primary = primary
        self._max_dets = int(max_dets)
        self._distributed = distributed
        self._metadata = MetadataCatalog.get(dataset_name)
        json_file = self._metadata.get("json_file", None)
        if json_file:
            with open(json_file) as f:
                self._coco_gt = coco_from_dict(json.load(f))
            num_classes = len(self._coco_gt.getCatIds())
        else:
            dicts = DatasetCatalog.get(dataset_name)
            self._coco_gt = dataset_dicts_to_coco(dicts, self._metadata)
            num_classes = len(self._metadata.thing_classes)
        self._to_dataset = _contiguous_to_dataset_ids(self._metadata, num_classes)
        self._predictions: List[dict] = []

    def reset(self) -> None:
        self._predictions = []

    def process(self, inputs: List[dict], outputs: List[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            if "instances" in out:
                instances = out["instances"].to("cpu")
                self._predictions.extend(
                    instances_to_coco_boxes(instances, inp["image_id"], self._to_dataset)
                )

    def evaluate(self) -> "OrderedDict[str, Dict[str, float]]":
        if self._distributed:
            comm.synchronize()
            gathered = comm.gather(self._predictions, dst=0)
            if not comm.is_main_process():
                return OrderedDict()
            predictions = list(itertools.chain(*gathered))
        else:
            predictions = self._predictions
        if not predictions:
            logger.warning(f"RangeAPEvaluator on {self._dataset_name}: no predictions; AP = 0")
        result = evaluate_coco_range(
            self._coco_gt, predictions, self._iou_thresholds, max_dets=self._max_dets
        )
        logger.info(
            f"Box AP over IoU {self._iou_thresholds} on {self._dataset_name} "
            f"({self._model_name}):\n" + format_ap_table(result)
        )
        if self._output_dir:
            self._save(predictions, dict(to_jsonable(result), model=self._model_name))
        return OrderedDict(bbox=self._flatten(result))

    def _save(self, predictions: List[dict], result: Dict[str, Any]) -> None:
        suffixes = [""] if self._primary else []
        if self._model_name != "detector":
            suffixes.append("_" + self._model_name)
        for suffix in suffixes:
            out = self._output_dir
            atomic_write_json(
                os.path.join(out, f"coco_instances_results{suffix}.json"), predictions, indent=None
            )
            atomic_write_json(os.path.join(out, f"range_ap{suffix}.json"), result, indent=None)

    def _flatten(self, result: Dict[str, Any]) -> Dict[str, float]:
        """Flat ``{"mAP", "AP-<class>", "AP@<iou>"}`` of floats; classes without GT left out."""
        flat = {"mAP": float(result["mAP"])}
        for name, ap in result["per_class"].items():
            if math.isnan(ap):
                logger.warning(f"class {name!r} has no ground truth in {self._dataset_name}")
                continue
            flat[f"AP-{name}"] = float(ap)
        for key, ap in result["per_iou"].items():
            flat[f"AP@{key}"] = float(ap)
        return flat
