#!/usr/bin/env python
"""Speed and memory of dual alignment against its baselines, measured as ratios in one run.

    python scripts/bench.py --quick                 # CPU-sized, a few minutes
    python scripts/bench.py --device cuda           # paper setting: R-101-FPN, 1200 px, 4+4
    python scripts/bench.py --device cuda --amp     # the same with mixed precision

Training step time (median after warm-up) and peak memory on one fixed batch, for
(a) supervised on the labelled images, (b) supervised fed the same labelled + unlabelled images
(the unlabelled half forwarded through backbone, RPN and box head, no loss on it; also (b0), the
unlabelled half through the backbone only), (c) dual alignment, (d) CSD and (e) Mean Teacher;
inference
throughput of a dual-align checkpoint vs the plain detector with the same weights (patches and
tiles of a large image); evaluator time on 10k patches; paired-loader throughput with the real
augmentations vs what a training step consumes. Writes ``benchmarks/results/<machine>.json``
and ``.md``; the last stdout line is one JSON object with the headline ratios.
"""

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dualalign.benchmark import speed  # noqa: E402
from dualalign.engine.checkpoint import AtomicCheckpointer  # noqa: E402
from dualalign.engine.setup import build_cfg  # noqa: E402
from dualalign.engine.trainer import Trainer  # noqa: E402
from dualalign.utils.atomic import atomic_write_text  # noqa: E402

# key: (config, paired, forward override)
STEP_KEYS = {
    "a_supervised_labeled": ("supervised", False, None),
    "b0_backbone_only_same_images": ("same_images", True, None),
    "b_supervised_same_images": ("same_images", True, speed.forward_same_images),
    "c_dualalign": ("dualalign", True, None),
    "d_csd": ("csd", True, None),
    "e_mean_teacher": ("mean_teacher", True, None),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CPU-sized R-18, 256 px, 2 + 2 images")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", action="store_true", help="also time (b), (c), (e) with AMP (CUDA)")
    p.add_argument("--repeats", type=int, default=0)
    p.add_argument("--warmup", type=int, default=-1)
    p.add_argument("--eval-images", type=int, default=10000, help="patches for the evaluator")
    p.add_argument("--large", type=int, default=0, help="side of the tiled large image (px)")
    p.add_argument("--machine", default="", help="name of the results file (default: detected)")
    p.add_argument("--output", default=os.path.join(REPO_ROOT, "benchmarks", "results"))
    return p.parse_args(argv)


# The two sizes bench.py runs at. warmup / repeats / large are defaults that the flags override.
SETTINGS = {
    "quick": dict(
        config_dir="configs/synthetic",
        suffix="_R18_cpu",
        size=256,
        n_l=2,
        n_u=2,
        warmup=2,
        repeats=5,
        infer_images=8,
        infer_batch=2,
        large=1024,
        opts=[],
    ),
    "paper": dict(
        config_dir="configs/paper",
        suffix="_R101_FPN",
        size=1200,
        n_l=4,
        n_u=4,
        warmup=3,
        repeats=10,
        infer_images=32,
        infer_batch=8,
        large=4800,
        # Random init as the reference numbers (environment.md): BN, nothing frozen.
        opts=["MODEL.WEIGHTS", "", "MODEL.RESNETS.NORM", "BN", "MODEL.BACKBONE.FREEZE_AT", "0"],
    ),
}


def setting(args):
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    s = dict(SETTINGS["quick" if args.quick else "paper"])
    s.update(
        device=device,
        warmup=args.warmup if args.warmup >= 0 else s["warmup"],
        repeats=args.repeats or s["repeats"],
        large=args.large or s["large"],
        eval_images=args.eval_images,
        opts=["MODEL.DEVICE", device] + s["opts"],
    )
    return s


def cfg_for(s, method):
    name = {"same_images": "dualalign"}.get(method, method)
    opts = list(s["opts"]) + [
        "DATASETS.TRAIN",
        "()",
        "DATASETS.TEST",
        "()",
        "DUALALIGN.DATASETS.COCO",
        "[]",
        "DUALALIGN.DATASETS.UNLABELED",
        "[]",
        "DUALALIGN.DATASETS.TRAIN_UNLABELED",
        "()",
        # Worst case for dual alignment: every unlabelled proposal is
        # pseudo-labelled (a random-init model scores none above 0.5).
        "DUALALIGN.PSEUDO.SCORE_THRESH",
        "0.0",
    ]
    if method == "same_images":
        opts += [
            "DUALALIGN.LOSS.PML_LABELED",
            "False",
            "DUALALIGN.LOSS.PML_UNLABELED",
            "False",
            "DUALALIGN.LOSS.PMB_LABELED",
            "False",
            "DUALALIGN.LOSS.PMB_UNLABELED",
            "False",
        ]
    path = os.path.join(REPO_ROOT, s["config_dir"], f"{name}{s['suffix']}.yaml")
    return build_cfg(path, opts, device=s["device"])


def measure_steps(s, labeled, unlabeled, amp_runs):
    out = {}
    for key, (method, paired, forward) in STEP_KEYS.items():
        for amp in [False] + ([True] if key[0] in amp_runs else []):
            torch.manual_seed(0)
            model = Trainer.build_model(cfg_for(s, method))
            r = speed.time_training_steps(
                model,
                labeled,
                unlabeled if paired else None,
                device=s["device"],
                amp=amp,
                warmup=s["warmup"],
                repeats=s["repeats"],
                forward=forward,
            )
            out[key + ("_amp" if amp else "")] = r
            print(
                f"{key}{' (AMP)' if amp else ''}: {r['s_per_step']:.4f} s/step, "
                f"peak {r['peak_gib'] if r['peak_gib'] is None else round(r['peak_gib'], 2)} GiB",
                flush=True,
            )
            del model
            if s["device"] == "cuda":
                torch.cuda.empty_cache()
    return out


def measure_inference(s, amp):
    torch.manual_seed(0)
    dual = Trainer.build_model(cfg_for(s, "dualalign"))
    plain = Trainer.build_model(cfg_for(s, "supervised"))
    with tempfile.TemporaryDirectory() as tmp:
        AtomicCheckpointer(dual, save_dir=tmp).save("dual")
        AtomicCheckpointer(plain, save_dir=tmp).load(os.path.join(tmp, "dual.pth"))
    patches = speed.synthetic_batch(s["infer_images"], s["size"], False, 5, s["device"])
    from dualalign.wsi import make_synthetic_slide, tile_grid

    big = make_synthetic_slide(
        np.random.default_rng(0), s["large"], s["large"], [(0, 0, s["large"], s["large"])]
    )
    tiles = [
        {
            "image": torch.as_tensor(
                np.ascontiguousarray(big[y0:y1, x0:x1, ::-1].transpose(2, 0, 1))
            ),
            "height": y1 - y0,
            "width": x1 - x0,
        }
        for x0, y0, x1, y1 in tile_grid(s["large"], s["large"], s["size"], s["size"] // 8)
    ]
    res = {}
    for name, inputs in (("patches", patches), ("tiles", tiles)):
        kw = dict(
            device=s["device"],
            batch_size=s["infer_batch"],
            warmup=1,
            repeats=3 if s["device"] == "cuda" else 2,
            amp=amp,
        )
        res[f"{name}_dualalign_img_s"] = speed.images_per_second(dual, inputs, **kw)
        res[f"{name}_plain_img_s"] = speed.images_per_second(plain, inputs, **kw)
        print(
            f"inference on {name}: dualalign {res[f'{name}_dualalign_img_s']:.1f} img/s, "
            f"plain {res[f'{name}_plain_img_s']:.1f} img/s",
            flush=True,
        )
    return res


def measure_evaluator(s):
    from dualalign.evaluation.range_ap import coco_from_dict, evaluate_coco_range

    gt, preds = speed.fake_predictions(s["eval_images"], 4, 4, s["size"], seed=0)
    coco = coco_from_dict(gt)
    secs = speed.time_call(lambda: evaluate_coco_range(coco, preds, [0.1 * k for k in range(1, 8)]))
    print(f"evaluator: {secs:.1f} s for {s['eval_images']} patches", flush=True)
    return {"evaluator_s": secs, "evaluator_images": s["eval_images"]}


def measure_loader(s, consumed_img_s):
    from detectron2.data import DatasetCatalog

    from dualalign.data.build import build_paired_loader
    from dualalign.data.datasets import register_coco, register_unlabeled
    from dualalign.data.synthetic import generate_dataset

    root = os.path.join(REPO_ROOT, "datasets", f"bench_synthetic_{s['size']}")
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


def machine_name(s):
    if s["device"] == "cuda":
        return torch.cuda.get_device_name(0).lower().replace(" ", "-")
    return f"cpu-{os.cpu_count()}core"


def markdown(result):
    st = result["steps"]
    lines = [
        f"# Speed and memory, {result['machine']} ({result['date']})",
        "",
        f"Setting: {result['setting']}",
        "",
        "| step | s/step | peak GiB | ratio to (b) |",
        "|---|---|---|---|",
    ]
    b = st["b_supervised_same_images"]["s_per_step"]
    for k, v in st.items():
        peak = "n/a" if v["peak_gib"] is None else f"{v['peak_gib']:.2f}"
        lines.append(f"| {k} | {v['s_per_step']:.4f} | {peak} | {v['s_per_step'] / b:.3f} |")
    lines += ["", "| measurement | value |", "|---|---|"]
    lines += [
        f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
        for k, v in {**result["inference"], **result["other"]}.items()
    ]
    lines += ["", "Headline: " + json.dumps(result["headline"])]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    s = setting(args)
    torch.set_num_threads(os.cpu_count() or 1)
    labeled = speed.synthetic_batch(s["n_l"], s["size"], True, 1, s["device"])
    unlabeled = speed.synthetic_batch(s["n_u"], s["size"], False, 2, s["device"])
    amp_runs = {"b", "c", "e"} if args.amp and s["device"] == "cuda" else set()
    steps = measure_steps(s, labeled, unlabeled, amp_runs)
    inference = measure_inference(s, amp=False)
    consumed = (s["n_l"] + s["n_u"]) / steps["c_dualalign"]["s_per_step"]
    other = {**measure_evaluator(s), **measure_loader(s, consumed)}
    sec = {k: v["s_per_step"] for k, v in steps.items()}
    headline = {
        "step_ratio_vs_supervised_same_images": sec["c_dualalign"]
        / sec["b_supervised_same_images"],
        "step_ratio_vs_mean_teacher": sec["c_dualalign"] / sec["e_mean_teacher"],
        "step_ratio_vs_backbone_only_same_images": sec["c_dualalign"]
        / sec["b0_backbone_only_same_images"],
        "infer_ratio_vs_plain": inference["patches_dualalign_img_s"]
        / inference["patches_plain_img_s"],
        "infer_ratio_vs_plain_tiles": inference["tiles_dualalign_img_s"]
        / inference["tiles_plain_img_s"],
        "loader_ratio": other["loader_ratio"],
    }
    if "c_dualalign_amp" in sec:
        headline["step_ratio_vs_supervised_same_images_amp"] = (
            sec["c_dualalign_amp"] / sec["b_supervised_same_images_amp"]
        )
    name = args.machine or machine_name(s)
    result = {
        "machine": name,
        "host": platform.node(),
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "setting": f"{s['config_dir']}/*{s['suffix']}.yaml, {s['size']} px, {s['n_l']} labelled + "
        f"{s['n_u']} unlabelled images, {s['device']}, warm-up {s['warmup']}, "
        f"median of {s['repeats']}",
        "steps": steps,
        "inference": inference,
        "other": other,
        "headline": headline,
    }
    os.makedirs(args.output, exist_ok=True)
    stem = os.path.join(args.output, name + ("-quick" if args.quick else ""))
    atomic_write_text(stem + ".json", json.dumps(result, indent=1))
    atomic_write_text(stem + ".md", markdown(result))
    print(json.dumps(headline))


if __name__ == "__main__":
    main()
