"""Where dual alignment's extra step time goes: (c) against (b), op by op.

    python scripts/profile_step.py --device cuda --out results/speed/profile
    python scripts/profile_step.py --quick            # CPU-sized, to check it runs

Same setting and batch as the speed benchmark (:mod:`dualalign.benchmark.bench`: paper
R-101-FPN, 1200 px, 4 + 4 images, every unlabelled proposal pseudo-labelled). It

1. times (b0) (unlabelled half through the backbone only), (b) and (c) with
   ``DUALALIGN.PSEUDO.PROPOSALS_PER_IMAGE`` = 512 (paper), 256 and 128, in one process: the cost
   of the unlabelled rows in the box head against the rest;
2. profiles a few steps of (b) and of (c) with ``torch.profiler`` and writes the ops whose self
   time grows most from (b) to (c), on the device and on the host (``profile.md``).
"""

import argparse
import json
import os
from collections import defaultdict

import torch

from ..engine.trainer import Trainer
from ..utils.atomic import atomic_write_json, atomic_write_text
from ..utils.paths import repo_root
from . import speed
from .bench import parse_args as bench_parse_args
from .settings import cfg_for, machine_name, setting

__all__ = ["diff_table", "main", "op_times"]

PROPOSAL_COUNTS = (512, 256, 128)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=0)
    p.add_argument("--warmup", type=int, default=-1)
    p.add_argument("--profile-steps", type=int, default=3)
    p.add_argument("--out", default=os.path.join(repo_root(), "results", "speed", "profile"))
    return p.parse_args(argv)


def build(s, method, proposals_per_image=None):
    cfg = cfg_for(s, method)
    if proposals_per_image is not None:
        cfg.defrost()
        cfg.DUALALIGN.PSEUDO.PROPOSALS_PER_IMAGE = proposals_per_image
        cfg.freeze()
    torch.manual_seed(0)
    return Trainer.build_model(cfg)


def op_times(model, labeled, unlabeled, s, steps, forward=None):
    """Self device and host microseconds per op name, summed over ``steps`` profiled steps."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if s["device"] == "cuda":
        activities.append(ProfilerActivity.CUDA)
    kw = dict(device=s["device"], amp=False, forward=forward)
    speed.time_training_steps(model, labeled, unlabeled, warmup=1, repeats=1, **kw)
    with profile(activities=activities) as prof:
        speed.time_training_steps(model, labeled, unlabeled, warmup=0, repeats=steps, **kw)
    out = defaultdict(lambda: [0.0, 0.0, 0])
    for e in prof.key_averages():
        dev = getattr(e, "self_device_time_total", None)
        if dev is None:
            dev = getattr(e, "self_cuda_time_total", 0.0)
        out[e.key][0] += dev / steps
        out[e.key][1] += e.self_cpu_time_total / steps
        out[e.key][2] += e.count // steps
    return out


def diff_table(b, c, column, top=20):
    keys = set(b) | set(c)
    zero = [0.0, 0.0, 0]
    rows = sorted(keys, key=lambda k: c.get(k, zero)[column] - b.get(k, zero)[column], reverse=True)
    what = "device" if column == 0 else "host"
    lines = [
        f"| op | (b) self {what} ms | (c) self {what} ms | +ms | calls (b) | calls (c) |",
        "|---|---|---|---|---|---|",
    ]
    for k in rows[:top]:
        vb, vc = b.get(k, zero), c.get(k, zero)
        lines.append(
            f"| `{k}` | {vb[column] / 1e3:.2f} | {vc[column] / 1e3:.2f} | "
            f"{(vc[column] - vb[column]) / 1e3:+.2f} | {vb[2]} | {vc[2]} |"
        )
    total_b = sum(v[column] for v in b.values()) / 1e3
    total_c = sum(v[column] for v in c.values()) / 1e3
    # Device rows list both an op and the kernels it launched: the sum counts kernels twice.
    label = "sum of all rows (ops and their kernels both counted)" if column == 0 else "all ops"
    lines.append(f"| **{label}** | {total_b:.1f} | {total_c:.1f} | {total_c - total_b:+.1f} | | |")
    return lines


def main(argv=None):
    args = parse_args(argv)
    bargs = ["--device", args.device] + (["--quick"] if args.quick else [])
    bargs += ["--repeats", str(args.repeats)] if args.repeats else []
    bargs += ["--warmup", str(args.warmup)] if args.warmup >= 0 else []
    s = setting(bench_parse_args(bargs))
    labeled = speed.synthetic_batch(s["n_l"], s["size"], True, 1, s["device"])
    unlabeled = speed.synthetic_batch(s["n_u"], s["size"], False, 2, s["device"])
    timing_kw = dict(device=s["device"], amp=False, warmup=s["warmup"], repeats=s["repeats"])

    times = {}
    model_b = build(s, "same_images")
    times["b0_backbone_only"] = speed.time_training_steps(model_b, labeled, unlabeled, **timing_kw)
    times["b"] = speed.time_training_steps(
        model_b, labeled, unlabeled, forward=speed.forward_same_images, **timing_kw
    )
    for k in PROPOSAL_COUNTS:
        model = build(s, "dualalign", k)
        times[f"c_k{k}"] = speed.time_training_steps(model, labeled, unlabeled, **timing_kw)
        del model
    if s["device"] == "cuda":  # the same pair with mixed precision
        times["b_amp"] = speed.time_training_steps(
            model_b,
            labeled,
            unlabeled,
            forward=speed.forward_same_images,
            **{**timing_kw, "amp": True},
        )
        model = build(s, "dualalign")
        times["c_k512_amp"] = speed.time_training_steps(
            model, labeled, unlabeled, **{**timing_kw, "amp": True}
        )
        del model
    base = times["b"]["s_per_step"]
    for name, t in times.items():
        print(f"{name}: {t['s_per_step']:.4f} s/step, ratio to (b) {t['s_per_step'] / base:.3f}")

    prof_b = op_times(model_b, labeled, unlabeled, s, args.profile_steps, speed.forward_same_images)
    del model_b
    model_c = build(s, "dualalign")
    prof_c = op_times(model_c, labeled, unlabeled, s, args.profile_steps)

    os.makedirs(args.out, exist_ok=True)
    ratios = {name: t["s_per_step"] / base for name, t in times.items()}
    if "b_amp" in times:
        ratios["c_k512_amp_vs_b_amp"] = (
            times["c_k512_amp"]["s_per_step"] / times["b_amp"]["s_per_step"]
        )
    lines = [
        f"# Profile of (c) dual alignment against (b), {machine_name(s)}",
        "",
        f"Setting: {s['config_dir']}, {s['size']} px, {s['n_l']} + {s['n_u']} images, "
        f"{s['device']}, fp32; every unlabelled proposal pseudo-labelled (worst case).",
        "",
        "| run | s/step | ratio to (b) |",
        "|---|---|---|",
    ]
    lines += [f"| {n} | {t['s_per_step']:.4f} | {ratios[n]:.3f} |" for n, t in times.items()]
    lines += ["", f"Per step, mean of {args.profile_steps} profiled steps.", ""]
    if s["device"] == "cuda":
        lines += ["## Device time"] + diff_table(prof_b, prof_c, 0) + [""]
    lines += ["## Host time"] + diff_table(prof_b, prof_c, 1) + [""]
    atomic_write_text(os.path.join(args.out, "profile.md"), "\n".join(lines))
    atomic_write_json(
        os.path.join(args.out, "profile.json"),
        {"times": times, "ratios": ratios, "setting": str(s)},
    )
    print(json.dumps({"ratios": ratios}))

