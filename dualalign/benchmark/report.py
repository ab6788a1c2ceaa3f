"""Tables shaped like the paper's Tables 1 and 2, and the mAP-vs-fraction plot."""

import json
import logging
import os
from collections import defaultdict

import numpy as np

from ..utils.atomic import atomic_open, atomic_write_text

METHOD_LABELS = {
    "supervised": "Faster R-CNN (supervised)",
    "csd": "CSD",
    "mean_teacher": "Mean Teacher",
    "dualalign_noproto": "Ours (w/o prototype alignment)",
    "dualalign_noproposal": "Ours (w/o proposal alignment)",
    "dualalign": "Ours",
}


def mean_std(values):
    """``"m ± s"`` over seeds (s is the sample std; "m" alone for one seed)."""
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"


def _group(runs):
    groups = defaultdict(list)
    for r in runs:
        groups[(r["labeled_fraction"], r["method"])].append(r)
    return groups


def _row(label, group, classes):
    cells = [mean_std([r["per_class"].get(c) for r in group]) for c in classes]
    return f"| {label} | " + " | ".join(cells + [mean_std([r["mAP"] for r in group])]) + " |"


def summary_markdown(runs):
    """mAP (mean ± std over seeds) with one row per method and one column per fraction."""
    groups = _group(runs)
    fractions = sorted({r["labeled_fraction"] for r in runs})
    lines = [
        "| method | " + " | ".join(f"{f:.0%}" for f in fractions) + " |",
        "|" + "---|" * (len(fractions) + 1),
    ]
    for m, name in METHOD_LABELS.items():
        if any(r["method"] == m for r in runs):
            cells = [
                mean_std([r["mAP"] for r in groups[(f, m)]]) if (f, m) in groups else "not run"
                for f in fractions
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def tables_markdown(runs, label):
    """Markdown of Table 1 (per fraction) and Table 2 (all methods, largest complete fraction)."""
    if not runs:
        return f"# {label}\n\nNo finished runs yet.\n"
    classes = list(runs[0]["per_class"])
    groups = _group(runs)
    fractions = sorted({r["labeled_fraction"] for r in runs})
    methods = [m for m in METHOD_LABELS if any(r["method"] == m for r in runs)]
    seeds = sorted({r["seed"] for r in runs})
    iters = sorted({r["iterations"] for r in runs})
    header = "| labelled | method | " + " | ".join(classes) + " | Avg. |"
    rule = "|" + "---|" * (len(classes) + 3)
    lines = [
        f"# {label}: AP averaged over IoU 0.10:0.70 (%), mean ± std over seeds",
        "",
        f"Runs: {len(runs)}; seeds {seeds}; iterations {iters}; dates "
        f"{sorted({r['date'] for r in runs})}; machine(s) {sorted({r['machine'] for r in runs})}.",
        "",
        "## Summary: mAP by method and labelled fraction",
        "",
        summary_markdown(runs),
        "## Table 1: supervised vs ours at each labelled fraction",
        "",
        header,
        rule,
    ]
    for f in fractions:
        for m in ("supervised", "dualalign"):
            cells = (
                _row(f"{f:.0%} | {METHOD_LABELS[m]}", groups[(f, m)], classes)
                if (f, m) in groups
                else f"| {f:.0%} | {METHOD_LABELS[m]} | "
                + " | ".join(["not run"] * (len(classes) + 1))
                + " |"
            )
            lines.append(cells)
    # The paper's Table 2 is at 100 %; with a partial grid, the largest fraction every method
    # finished (else the largest one).
    complete = [f for f in fractions if all((f, m) in groups for m in methods)]
    top = complete[-1] if complete else fractions[-1]
    lines += [
        "",
        f"## Table 2: all methods at {top:.0%} labelled",
        "",
    ]
    if top != 1.0:
        lines += ["(The paper's Table 2 is at 100 %: those runs are not all finished here.)", ""]
    lines += [
        "| method | " + " | ".join(classes) + " | Avg. |",
        "|" + "---|" * (len(classes) + 2),
    ]
    for m in methods:
        if (top, m) in groups:
            lines.append(_row(METHOD_LABELS[m], groups[(top, m)], classes))
    others = [f for f in fractions if f != top]
    for f in others:
        if sum((f, m) in groups for m in methods) > 2:
            lines += [
                "",
                f"### All methods at {f:.0%} labelled",
                "",
                "| method | " + " | ".join(classes) + " | Avg. |",
                "|" + "---|" * (len(classes) + 2),
            ]
            lines += [
                _row(METHOD_LABELS[m], groups[(f, m)], classes) for m in methods if (f, m) in groups
            ]
    return "\n".join(lines) + "\n"


def plot_map_vs_fraction(runs, path, label):
    """One line per method: mean mAP over seeds against the labelled fraction, std as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _group(runs)
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in METHOD_LABELS:
        pts = sorted((f, [r["mAP"] for r in g]) for (f, mm), g in groups.items() if mm == m)
        if pts:
            xs = [p[0] for p in pts]
            ax.errorbar(
                xs,
                [np.mean(p[1]) for p in pts],
                yerr=[np.std(p[1]) for p in pts],
                marker="o",
                capsize=3,
                label=METHOD_LABELS[m],
            )
    ax.set_xlabel("labelled fraction")
    ax.set_ylabel("mAP[.1:.7] (%)")
    ax.set_title(label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def write_report(out_dir, runs, label):
    """Write results.json, tables.md and map_vs_fraction.png under ``out_dir`` (atomically)."""
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_text(os.path.join(out_dir, "results.json"), json.dumps({"runs": runs}, indent=1))
    atomic_write_text(os.path.join(out_dir, "tables.md"), tables_markdown(runs, label))
    if not runs:
        return
    try:
        plot_map_vs_fraction(runs, os.path.join(out_dir, "map_vs_fraction.png"), label)
    except ImportError as e:  # a GPU box without matplotlib: rebuild later with --report-only
        logging.getLogger(__name__).warning(
            "%s: map_vs_fraction.png not written (%s); rerun with --report-only where "
            "matplotlib is installed",
            out_dir,
            e,
        )
