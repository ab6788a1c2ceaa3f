"""The speed benchmark (``scripts/bench.py``): every measurement, the report and the command line.

Training step time and peak memory on one fixed batch, for (a) supervised on the labelled
images, (b) supervised fed the same labelled + unlabelled images (the unlabelled half forwarded
through backbone, RPN and box head, no loss on it; also (b0), the unlabelled half through the
backbone only), (c) dual alignment, (d) CSD, (e) Mean Teacher, (f) self-training and (g) dual
alignment on the teacher pipeline (pseudo-boxes, strong view); inference throughput of a
dual-align checkpoint vs the plain detector with the same weights (patches and tiles of a large
image); evaluator time on 10k patches; paired-loader throughput with the real augmentations vs
what a training step consumes.

Step times and inference passes are interleaved (:mod:`dualalign.benchmark.interleave`): each
headline ratio is the median of per-round ratios, and its spread is reported beside it.
"""

import argparse
import datetime
import os
import platform
import statistics
import tempfile

import numpy as np
import torch
from detectron2.utils.events import EventStorage

from ..engine.checkpoint import AtomicCheckpointer
from ..engine.trainer import Trainer
from ..utils.atomic import atomic_write_json, atomic_write_text
from ..utils.paths import repo_root
from . import speed
from .interleave import interleaved_times, round_medians
from .settings import STEP_KEYS, SWITCH_STEP_KEYS, cfg_for, machine_name, setting
from .speed_report import headline_ratios, markdown

__all__ = ["main", "parse_args"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Speed and memory of dual alignment vs its baselines")
    p.add_argument("--quick", action="store_true", help="CPU-sized R-18, 256 px, 2 + 2 images")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", action="store_true", help="also time (b), (c), (e) with AMP (CUDA)")
    p.add_argument("--repeats", type=int, default=0, help="timed steps per method and round")
    p.add_argument("--rounds", type=int, default=0, help="interleaved rounds (ratio per round)")
    p.add_argument("--warmup", type=int, default=-1)
    p.add_argument("--eval-images", type=int, default=10000, help="patches for the evaluator")
    p.add_argument("--large", type=int, default=0, help="side of the tiled large image (px)")
    p.add_argument("--machine", default="", help="name of the results file (default: detected)")
    p.add_argument("--output", default=os.path.join(repo_root(), "results", "speed"))
    p.add_argument(
        "--steps",
        nargs="+",
        choices=list(STEP_KEYS) + list(SWITCH_STEP_KEYS),
        help="time these training steps only (no inference, evaluator or loader measurement); "
        "results go to <machine>[-quick]-steps.{json,md}. h_switch_*: one teacher-pipeline "
        "switch on the paper's method (named here only)",
    )
    return p.parse_args(argv)


def _cuda_allocated(device) -> int:
    return torch.cuda.memory_allocated() if torch.device(device).type == "cuda" else 0


def measure_steps(s, labeled, unlabeled, amp_runs, keys=None):
    """Interleaved step times of every method of ``STEP_KEYS`` (and its AMP variant when asked).

    Every model is built and warmed up first, one at a time; its peak CUDA memory is that of its
    warm-up, above what was allocated before it was built. Then ``s["rounds"]`` rounds of
    ``s["repeats"]`` interleaved steps each are timed.

    Returns:
        ``{key: {"s_per_step", "s_per_round", "peak_gib"}}`` of ``keys`` (of ``STEP_KEYS`` and
        ``SWITCH_STEP_KEYS``; default: every step of ``STEP_KEYS``): the median over every timed
        step,
        the median of each round, and the peak (``None`` on the CPU).
    """
    is_cuda = torch.device(s["device"]).type == "cuda"
    steps, peaks = {}, {}
    with EventStorage():
        for key, (method, paired, forward) in {**STEP_KEYS, **SWITCH_STEP_KEYS}.items():
            if key not in (keys or STEP_KEYS):
                continue
            for amp in [False] + ([True] if key[0] in amp_runs else []):
                name = key + ("_amp" if amp else "")
                torch.manual_seed(0)
                before = _cuda_allocated(s["device"])
                if is_cuda:
                    torch.cuda.reset_peak_memory_stats()
                model = Trainer.build_model(cfg_for(s, method))
                step = speed.TrainingStep(
                    model,
                    labeled,
                    unlabeled if paired else None,
                    device=s["device"],
                    amp=amp,
                    forward=forward,
                )
                for _ in range(max(s["warmup"], 1 if is_cuda else 0)):
                    step()
                peak = torch.cuda.max_memory_allocated() - before if is_cuda else None
                peaks[name] = None if peak is None else peak / 2**30
                steps[name] = step
        times = interleaved_times(steps, s["rounds"], s["repeats"])
    per_round = round_medians(times)
    out = {}
    for name, rounds in times.items():
        flat = [t for r in rounds for t in r]
        out[name] = {
            "s_per_step": statistics.median(flat),
            "s_per_round": per_round[name],
            "peak_gib": peaks[name],
        }
        peak = "n/a" if peaks[name] is None else f"{peaks[name]:.2f} GiB"
        print(f"{name}: {out[name]['s_per_step']:.4f} s/step, peak {peak}", flush=True)
    return out


def _tiles_of_large_image(s):
    from ..wsi import make_synthetic_slide, tile_grid

    side = s["large"]
    big = make_synthetic_slide(np.random.default_rng(0), side, side, [(0, 0, side, side)])
    return [
        {
            "image": torch.as_tensor(
                np.ascontiguousarray(big[y0:y1, x0:x1, ::-1].transpose(2, 0, 1))
            ),
            "height": y1 - y0,
            "width": x1 - x0,
        }
        for x0, y0, x1, y1 in tile_grid(side, side, s["size"], s["size"] // 8)
    ]


def measure_inference(s, amp):
    """Interleaved inference passes of dual alignment and of the plain detector, same weights.

    Returns:
        ``{"<inputs>_<model>_img_s": images per second}`` for inputs "patches" and "tiles" and
        models "dualalign" and "plain", and ``"<inputs>_s_per_round"`` (per-round seconds).
    """
    torch.manual_seed(0)
    dual = Trainer.build_model(cfg_for(s, "dualalign"))
    plain = Trainer.build_model(cfg_for(s, "supervised"))
    with tempfile.TemporaryDirectory() as tmp:
        AtomicCheckpointer(dual, save_dir=tmp).save("dual")
        AtomicCheckpointer(plain, save_dir=tmp).load(os.path.join(tmp, "dual.pth"))
    inputs = {
        "patches": speed.synthetic_batch(s["infer_images"], s["size"], False, 5, s["device"]),
        "tiles": _tiles_of_large_image(s),
    }
    calls = {
        f"{what}_{name}": speed.InferencePass(
            model, batch, device=s["device"], batch_size=s["infer_batch"], amp=amp
        )
        for what, batch in inputs.items()
        for name, model in (("dualalign", dual), ("plain", plain))
    }
    for call in calls.values():  # warm-up
        call()
    repeats = 3 if torch.device(s["device"]).type == "cuda" else 2
    per_round = round_medians(interleaved_times(calls, s["rounds"], repeats))
    res = {}
    for what, batch in inputs.items():
        for name in ("dualalign", "plain"):
            res[f"{what}_{name}_img_s"] = len(batch) / statistics.median(
                per_round[f"{what}_{name}"]
            )
        res[f"{what}_s_per_round"] = {n: per_round[f"{what}_{n}"] for n in ("dualalign", "plain")}
        print(
            f"inference on {what}: dualalign {res[f'{what}_dualalign_img_s']:.1f} img/s, "
            f"plain {res[f'{what}_plain_img_s']:.1f} img/s",
            flush=True,
        )
    return res


def measure_evaluator(s):
    from ..evaluation.range_ap import coco_from_dict, evaluate_coco_range

    gt, preds = speed.fake_predictions(s["eval_images"], 4, 4, s["size"], seed=0)
    coco = coco_from_dict(gt)
    secs = speed.time_call(lambda: evaluate_coco_range(coco, preds, [0.1 * k for k in range(1, 8)]))
    print(f"evaluator: {secs:.1f} s for {s['eval_images']} patches", flush=True)
    return {"evaluator_s": secs, "evaluator_images": s["eval_images"]}


def measure_loader(s, consumed_img_s):
    from detectron2.data import DatasetCatalog

    from ..data.build import build_paired_loader
    from ..data.datasets import register_coco, register_unlabeled
    from ..data.synthetic import generate_dataset

    root = os.path.join(repo_root(), "datasets", f"bench_synthetic_{s['size']}")
    paths = generate_dataset(
        root, seed=0, image_size=s["size"], num_labeled=32, num_unlabeled=32, num_val=2, num_test=2
    )
    register_coco("bench_lab", paths["labeled"], paths["image_root"])
    register_unlabeled("bench_unl", paths["unlabeled"], paths["image_root"])
    cfg = cfg_for(s, "dualalign").clone()
    cfg.defrost()
    cfg.SOLVER.IMS_PER_BATCH = s["n_l"]
    loader = build_paired_loader(
        cfg, DatasetCatalog.get("bench_lab"), DatasetCatalog.get("bench_unl")
    )
    rate = speed.loader_images_per_second(loader, num_batches=20)
    print(
        f"paired loader ({cfg.DATALOADER.NUM_WORKERS} workers): {rate:.1f} img/s; training "
        f"consumes {consumed_img_s:.1f} img/s",
        flush=True,
    )
    return {
        "loader_img_s": rate,
        "loader_workers": cfg.DATALOADER.NUM_WORKERS,
        "train_consumes_img_s": consumed_img_s,
        "loader_ratio": rate / consumed_img_s,
    }


def main(argv=None):
    """Run every measurement at the setting of ``argv``; write ``<output>/<machine>[-quick]``
    ``.json`` and ``.md``; print the headline ratios as the last stdout line (JSON)."""
    import json

    args = parse_args(argv)
    s = setting(args)
    torch.set_num_threads(os.cpu_count() or 1)
    labeled = speed.synthetic_batch(s["n_l"], s["size"], True, 1, s["device"])
    unlabeled = speed.synthetic_batch(s["n_u"], s["size"], False, 2, s["device"])
    amp_runs = {"b", "c", "e"} if args.amp and s["device"] == "cuda" else set()
    steps = measure_steps(s, labeled, unlabeled, amp_runs, keys=args.steps)
    inference, other = {}, {}
    if not args.steps:
        inference = measure_inference(s, amp=False)
        consumed = (s["n_l"] + s["n_u"]) / steps["c_dualalign"]["s_per_step"]
        other = {**measure_evaluator(s), **measure_loader(s, consumed)}
    spread = headline_ratios(steps, inference)
    headline = {k: v["median"] for k, v in spread.items()}
    if other:
        headline["loader_ratio"] = other["loader_ratio"]
    name = args.machine or machine_name(s)
    result = {
        "machine": name,
        "host": platform.node(),
        "cpu": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "setting": f"{s['config_dir']}/*{s['suffix']}.yaml, {s['size']} px, {s['n_l']} labelled + "
        f"{s['n_u']} unlabelled images, {s['device']}, warm-up {s['warmup']}, "
        f"{s['rounds']} interleaved rounds of {s['repeats']} steps per method",
        "steps": steps,
        "inference": inference,
        "other": other,
        "headline": headline,
        "headline_spread": spread,
    }
    os.makedirs(args.output, exist_ok=True)
    stem = os.path.join(
        args.output, name + ("-quick" if args.quick else "") + ("-steps" if args.steps else "")
    )
    atomic_write_json(stem + ".json", result)
    atomic_write_text(stem + ".md", markdown(result))
    print(json.dumps(headline))
