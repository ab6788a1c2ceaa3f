"""Command-line pieces shared by ``scripts/predict.py`` and ``scripts/mine_unlabeled.py``."""

import argparse
import sys

from tqdm import tqdm

from ..engine.checkpoint import WeightsNotFoundError
from ..engine.setup import build_cfg
from .predictor import BatchPredictor, CheckpointMismatchError, resolve_class_names

__all__ = [
    "SetupError",
    "cli_main",
    "add_common_arguments",
    "check_common_arguments",
    "report_error",
    "setup_predictor",
]


class SetupError(Exception):
    """A problem with the run as a whole (config, weights, arguments): exit code 2."""


def add_common_arguments(parser: argparse.ArgumentParser, size_flag: str, overlap: int) -> None:
    """Arguments of both scripts; ``size_flag`` names the tile side (``--tile-size``...)."""
    parser.add_argument("--config-file", required=True, metavar="CFG", help="the model's YAML")
    parser.add_argument(
        "--weights",
        required=True,
        metavar="W.pth",
        help="trained checkpoint (.pth/.pkl); MODEL.WEIGHTS is ignored, since in a training "
        "config it names the ImageNet backbone",
    )
    parser.add_argument(
        "--input",
        required=True,
        nargs="+",
        metavar="PATH",
        help="image files, slide files (.svs .ndpi .mrxs .scn .vms .vmu .bif .tif .tiff) or "
        "folders of them (searched recursively)",
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--score-thresh",
        type=float,
        default=0.5,
        help="keep detections with score >= this (default 0.5)",
    )
    parser.add_argument(
        size_flag,
        type=int,
        default=None,
        metavar="PX",
        help="tile side in pixels of --level (default INPUT.MIN_SIZE_TEST)",
    )
    parser.add_argument(
        "--overlap",
        type=int,
        default=overlap,
        help=f"tile overlap in pixels of --level (default {overlap})",
    )
    parser.add_argument(
        "--level",
        type=int,
        default=0,
        help="pyramid level of multi-level slides to run on (default 0)",
    )
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: MODEL.DEVICE, or the CPU when CUDA is absent",
    )
    parser.add_argument(
        "--min-tissue",
        type=float,
        default=0.05,
        help="skip tiles with a smaller tissue fraction; 0 runs every tile",
    )
    parser.add_argument(
        "--tissue-threshold",
        type=float,
        default=None,
        help="fixed stain-signal threshold (0-255) of the tissue mask; " "default Otsu's",
    )
    parser.add_argument(
        "--classes",
        type=_name_list,
        default=None,
        metavar="A,B,...",
        help="comma-separated class names in the model's order (default: the "
        "config's DATASETS.TEST categories, else class_<i>)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, default=[], help="config overrides as KEY VALUE pairs"
    )


def _name_list(text: str) -> list:
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"empty class name in {text!r}")
    return names


def check_common_arguments(args: argparse.Namespace, tile_size: int) -> None:
    """Raise SetupError for values no input can run with."""
    if tile_size < 32:
        raise SetupError(f"tile size must be >= 32 pixels, got {tile_size}")
    if not 0 <= args.overlap < tile_size:
        raise SetupError(
            f"--overlap must be >= 0 and smaller than the tile size ({tile_size}), "
            f"got {args.overlap}"
        )
    if args.batch_size < 1:
        raise SetupError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.level < 0:
        raise SetupError(f"--level must be >= 0, got {args.level}")
    if not 0 <= args.score_thresh <= 1:
        raise SetupError(f"--score-thresh must be in [0, 1], got {args.score_thresh}")


def setup_predictor(args: argparse.Namespace, tile_size=None, predictor_factory=None):
    """Config, predictor, class names and tile size for a script run.

    The model's own score threshold (``MODEL.ROI_HEADS.SCORE_THRESH_TEST``) is set to
    ``--score-thresh``: nothing the user asked for is cut early, and the boxes below it, which
    would be dropped anyway, never reach the tile merge.

    Args:
        args: parsed arguments (``add_common_arguments``).
        tile_size (int or None): the tile-size flag's value; None = ``INPUT.MIN_SIZE_TEST``.
        predictor_factory (callable or None): ``factory(cfg, args) -> predictor`` with a
            ``predict(list of RGB arrays) -> list of Instances`` method (tests inject fakes);
            None builds a ``BatchPredictor``.

    Returns:
        tuple: ``(cfg, predictor, class_names, tile_size)``.

    Raises:
        SetupError: bad config or arguments, missing weights or wrong ``--classes``.
    """
    opts = list(args.opts or [])
    if opts[:1] == ["--"]:
        opts = opts[1:]
    try:
        cfg = build_cfg(args.config_file, opts, device=args.device)
    except Exception as e:  # detectron2 raises many types for a bad YAML or KEY VALUE pair
        raise SetupError(
            f"{args.config_file}: cannot build the config " f"({type(e).__name__}: {e})"
        ) from e
    tile_size = int(tile_size or cfg.INPUT.MIN_SIZE_TEST)
    check_common_arguments(args, tile_size)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = args.score_thresh
    cfg.freeze()
    try:
        class_names = resolve_class_names(cfg, args.classes)
    except ValueError as e:
        raise SetupError(str(e)) from None
    if predictor_factory is not None:
        predictor = predictor_factory(cfg, args)
    else:
        if not args.weights:
            raise SetupError("--weights is empty; give the trained checkpoint (.pth/.pkl)")
        try:
            predictor = BatchPredictor(cfg, args.weights, class_names, args.batch_size)
        except (WeightsNotFoundError, CheckpointMismatchError) as e:
            raise SetupError(f"--weights: {e}") from None
        except Exception as e:  # a corrupt or foreign file: torch.load / pickle errors
            raise SetupError(
                f"--weights {args.weights}: cannot load it "
                f"({type(e).__name__}: {(str(e).splitlines() or [''])[0]})"
            ) from e
    class_names = list(getattr(predictor, "class_names", None) or class_names)
    return cfg, predictor, class_names, tile_size


def report_error(path: str, reason: str) -> None:
    """One ``error: <file>: <reason>`` line on stderr, clear of the progress bars."""
    message = reason if reason.startswith(str(path)) else f"{path}: {reason}"
    tqdm.write(f"error: {message}", file=sys.stderr)


def cli_main(parse_args, run, argv=None, predictor_factory=None) -> int:
    """Shared ``main`` of the scripts: exit 2 with a one-line error when the run cannot start.

    ``predictor_factory(cfg, args)`` replaces the model (tests only).
    """
    args = parse_args(argv)
    try:
        return run(args, predictor_factory)
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
