"""Reading a user's JSON file in a command-line script: one-line errors that name the file."""

import json

from ..evaluation.range_ap import coco_from_dict

__all__ = ["InputError", "load_coco_inputs", "load_json"]


class InputError(Exception):
    """A user-facing input problem: the scripts report it in one line and exit with code 2."""


def load_json(path: str, what: str):
    """The parsed JSON file ``path``; ``what`` names its flag (``--what``) in the errors."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise InputError(f"{what} file {path} not found; check the --{what} path") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {what} file {path}: {e}") from None
    except json.JSONDecodeError as e:
        msg = f"{what} file {path} is not valid JSON ({e}); fix or regenerate it"
        raise InputError(msg) from None


def load_coco_inputs(gt_path: str, pred_path: str):
    """``(gt, coco_gt, preds)``: a COCO ground-truth file (the dict and its checked pycocotools
    index, :func:`coco_from_dict`) and a COCO results file (a list), read from the ``--gt`` and
    ``--pred`` flags; :class:`InputError` naming the file otherwise."""
    gt = load_json(gt_path, "gt")
    try:
        coco_gt = coco_from_dict(gt)
    except (ValueError, TypeError, IndexError, KeyError) as e:
        raise InputError(f"gt file {gt_path}: {e}") from None
    preds = load_json(pred_path, "pred")
    if not isinstance(preds, list):
        raise InputError(
            f"pred file {pred_path}: expected a JSON list of "
            "{image_id, category_id, bbox, score} records (COCO results format)"
        )
    return gt, coco_gt, preds
