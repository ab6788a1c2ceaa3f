"""``scripts/mine_unlabeled.py``: the unlabelled pool, tissue patches a trained detector flags.

``mine_slide`` mines one slide; ``run`` skips slides already mined with the same settings and
rebuilds ``unlabeled.json`` from the per-slide state files. The script's docstring describes
the outputs and the resuming.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys

from tqdm import tqdm

from ..utils.atomic import atomic_write_json
from ..utils.visualize import class_name
from ..wsi.reader import open_slide
from .cli import add_common_arguments, cli_main, report_error, setup_predictor
from .inputs import expand_inputs, input_kind
from .outputs import write_png
from .slide_inference import (
    instances_to_arrays,
    iter_tile_predictions,
    select_tiles,
)

STATE_VERSION = 1


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Build the unlabelled pool from slides: the tissue patches a trained "
        "detector flags.",
        epilog="Outputs and resuming: see scripts/mine_unlabeled.py's docstring.",
    )
    add_common_arguments(parser, "--patch-size", overlap=0)
    return parser.parse_args(argv)


def mine_slide(predictor, path, key, args, patch_size, class_names, images_dir):
    """Mine one slide; returns its state (``{"slide", "key", "patches", ...}``).

    The slide's patch folder is emptied first, so patches of an interrupted earlier attempt
    never mix with this one's.
    """
    slide_dir = os.path.join(images_dir, key)
    shutil.rmtree(slide_dir, ignore_errors=True)
    patches = []
    with open_slide(path) as reader:
        level = args.level if input_kind(reader, patch_size) == "slide" else 0
        selection = select_tiles(
            reader, level, patch_size, args.overlap, args.tissue_threshold, args.min_tissue
        )
        downsample = reader.level_downsamples[level]
        predictions = iter_tile_predictions(
            predictor,
            reader,
            level,
            selection,
            args.batch_size,
            progress=not args.no_progress,
            desc=os.path.basename(path),
        )
        for idx, tile, instances in predictions:
            _, scores, classes = instances_to_arrays(instances)
            hits = scores >= args.score_thresh
            if not hits.any():
                continue
            best = int(scores.argmax())
            x, y = (int(v) for v in selection.origins[idx])
            name = f"{key}/{x}_{y}.png"
            write_png(os.path.join(images_dir, name), tile)
            patches.append(
                {
                    "file_name": name,
                    "width": int(tile.shape[1]),
                    "height": int(tile.shape[0]),
                    "slide": os.path.abspath(path),
                    "level": int(level),
                    "x": x,
                    "y": y,
                    "downsample": float(downsample),
                    "top_score": round(float(scores[best]), 5),
                    "top_class": class_name(class_names, int(classes[best])),
                    "num_detections": int(hits.sum()),
                }
            )
    return {
        "version": STATE_VERSION,
        "slide": os.path.abspath(path),
        "key": key,
        "tiles": int(len(selection.tiles)),
        "tiles_run": int(len(selection.selected)),
        "patches": patches,
    }


def run(args, predictor_factory=None) -> int:
    """Mine every input not already finished; returns the exit code."""
    _, predictor, class_names, patch_size = setup_predictor(
        args, args.patch_size, predictor_factory
    )
    images_dir = os.path.join(args.output, "images")
    state_dir = os.path.join(args.output, "state")
    os.makedirs(images_dir, exist_ok=True)
    os.makedirs(state_dir, exist_ok=True)
    weights = args.weights
    params = {  # a finished slide is skipped only when it was mined with these
        "level": args.level,
        "patch_size": patch_size,
        "overlap": args.overlap,
        "score_thresh": args.score_thresh,
        "min_tissue": args.min_tissue,
        "tissue_threshold": args.tissue_threshold,
        "weights": os.path.abspath(weights) if weights and os.path.exists(weights) else weights,
    }
    files, input_errors = expand_inputs(args.input)
    failed = 0
    for path, reason in input_errors:
        report_error(path, reason)
        failed += 1
    states = _load_states(state_dir)
    skipped = mined = 0
    for path, key in tqdm(
        list(zip(files, _slide_keys(files, states))),
        desc="slides",
        unit="slide",
        disable=args.no_progress,
        dynamic_ncols=True,
    ):
        done = states.get(key)
        if done and done["slide"] == os.path.abspath(path) and done.get("params") == params:
            skipped += 1
            continue
        if done:  # mined with other settings: forget it before touching its patches
            os.remove(os.path.join(state_dir, f"{key}.json"))
            del states[key]
            _write_pool(args.output, states, class_names)
        try:
            state = mine_slide(predictor, path, key, args, patch_size, class_names, images_dir)
        except Exception as e:  # one bad slide must not stop the others
            report_error(path, str(e) if str(e).startswith(path) else f"{type(e).__name__}: {e}")
            shutil.rmtree(os.path.join(images_dir, key), ignore_errors=True)
            failed += 1
            continue
        state["params"] = params
        atomic_write_json(os.path.join(state_dir, f"{key}.json"), state)
        states[key] = state
        mined += 1
        _write_pool(args.output, states, class_names)
    num = _write_pool(args.output, states, class_names)
    print(
        f"{mined} slide(s) mined, {skipped} already done, {failed} failed; "
        f"{num} patches in {os.path.join(args.output, 'unlabeled.json')}",
        file=sys.stderr,
    )
    return 1 if failed else 0


def _load_states(state_dir: str) -> dict:
    """Finished slides: state key -> state, from OUT/state/*.json."""
    states = {}
    for name in sorted(os.listdir(state_dir)):
        if not name.endswith(".json") or name.startswith("."):
            continue
        path = os.path.join(state_dir, name)
        try:
            with open(path) as f:
                state = json.load(f)
            state["slide"], state["patches"]  # noqa: B018 - both keys must be present
        except (OSError, ValueError, KeyError, TypeError) as e:
            report_error(path, f"unreadable state file ({e}); its slide will be mined again")
            continue
        states[name[: -len(".json")]] = state
    return states


def _slide_keys(files, states) -> list:
    """Folder / state name of each slide: its file stem, unless another slide holds it."""
    owner = {key: state["slide"] for key, state in states.items()}
    keys = []
    for path in files:
        slide = os.path.abspath(path)
        key = os.path.splitext(os.path.basename(path))[0] or "slide"
        if owner.setdefault(key, slide) != slide:
            key = f"{key}-{hashlib.sha1(slide.encode()).hexdigest()[:8]}"
            owner[key] = slide
        keys.append(key)
    return keys


def _write_pool(out_dir, states, class_names) -> int:
    """Rewrite OUT/unlabeled.json from the finished slides; returns its number of images."""
    images = []
    for key in sorted(states):
        for patch in sorted(states[key]["patches"], key=lambda p: (p["y"], p["x"])):
            images.append({"id": len(images) + 1, **patch})
    atomic_write_json(
        os.path.join(out_dir, "unlabeled.json"),
        {
            "info": {
                "description": "unlabelled patches mined by scripts/mine_unlabeled.py "
                "(settings of each slide: OUT/state/<slide>.json)",
                "slides": sorted(s["slide"] for s in states.values()),
            },
            "images": images,
            "annotations": [],
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(class_names)],
        },
    )
    return len(images)


def main(argv=None, predictor_factory=None) -> int:
    """Entry point; ``predictor_factory(cfg, args)`` replaces the model (tests only)."""
    return cli_main(parse_args, run, argv, predictor_factory)
